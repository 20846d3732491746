"""LMTP delivery into a real Dovecot, read back over IMAP (TLS)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.daemons import DovecotInstance

ROOT = Path(__file__).resolve().parents[2]
BIN = str(ROOT / "bin" / "rohrpost")

pytestmark = pytest.mark.integration

MSG = (b"From: alice@example.org\r\nTo: bob@example.test\r\nSubject: via lmtp\r\n"
       b"List-Id: <news.example.org>\r\nMessage-ID: <lmtp-1@example.org>\r\n\r\n"
       b"Gr\xc3\xbc\xc3\x9fe, 8-bit body\r\n")


def test_run_delivers_over_lmtp_and_imap_reads_it_back(dovecot: DovecotInstance) -> None:
    res = subprocess.run(
        [BIN, "run", "-c", str(ROOT / "pipeline.toml"), "--sender", "alice@example.org",
         "--recipient", "bob@example.test", "--recipient", "nobody@example.test",
         "--deliver", f"lmtp:127.0.0.1:{dovecot.lmtp_port}"],
        input=MSG, capture_output=True, timeout=60, check=False)
    # one recipient unknown to Dovecot: permanent failure for it, the other delivered
    assert res.returncode == 67, res.stderr
    assert b"nobody@example.test" in res.stderr and b"5.1.1" in res.stderr
    (fetched,) = dovecot.imap_fetch_all("bob@example.test")
    assert b"X-Newsletter: yes" in fetched
    assert b"X-Rohrpost-Result: action=accept score=2.5" in fetched
    assert fetched.endswith(b"Gr\xc3\xbc\xc3\x9fe, 8-bit body\r\n")


def test_deliver_command_over_lmtp(dovecot: DovecotInstance) -> None:
    res = subprocess.run(
        [BIN, "deliver", f"lmtp:127.0.0.1:{dovecot.lmtp_port}", "-r", "alice@example.test",
         "--sender", "x@example.org"],
        input=MSG, capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    (fetched,) = dovecot.imap_fetch_all("alice@example.test")
    assert b"Subject: via lmtp" in fetched
