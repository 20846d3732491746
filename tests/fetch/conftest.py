"""Fixtures for the fetch tests: a Dovecot with TLS and a work directory daemons can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemons import DovecotInstance
from tests.support.fixtures_daemons import DaemonPool, DovecotFactory


@pytest.fixture
def workdir(daemon_pool: DaemonPool) -> Path:
    """A fresh 0755 directory under /tmp (not tmp_path: Dovecot and helpers must reach it)."""
    return daemon_pool.directory("fetch")


@pytest.fixture
def pop_imap(dovecot_factory: DovecotFactory) -> DovecotInstance:
    """Dovecot with IMAP(S) and POP3(S) only, users alice@ and bob@example.test."""
    return dovecot_factory(users=["alice@example.test", "bob@example.test"], lmtp=False)
