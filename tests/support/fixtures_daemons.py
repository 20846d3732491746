"""Pytest fixtures for the real daemons in :mod:`tests.support.daemons`.

Loaded through ``pytest_plugins`` in tests/conftest.py. Every fixture starts its daemon on
loopback in a fresh /tmp/rp-* directory and stops it at teardown, also when the test failed;
the directory is removed afterwards unless ``ROHRPOST_KEEP_DAEMON_DIRS=1``. When a test fails,
the tail of each daemon's log is attached to the failure report.

Fixtures (all function-scoped):
  ``mail_catcher``       MailCatcher (aiosmtpd) recording (mail_from, rcpts, data)
  ``smtp_sink``          Postfix smtp-sink dumping into a directory
  ``postfix_factory``    ``make(relay_port=..., milters=..., content_filter=..., ...)``
  ``postfix``            PostfixInstance relaying to ``mail_catcher``
  ``dovecot_factory``    ``make(users=..., lmtp=..., ssl_required=...)``
  ``dovecot``            DovecotInstance with users alice@example.test and bob@example.test
  ``redis_server``       RedisInstance

Session-scoped (expensive to start, stateless enough to share; never stop them in a test):
  ``spamd``              SpamdInstance (local rules, Bayes in its own folder, TELL allowed)
  ``clamd``              ClamdInstance (offline sigtool database: EICAR, clamav-testfiles)
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from tests.support.daemons import (
    ClamdInstance,
    DovecotInstance,
    MailCatcher,
    PostfixInstance,
    RedisInstance,
    SmtpSink,
    SpamdInstance,
    daemon_dir,
)

_LOGS = pytest.StashKey[list[tuple[str, Callable[[], str]]]]()
_LOG_TAIL = 4000


class _Daemon(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


D = TypeVar("D", bound=_Daemon)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the tail of each running daemon's log to a failed test's report."""
    report = yield
    if report.when == "call" and report.failed:
        logs = list(item.stash.get(_LOGS, []))
        funcargs = getattr(item, "funcargs", {})
        logs += [(type(d).__name__, d.log_text) for d in funcargs.values()
                 if isinstance(d, SpamdInstance | ClamdInstance)]
        for name, log_text in logs:
            try:
                text = log_text()[-_LOG_TAIL:]
            except OSError as exc:
                text = f"(log unreadable: {exc})"
            report.sections.append((f"{name} log (tail)", text))
    return report


class DaemonPool:
    """Starts daemons for one test and stops them all (in reverse order) at teardown."""

    def __init__(self, item: pytest.Item) -> None:
        self.item = item
        self.started: list[_Daemon] = []
        self.dirs: list[Path] = []

    def directory(self, prefix: str) -> Path:
        """A fresh 0755 directory under /tmp, removed at teardown."""
        path = daemon_dir(prefix)
        self.dirs.append(path)
        return path

    def start(self, daemon: D, name: str, log_text: Callable[[], str] | None = None) -> D:
        """Start ``daemon``, register it for teardown and its log for failure reports."""
        self.started.append(daemon)  # registered first: a half-started daemon is stopped too
        if log_text is not None:
            self.item.stash.setdefault(_LOGS, []).append((name, log_text))
        daemon.start()
        return daemon

    def close(self) -> None:
        """Stop everything; the first stop error is re-raised after all were tried."""
        errors: list[BaseException] = []
        for daemon in reversed(self.started):
            try:
                daemon.stop()
            except Exception as exc:
                errors.append(exc)
        self.started.clear()
        if os.environ.get("ROHRPOST_KEEP_DAEMON_DIRS") != "1":
            for path in self.dirs:
                shutil.rmtree(path, ignore_errors=True)
        if errors:
            raise errors[0]


@pytest.fixture
def daemon_pool(request: pytest.FixtureRequest) -> Iterator[DaemonPool]:
    """The per-test pool that the other fixtures start their daemons in."""
    pool = DaemonPool(request.node)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def mail_catcher(daemon_pool: DaemonPool) -> MailCatcher:
    """An aiosmtpd server on loopback recording every message (see MailCatcher.wait_for)."""
    return daemon_pool.start(MailCatcher(), "mail_catcher")


@pytest.fixture
def smtp_sink(daemon_pool: DaemonPool) -> SmtpSink:
    """Postfix's smtp-sink on loopback dumping messages into a directory."""
    return daemon_pool.start(SmtpSink(daemon_pool.directory("sink")), "smtp-sink")


PostfixFactory = Callable[..., PostfixInstance]


@pytest.fixture
def postfix_factory(daemon_pool: DaemonPool) -> PostfixFactory:
    """``make(**kwargs)`` starts a PostfixInstance (kwargs as its constructor, minus the dir)."""

    def make(**kwargs: Any) -> PostfixInstance:
        pf = PostfixInstance(daemon_pool.directory("pf"), **kwargs)
        return daemon_pool.start(pf, f"postfix {pf.dir}", pf.log_text)

    return make


@pytest.fixture
def postfix(postfix_factory: PostfixFactory, mail_catcher: MailCatcher) -> PostfixInstance:
    """A Postfix relaying everything to ``mail_catcher``; no milters, no content filter."""
    return postfix_factory(relay_port=mail_catcher.port)


DovecotFactory = Callable[..., DovecotInstance]


@pytest.fixture
def dovecot_factory(daemon_pool: DaemonPool) -> DovecotFactory:
    """``make(**kwargs)`` starts a DovecotInstance (kwargs as its constructor, minus the dir)."""

    def make(**kwargs: Any) -> DovecotInstance:
        dc = DovecotInstance(daemon_pool.directory("dc"), **kwargs)
        return daemon_pool.start(dc, f"dovecot {dc.dir}", dc.log_text)

    return make


@pytest.fixture
def dovecot(dovecot_factory: DovecotFactory) -> DovecotInstance:
    """Dovecot with LMTP, IMAP(S), POP3(S); users alice@ and bob@example.test (``secret``)."""
    return dovecot_factory(users=["alice@example.test", "bob@example.test"])


@pytest.fixture
def redis_server(daemon_pool: DaemonPool) -> Generator[RedisInstance, None, None]:
    """redis-server on loopback without persistence; ``.url`` for clients."""
    rd = RedisInstance(daemon_pool.directory("redis"))
    yield daemon_pool.start(rd, "redis", lambda: rd.log_file.read_text(errors="replace"))


@contextmanager
def _session_daemon(daemon: D, directory: Path) -> Iterator[D]:
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()
        if os.environ.get("ROHRPOST_KEEP_DAEMON_DIRS") != "1":
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def spamd() -> Iterator[SpamdInstance]:
    """One spamd for the whole session (about 200 ms of CPU per message: send few)."""
    directory = daemon_dir("spamd")
    with _session_daemon(SpamdInstance(directory), directory) as instance:
        yield instance


@pytest.fixture(scope="session")
def clamd() -> Iterator[ClamdInstance]:
    """One clamd for the whole session; StreamMaxLength 4 MB so the limit is cheap to hit."""
    directory = daemon_dir("clamd")
    with _session_daemon(ClamdInstance(directory, stream_max_length=4 * 1024 * 1024),
                         directory) as instance:
        yield instance
