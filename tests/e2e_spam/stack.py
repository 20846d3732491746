"""Shared pieces of the end-to-end spam/virus tests: milter processes, stacks, messages.

A *stack* is one aiosmtpd catcher, one ``bin/rohrpost milter`` subprocess with a pipeline.toml
written by the test, and one throwaway Postfix (tests.support.daemons.PostfixInstance) whose
``smtpd_milters`` points at it. Everything listens on 127.0.0.1 only and lives in /tmp/rp-*
directories removed at teardown (``ROHRPOST_KEEP_DAEMON_DIRS=1`` keeps them).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import smtplib
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.daemons import (
    MailCatcher,
    PostfixInstance,
    Reply,
    SendResult,
    free_port,
    wait_until,
)
from tests.support.fixtures_daemons import DaemonPool
from tests.support.rohrpost_proc import BIN, ROOT, RohrpostProcess

SENDER = "alice@sender.example"
RCPT = "bob@example.net"


class MilterProcess(RohrpostProcess):
    """``rohrpost milter`` that is only ready once every worker logged "ready"."""

    def __init__(self, config: Path, workers: int = 1) -> None:
        port = free_port()
        super().__init__(["milter", "-c", str(config), "--socket", f"inet:{port}@127.0.0.1",
                          "--workers", str(workers)], config.parent, port)
        self.workers = workers
        self.config = config

    @property
    def spec(self) -> str:
        """The ``smtpd_milters`` entry for Postfix."""
        return f"inet:127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MilterProcess:
        """Start with this interpreter (the worktree may have no .venv for bin/rohrpost)."""
        ready_before = self.log().count(" ready")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, BIN, *self.args], stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, start_new_session=True, cwd=ROOT,
                env={**os.environ, "ROHRPOST_NO_VENV": "1"})
        proc = self.proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"rohrpost milter exited {proc.returncode}:\n{self.log()}")
            return self.log().count(" ready") >= ready_before + max(self.workers, 1)

        wait_until(ready, timeout, f"rohrpost milter workers on {self.port}")
        return self


class TerminateAll:
    """Pool entry that SIGTERMs several milters at once at teardown.

    libmilter notices a stop only at its next listener poll (up to about 5 s): started after
    the milters, this is stopped before them, so their waits overlap instead of adding up.
    """

    def __init__(self, milters: list[MilterProcess]) -> None:
        self.milters = milters

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Send SIGTERM to every milter's process group; their own ``stop`` waits."""
        for milter in self.milters:
            if milter.proc is not None and milter.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(milter.proc.pid, signal.SIGTERM)


@dataclass
class Stack:
    """Catcher + milter + Postfix: send through ``postfix``, read what arrived in ``catcher``."""

    catcher: MailCatcher
    milter: MilterProcess
    postfix: PostfixInstance

    def send(self, data: bytes, rcpts: tuple[str, ...] = (RCPT,), mail_from: str = SENDER,
             client_ip: str | None = None) -> tuple[SendResult, float]:
        """Send one message; return every reply and the seconds the transaction took.

        ``client_ip`` makes Postfix (``smtpd_authorized_xclient_hosts``) and so the milter
        see that address instead of 127.0.0.1, through XCLIENT.
        """
        start = time.monotonic()
        if client_ip is None:
            result = self.postfix.send(mail_from, list(rcpts), data)
        else:
            result = send_as(self.postfix.port, client_ip, mail_from, rcpts, data)
        return result, time.monotonic() - start

    def arrived(self, marker: bytes) -> list[bytes]:
        """Messages the catcher got that contain ``marker``."""
        return [m.data for m in self.catcher.messages if marker in m.data]

    def wait_arrived(self, marker: bytes, timeout: float = 30.0) -> bytes:
        """Wait for exactly one message containing ``marker`` and return it."""
        wait_until(lambda: bool(self.arrived(marker)), timeout, f"{marker!r} at the catcher")
        (data,) = self.arrived(marker)
        return data

    def diagnostics(self) -> str:
        """Tails of the milter log and the Postfix maillog, for assertion messages."""
        return (f"\n--- milter log ---\n{self.milter.log()[-3000:]}"
                f"\n--- maillog ---\n{self.postfix.log_text()[-3000:]}")


def send_as(port: int, client_ip: str, mail_from: str, rcpts: tuple[str, ...],
            data: bytes) -> SendResult:
    """One SMTP transaction that claims ``client_ip`` with XCLIENT (Postfix's test hook)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("relay.example.test")
        code, text = client.docmd("XCLIENT", f"ADDR={client_ip} NAME=[UNAVAILABLE]")
        result = SendResult(banner=Reply(code, text.decode()))
        if code != 220:
            return result
        client.ehlo_resp = None
        code, text = client.ehlo("mail.sender.example")
        result.ehlo = Reply(code, text.decode())
        code, text = client.mail(mail_from)
        result.mail = Reply(code, text.decode())
        if code != 250:
            return result
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            result.rcpts.append(Reply(code, text.decode()))
        if not any(r.code in (250, 251) for r in result.rcpts):
            return result
        try:
            code, text = client.data(data)
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error
        result.data = Reply(code, text.decode())
        return result


def build_stack(pool: DaemonPool, config_text: str, *, workers: int = 1,
                postfix_main: dict[str, str] | None = None) -> Stack:
    """Start catcher, milter (with ``config_text`` as its pipeline.toml) and Postfix in ``pool``."""
    work = pool.directory("e2e")
    config = work / "pipeline.toml"
    config.write_text(config_text.replace("@VAR@", str(work / "var")))
    catcher = pool.start(MailCatcher(), "mail_catcher")
    milter = pool.start(MilterProcess(config, workers), "rohrpost milter")
    main = {"smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            # XCLIENT clients come from the documentation networks: let them relay too
            "mynetworks": "127.0.0.0/8, 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24",
            **(postfix_main or {})}
    postfix = PostfixInstance(pool.directory("pf"), relay_port=catcher.port,
                              milters=[milter.spec], extra_main=main)
    pool.start(postfix, f"postfix {postfix.dir}", postfix.log_text)
    return Stack(catcher, milter, postfix)


def with_marker(raw: bytes, marker: str) -> bytes:
    """``raw`` with an ``X-Marker`` header on top (line ending as in ``raw``)."""
    eol = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    return f"X-Marker: {marker}".encode() + eol + raw


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    """A deflated zip archive of ``(name, data)`` members, in memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def zip_bomb(fan: int, levels: int, leaf: int) -> bytes:
    """A 42.zip-style bomb: ``fan`` copies per level, ``levels`` levels, ``leaf`` zero bytes.

    Declares ``fan ** levels * leaf`` bytes in a file of a few kilobytes (the copies of one
    level are identical, so the next level's deflate folds them up).
    """
    data = zip_of([(f"{i}.bin", b"\0" * leaf) for i in range(fan)])
    for level in range(levels - 1):
        data = zip_of([(f"l{level}-{i}.zip", data) for i in range(fan)])
    return data
