"""rohrpost fetch as a daemon (IMAP IDLE, SIGTERM), under kill -9, and with 1,000 messages."""

from __future__ import annotations

import email
import imaplib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.fetch.helpers import (
    BIN,
    account,
    maildir_files,
    maildir_messages,
    make_message,
    run_fetch,
    seed,
    write_config,
)
from tests.support.daemons import LOOPBACK, DovecotInstance, wait_until

pytestmark = pytest.mark.integration


def _message_ids(path: Path) -> list[str]:
    return [str(email.message_from_bytes(raw)["Message-ID"]) for raw in maildir_messages(path)]


def test_daemon_idle_push_and_sigterm(pop_imap: DovecotInstance, workdir: Path) -> None:
    seed(pop_imap, "alice@example.test", [make_message(1)])
    cfg = write_config(workdir, [account(pop_imap, workdir, protocol="imap", interval=300)])
    proc = subprocess.Popen([*BIN, "fetch", "-c", str(cfg), "--account", "old-provider",
                             "--daemon"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        box = workdir / "Maildir"
        wait_until(lambda: len(maildir_files(box)) == 1, 20, "first run")
        time.sleep(0.5)  # let the daemon enter IDLE
        imap = imaplib.IMAP4_SSL(LOOPBACK, pop_imap.imaps_port, ssl_context=pop_imap.ssl_context())
        imap.login("alice@example.test", DovecotInstance.PASSWORD)
        pushed = time.monotonic()
        imap.append("INBOX", None, None, make_message(2))
        imap.logout()
        wait_until(lambda: len(maildir_files(box)) == 2, 10, "IDLE push delivery")
        assert time.monotonic() - pushed < 10
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert b"1 delivered" in out
    assert sorted(_message_ids(workdir / "Maildir")) == sorted(
        str(email.message_from_bytes(make_message(i))["Message-ID"]) for i in (1, 2))


def test_kill_9_mid_fetch_loses_nothing_and_duplicates_nothing(pop_imap: DovecotInstance,
                                                               workdir: Path) -> None:
    total = 200
    seed(pop_imap, "alice@example.test", [make_message(i) for i in range(total)])
    cfg = write_config(workdir, [account(pop_imap, workdir, keep=False)])
    box = workdir / "Maildir"
    proc = subprocess.Popen([*BIN, "fetch", "-c", str(cfg), "--account", "old-provider"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: len(maildir_files(box)) >= 40, 60, "some deliveries")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = len(maildir_files(box))
    assert killed_at < total, "the fetch finished before it could be killed"
    again = run_fetch(cfg, "--account", "old-provider")
    assert again.returncode == 0, again.stderr
    ids = _message_ids(box)
    assert len(ids) == total and len(set(ids)) == total
    for raw in maildir_messages(box):  # every file in new/ or cur/ is complete
        assert b"END-OF-MESSAGE-" in raw
    assert not list((pop_imap.maildir_of("alice@example.test") / "new").iterdir())


def test_thousand_messages_with_progress(pop_imap: DovecotInstance, workdir: Path) -> None:
    total = 1000
    seed(pop_imap, "alice@example.test", [make_message(i) for i in range(total)])
    cfg = write_config(workdir, [account(pop_imap, workdir)])
    started = time.monotonic()
    done = run_fetch(cfg, "--account", "old-provider", "--progress", timeout=180)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{total} fetched, {total} delivered" in done.stdout
    assert f"fetching: {total}/{total}" in done.stderr
    assert "fetching: 100/1000" in done.stderr
    assert len(maildir_files(workdir / "Maildir")) == total
    print(f"1000 messages fetched and delivered in {elapsed:.1f}s")
