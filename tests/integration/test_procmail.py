"""procmail calling rohrpost as a filter (`:0 fw`) and as the delivery agent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin" / "rohrpost"

pytestmark = pytest.mark.integration

RC = """SHELL=/bin/sh
LOGFILE={dir}/procmail.log
VERBOSE=yes
:0 fw
| {bin} run -c {config}

# the filter failed: hand its exit status to the MTA (75 defers, 77 bounces)
:0 e
{{ EXITCODE=$? HOST }}

:0
* ^X-Rohrpost-Action: (quarantine|discard)
/dev/null

:0 w
| {bin} deliver maildir:{dir}/Maildir/
"""


@pytest.fixture
def rcfile(tmp_path: Path) -> Path:
    assert shutil.which("procmail"), "procmail is not installed: run scripts/install-deps.sh"
    config = tmp_path / "pipeline.toml"
    config.write_text((ROOT / "pipeline.toml").read_text())
    rc = tmp_path / "procmailrc"
    rc.write_text(RC.format(dir=tmp_path, bin=BIN, config=config))
    return rc


def procmail(rc: Path, data: bytes) -> int:
    res = subprocess.run(["procmail", "-m", str(rc)], input=data, capture_output=True,
                         timeout=60, check=False)
    return res.returncode


def test_filter_then_deliver(rcfile: Path) -> None:
    maildir = rcfile.parent / "Maildir"
    ham = (b"From: alice@example.org\nTo: bob@example.net\nSubject: hi\nList-Id: <x>\n"
           b"X-Spam-Flag: YES\n\nbody\n")
    assert procmail(rcfile, ham) == 0
    (msg,) = list((maildir / "new").iterdir())
    data = msg.read_bytes()
    assert b"X-Newsletter: yes" in data
    assert data.count(b"X-Spam-Flag") == 0  # forged verdict removed, ours says no spam
    assert b"X-Spam-Status: No, score=2.5" in data
    assert b"\n\nbody\n" in data  # procmail appends a blank line (mbox habit)


def test_reject_bounces_and_quarantine_is_dropped(rcfile: Path) -> None:
    maildir = rcfile.parent / "Maildir"
    assert procmail(rcfile, b"From: a@example.org\nSubject: Buy now\n\nx\n") == 77
    partner = b"Return-Path: <p@partner.example>\nFrom: p@partner.example\nSubject: s\n\nx\n"
    assert procmail(rcfile, partner) == 0
    assert not (maildir / "new").exists() or list((maildir / "new").iterdir()) == []
    quarantine = rcfile.parent / "var" / "quarantine"
    assert len(list(quarantine.glob("*.eml"))) == 1
    assert procmail(rcfile, b"") == 75


def test_contrib_procmailrc_as_written(tmp_path: Path) -> None:
    """contrib/procmail/procmailrc (paths replaced): a reject is not delivered but handed to
    the MTA as exit 77, a quarantined message is not delivered, ham is."""
    assert shutil.which("procmail"), "procmail is not installed: run scripts/install-deps.sh"
    config = tmp_path / "pipeline.toml"
    config.write_text((ROOT / "pipeline.toml").read_text())
    rc = tmp_path / "procmailrc"
    rc.write_text((ROOT / "contrib" / "procmail" / "procmailrc").read_text()
                  .replace("/usr/bin/rohrpost", str(BIN))
                  .replace("/etc/rohrpost/pipeline.toml", str(config))
                  .replace("$HOME", str(tmp_path)))
    (tmp_path / "Maildir").mkdir()
    assert procmail(rc, b"From: a@example.org\nSubject: Buy now\n\nx\n") == 77
    partner = b"Return-Path: <p@partner.example>\nFrom: p@partner.example\nSubject: s\n\nx\n"
    assert procmail(rc, partner) == 0
    assert procmail(rc, b"From: a@example.org\nSubject: hello\n\nx\n") == 0
    files = list((tmp_path / "Maildir" / "new").iterdir())
    assert [b"Subject: hello" in f.read_bytes() for f in files] == [True]
    assert len(list((tmp_path / "var" / "quarantine").glob("*.eml"))) == 1
