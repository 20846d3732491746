"""Fuzz-style: every message of the MIME corpora through `rohrpost run`/`check` (pipe), a real
Postfix with `rohrpost milter`, and `rohrpost serve`, with the default pipeline.toml.

A tempfail (4xx, exit 75) from our side would mean an internal error on odd input, so every
message must get a defined final answer: accepted, or rejected by a rule. Nothing may crash.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.daemons import MailCatcher, free_port
from tests.support.fixtures_daemons import DaemonPool, PostfixFactory
from tests.support.rohrpost_proc import BIN, ROOT, RohrpostProcess

TESTDATA = ROOT.parent / "shared" / "testdata"
CORPORA = ("mime-cpython-test_email", "mime-stalwart-mail-parser")


def corpus_files() -> list[Path]:
    found = []
    for corpus in CORPORA:
        for root, _dirs, files in os.walk(TESTDATA / corpus):
            for name in files:
                if name.endswith(".eml") or (name.startswith("msg_") and name.endswith(".txt")):
                    found.append(Path(root) / name)
    return sorted(found)


FILES = corpus_files()


def test_corpora_are_there() -> None:
    assert len(FILES) > 90, f"MIME corpora missing under {TESTDATA}"


def test_check_every_message_in_one_run() -> None:
    res = subprocess.run([BIN, "check", "-c", str(ROOT / "pipeline.toml"), "--json",
                          *map(str, FILES)], capture_output=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    results = json.loads(res.stdout)
    assert len(results) == len(FILES)
    assert {r["action"] for r in results} <= {"accept", "reject", "quarantine"}
    assert all(not f["error"] for r in results for f in r["filters"])


def _run(path: Path) -> tuple[Path, int, bytes]:
    res = subprocess.run([BIN, "run", "-c", str(ROOT / "pipeline.toml"), "--sender",
                          "a@example.org", "--recipient", "b@example.net"],
                         input=path.read_bytes(), capture_output=True, timeout=120, check=False)
    return path, res.returncode, res.stderr


def test_run_every_message() -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_run, FILES))
    bad = [(p.name, rc, err[-300:]) for p, rc, err in results if rc not in (0, 69, 77)]
    assert bad == []


def _send_all(port: int, lmtp: bool = False) -> dict[str, int]:
    codes = {}
    for path in FILES:
        data = path.read_bytes()
        with (smtplib.LMTP if lmtp else smtplib.SMTP)("127.0.0.1", port, timeout=60) as client:
            client.ehlo_or_helo_if_needed() if not lmtp else client.ehlo("client.example")
            try:
                client.sendmail("a@example.org", ["b@example.net"], data)
                codes[str(path)] = 250
            except smtplib.SMTPDataError as exc:
                codes[str(path)] = exc.smtp_code
            except smtplib.SMTPRecipientsRefused as exc:
                codes[str(path)] = next(iter(exc.recipients.values()))[0]
    return codes


@pytest.mark.integration
def test_every_message_through_postfix_and_the_milter(
        daemon_pool: DaemonPool, postfix_factory: PostfixFactory,
        mail_catcher: MailCatcher) -> None:
    work = Path(daemon_pool.directory("corpus"))
    (work / "pipeline.toml").write_text((ROOT / "pipeline.toml").read_text())
    port = free_port()
    milter = RohrpostProcess(["milter", "-c", str(work / "pipeline.toml"), "--socket",
                              f"inet:{port}@127.0.0.1"], work, port).start()
    try:
        pf = postfix_factory(relay_port=mail_catcher.port,
                             milters=[f"inet:127.0.0.1:{port}"])
        codes = _send_all(pf.port)
    finally:
        milter.stop()
    assert set(codes.values()) <= {250, 550, 552, 554}, codes
    accepted = sum(1 for c in codes.values() if c == 250)
    mail_catcher.wait_for(accepted, timeout=120)
    assert "internal error" not in milter.log() and "Traceback" not in milter.log()


@pytest.mark.integration
def test_every_message_through_serve(daemon_pool: DaemonPool) -> None:
    work = Path(daemon_pool.directory("corpus-serve"))
    (work / "pipeline.toml").write_text((ROOT / "pipeline.toml").read_text())
    port = free_port()
    serve = RohrpostProcess(["serve", "-c", str(work / "pipeline.toml"), "--listen",
                             f"127.0.0.1:{port}", "--lmtp", "--deliver",
                             f"maildir:{work}/Maildir"], work, port).start()
    try:
        codes = _send_all(port, lmtp=True)
    finally:
        serve.stop()
    assert set(codes.values()) <= {250, 550, 552, 554}, codes
    delivered = len(list((work / "Maildir" / "new").iterdir()))
    assert delivered == sum(1 for c in codes.values() if c == 250), codes
    assert "Traceback" not in serve.log()
