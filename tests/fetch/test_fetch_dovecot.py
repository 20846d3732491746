"""rohrpost fetch against a real Dovecot over POP3/IMAP with TLS: keep, delete, re-runs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fetch.helpers import (
    account,
    maildir_messages,
    make_message,
    password_file,
    run_fetch,
    seed,
    server_count,
    write_config,
)
from tests.support.daemons import DovecotInstance

pytestmark = pytest.mark.integration


def _ids(messages: list[bytes]) -> list[str]:
    out = []
    for raw in messages:
        for line in raw.split(b"\n"):
            if line.lower().startswith(b"message-id:"):
                out.append(line.split(b":", 1)[1].strip().decode())
    return sorted(out)


def test_pop3_keep_mode_delivers_once_and_leaves_mail(pop_imap: DovecotInstance,
                                                      workdir: Path) -> None:
    seed(pop_imap, "alice@example.test", [make_message(i) for i in range(3)])
    cfg = write_config(workdir, [account(pop_imap, workdir)])
    first = run_fetch(cfg, "--account", "old-provider")
    assert first.returncode == 0, first.stderr
    assert "3 fetched, 3 delivered" in first.stdout
    got = maildir_messages(workdir / "Maildir")
    assert len(got) == 3
    top = got[0].split(b"\n")
    assert top[0].startswith(b"Return-Path: <carol@example.org>")
    assert top[1] == b"Delivered-To: bob@example.net"
    text = got[0].decode()
    assert "Received: from 127.0.0.1 by fetcher.test" in text
    assert "with POP3 id" in text and "for <bob@example.net>" in text
    assert text.count("Return-Path:") == 1  # the server's copy is replaced by ours
    assert "X-Rohrpost-Result: action=accept" in text
    second = run_fetch(cfg, "--account", "old-provider")
    assert second.returncode == 0, second.stderr
    assert "0 fetched" in second.stdout and "3 skipped as seen" in second.stdout
    assert len(maildir_messages(workdir / "Maildir")) == 3
    assert server_count(pop_imap, "alice@example.test") == 3


def test_pop3_starttls_delete_mode(pop_imap: DovecotInstance, workdir: Path) -> None:
    seed(pop_imap, "alice@example.test", [make_message(i) for i in range(2)])
    cfg = write_config(workdir, [account(pop_imap, workdir, tls="starttls", keep=False)])
    done = run_fetch(cfg, "--account", "old-provider")
    assert done.returncode == 0, done.stderr
    assert "2 delivered" in done.stdout and "2 deleted on the server" in done.stdout
    assert server_count(pop_imap, "alice@example.test") == 0
    assert len(maildir_messages(workdir / "Maildir")) == 2


def test_imap_keep_then_delete_and_folders(pop_imap: DovecotInstance, workdir: Path) -> None:
    user = "alice@example.test"
    seed(pop_imap, user, [make_message(i) for i in range(3)])
    seed(pop_imap, user, [make_message(10 + i) for i in range(2)], folder="Lists")
    acct = account(pop_imap, workdir, protocol="imap", folders=["INBOX", "Lists"])
    cfg = write_config(workdir, [acct])
    first = run_fetch(cfg, "--account", "old-provider")
    assert first.returncode == 0, first.stderr
    assert "5 fetched, 5 delivered" in first.stdout
    assert "with IMAP id" in maildir_messages(workdir / "Maildir")[0].decode()
    again = run_fetch(cfg, "--account", "old-provider")
    assert "5 skipped as seen" in again.stdout and "0 fetched" in again.stdout
    # switch the same account to delete mode: nothing new is delivered, the server is emptied
    cfg = write_config(workdir, [{**acct, "keep": False}])
    wipe = run_fetch(cfg, "--account", "old-provider")
    assert wipe.returncode == 0, wipe.stderr
    assert "5 deleted on the server" in wipe.stdout
    assert server_count(pop_imap, user) == 0 and server_count(pop_imap, user, "Lists") == 0
    assert len(maildir_messages(workdir / "Maildir")) == 5


def test_imap_starttls(pop_imap: DovecotInstance, workdir: Path) -> None:
    seed(pop_imap, "alice@example.test", [make_message(1)])
    cfg = write_config(workdir, [account(pop_imap, workdir, protocol="imap", tls="starttls")])
    done = run_fetch(cfg, "--account", "old-provider")
    assert done.returncode == 0, done.stderr
    assert "1 delivered" in done.stdout


def test_uidvalidity_change_gives_no_duplicates(pop_imap: DovecotInstance,
                                               workdir: Path) -> None:
    user = "alice@example.test"
    seed(pop_imap, user, [make_message(i) for i in range(4)])
    cfg = write_config(workdir, [account(pop_imap, workdir, protocol="imap")])
    assert "4 delivered" in run_fetch(cfg, "--account", "old-provider").stdout
    box = pop_imap.maildir_of(user)
    for name in os.listdir(box):
        if name.startswith("dovecot"):
            path = box / name
            if path.is_file():
                path.unlink()
    time.sleep(1.1)  # Dovecot derives a new UIDVALIDITY from the clock
    again = run_fetch(cfg, "--account", "old-provider")
    assert again.returncode == 0, again.stderr
    assert "4 fetched, 0 delivered" in again.stdout
    assert "4 duplicates suppressed" in again.stdout
    assert len(maildir_messages(workdir / "Maildir")) == 4


def test_untrusted_certificate_fails_cleanly(pop_imap: DovecotInstance, workdir: Path) -> None:
    seed(pop_imap, "alice@example.test", [make_message(1)])
    acct = account(pop_imap, workdir, protocol="imap")
    del acct["ca_file"]
    cfg = write_config(workdir, [acct])
    done = run_fetch(cfg, "--account", "old-provider")
    assert done.returncode == 69
    assert "certificate" in done.stderr and "--ca" in done.stderr
    assert not (workdir / "Maildir").exists()
    ok = run_fetch(cfg, "--account", "old-provider", "--ca", str(pop_imap.cert_file))
    assert ok.returncode == 0 and "1 delivered" in ok.stdout


def test_password_file_must_be_private_and_is_never_shown(pop_imap: DovecotInstance,
                                                          workdir: Path) -> None:
    acct = account(pop_imap, workdir)
    password_file(workdir, mode=0o644)
    cfg = write_config(workdir, [acct])
    done = run_fetch(cfg, "--account", "old-provider")
    assert done.returncode == 78
    assert "chmod 600" in done.stderr
    # a wrong password: refused by the server, the password appears nowhere
    password_file(workdir, password="Wr0ng-Pa55word")
    bad = run_fetch(cfg, "--account", "old-provider")
    assert bad.returncode == 69
    assert "login" in bad.stderr.lower()
    assert "Wr0ng-Pa55word" not in bad.stderr + bad.stdout


def test_password_command(pop_imap: DovecotInstance, workdir: Path) -> None:
    seed(pop_imap, "alice@example.test", [make_message(1)])
    acct = account(pop_imap, workdir)
    del acct["password_file"]
    acct["password_command"] = ["/bin/echo", DovecotInstance.PASSWORD]
    cfg = write_config(workdir, [acct])
    done = run_fetch(cfg, "--account", "old-provider")
    assert done.returncode == 0, done.stderr
    assert "1 delivered" in done.stdout
