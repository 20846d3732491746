"""contrib/postfix/master.cf.pipe on a real Postfix: rohrpost as a pipe(8) delivery transport.

The transport entry is taken from contrib as written; only the paths (rohrpost, pipeline.toml,
the vmail root) and the unprivileged user are replaced. pipe(8) refuses to run commands as
root, so rohrpost runs as ``nobody``; when this checkout's interpreter is not reachable for
``nobody`` (a venv whose python lives under /root) the system python3 with the venv's
site-packages is used instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemons import PostfixInstance, daemon_dir, free_port, smtp_send

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib" / "postfix" / "master.cf.pipe"


def _runs_as_nobody(argv: list[str]) -> bool:
    try:
        res = subprocess.run(["runuser", "-u", "nobody", "--", *argv, "-c", "import click"],
                             capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


def rohrpost_argv() -> str:
    """The command pipe(8) runs instead of /opt/rohrpost/bin/rohrpost."""
    if _runs_as_nobody([sys.executable]):
        return f"{sys.executable} {ROOT}/bin/rohrpost"
    system = shutil.which("python3", path="/usr/bin:/bin")
    site = sysconfig.get_paths()["purelib"]
    if system and _runs_as_nobody(["/usr/bin/env", f"PYTHONPATH={site}", system]):
        return (f"/usr/bin/env ROHRPOST_NO_VENV=1 PYTHONPATH={site} {system} "
                f"{ROOT}/bin/rohrpost")
    pytest.fail("no python that user nobody can run with rohrpost's dependencies")


class PipePostfix(PostfixInstance):
    def __init__(self, directory: Path, transport: str) -> None:
        super().__init__(directory, relay_port=free_port(), extra_main={
            "default_transport": "rohrpost-deliver",
            "rohrpost-deliver_destination_recipient_limit": "1",
        })
        self.transport = transport

    def master_cf(self) -> str:
        return super().master_cf() + self.transport


@pytest.fixture
def postfix() -> Iterator[tuple[PostfixInstance, Path]]:
    if os.geteuid() != 0:
        pytest.fail("Postfix integration tests need root (see tests/support/daemons.py)")
    d = daemon_dir("pipe")
    vmail, var = d / "vmail", d / "var"
    for sub in (vmail, var):
        sub.mkdir()
        shutil.chown(sub, "nobody", "nogroup")
    config = d / "pipeline.toml"
    config.write_text((ROOT / "pipeline.toml").read_text()
                      .replace('var_dir = "var"', f'var_dir = "{var}"'))
    config.chmod(0o644)
    entry = "\n".join(line for line in CONTRIB.read_text().splitlines()
                      if not line.startswith("#"))
    assert "user=vmail" in entry and "argv=/opt/rohrpost/bin/rohrpost " in entry
    entry = (entry.replace("user=vmail", "user=nobody")
             .replace("/opt/rohrpost/bin/rohrpost", rohrpost_argv())
             .replace("/etc/rohrpost/pipeline.toml", str(config))
             .replace("/var/vmail", str(vmail)))
    pf = PipePostfix(d / "postfix", entry + "\n")
    try:
        pf.start()
        yield pf, vmail
    finally:
        pf.stop()
        shutil.rmtree(d, ignore_errors=True)


def wait_files(folder: Path, n: int, timeout: float = 30.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(folder.glob("*/*/Maildir/new/*"))
        if len(files) >= n:
            return files
        time.sleep(0.1)
    raise AssertionError(f"{n} files expected under {folder}, got {sorted(folder.rglob('*'))}")


def msg(subject: str) -> bytes:
    return (f"From: a@example.org\r\nTo: bob@example.net\r\nSubject: {subject}\r\n"
            "List-Id: <x>\r\n\r\nbody\r\n").encode()


def test_contrib_pipe_transport(postfix: tuple[PostfixInstance, Path]) -> None:
    pf, vmail = postfix
    assert smtp_send(pf.port, "alice@example.org", ["bob@example.net", "carol@example.net"],
                     msg("hello")).accepted
    assert smtp_send(pf.port, "", ["bob@example.net"], msg("a bounce")).accepted
    files = wait_files(vmail, 3)
    texts = {str(p.relative_to(vmail)).split("/Maildir")[0] + ":" + p.read_text()
             for p in files}
    for text in texts:
        head = text.split("\n\n", 1)[0]
        assert head.count("Return-Path:") == 1, head
        assert head.count("Delivered-To:") == 1, head
        assert "X-Newsletter: yes" in head
    assert any(t.startswith("example.net/carol:Return-Path: <alice@example.org>\n"
                            "Delivered-To: carol@example.net\n") for t in texts), texts
    bounce = [t for t in texts if "Subject: a bounce" in t]
    assert bounce and bounce[0].startswith("example.net/bob:Return-Path: <>\n"), bounce

    # a rule reject bounces with the rule's own enhanced status code
    assert smtp_send(pf.port, "a@example.org", ["bob@example.net"], msg("buy now")).accepted
    log = pf.wait_log("status=bounced")
    line = next(x for x in log.splitlines() if "status=bounced" in x)
    assert "dsn=5.7.1" in line, line
    assert re.search(r"status=bounced \([^)]*5\.7\.1 Blocked by local policy", line), line
