"""Pytest fixtures for DNS: a started ``TestDnsServer`` per test, and a resolver using it.

Owns the ``dns_server`` and ``dns_resolver`` fixtures; load it with
``pytest_plugins = ["tests.support.fixtures_dns"]`` in the top-level conftest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dnsserver import TestDnsServer


@pytest.fixture
def dns_server() -> Iterator[TestDnsServer]:
    """A started, empty authoritative test DNS server on 127.0.0.1 (UDP and TCP).

    The test fails if the server raised while answering (a bug in the server or its data).
    """
    with TestDnsServer() as server:
        yield server
    assert not server.errors, f"test DNS server errors: {server.errors!r}"
