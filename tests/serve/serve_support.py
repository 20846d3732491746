"""Helpers for the serve tests: a recording aiosmtpd next hop and a `rohrpost serve` process."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAUNCHER = os.path.join(HERE, "launch_rohrpost.py")
BIN = os.path.join(ROOT, "bin", "rohrpost")
READY = "rohrpost serve: listening on "

PIPELINE = """
[pipeline]
var_dir = "var"
authserv_id = "mx.test"
hostname = "mx.test"

[[filter]]
use = "serve-connect"
block = ["192.0.2.66"]

[[filter]]
use = "serve-rcpt"

[[filter]]
use = "serve-probe"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Catcher:
    """aiosmtpd handler that records what it accepted; replies are configurable."""

    def __init__(self, data_reply: str = "250 2.0.0 Ok: queued as CATCH1") -> None:
        self.data_reply = data_reply
        self.received: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("busy@"):
            return "450 4.2.1 Mailbox busy"
        if address.startswith("unknown@"):
            return "550 5.1.1 User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply.startswith("250"):
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  envelope.original_content))
        if isinstance(server, LMTP):  # LMTP: one reply per accepted recipient
            return "\r\n".join([self.data_reply] * len(envelope.rcpt_tos))
        return self.data_reply


class LmtpController(Controller):
    def factory(self):
        return LMTP(self.handler, enable_SMTPUTF8=True, decode_data=False)


def start_catcher(handler: Catcher, lmtp: bool = False) -> Controller:
    cls = LmtpController if lmtp else Controller
    controller = cls(handler, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=True,
                     decode_data=False)
    controller.start()
    return controller


class ServeProcess:
    """`rohrpost serve` in a subprocess; waits for the ready line on stderr (no sleeps)."""

    def __init__(self, args: list[str], cwd: str, use_bin: bool = False) -> None:
        script = BIN if use_bin else LAUNCHER
        env = {**os.environ, "ROHRPOST_NO_VENV": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, script, "serve", *args], cwd=cwd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=env)
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
            if line.startswith(READY):
                self.port = int(line.rsplit(":", 1)[1])
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float = 30.0) -> ServeProcess:
        if not self._ready.wait(timeout) or not self.port:
            self.proc.kill()
            raise AssertionError("serve did not become ready:\n" + "\n".join(self.lines))
        return self

    def wait_for_line(self, text: str, timeout: float = 30.0) -> str:
        """Block until a stderr line contains ``text`` (a ready signal, not a sleep)."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(text in line for line in self.lines) or self.proc.poll() is not None,
                timeout)
            hit = [line for line in self.lines if text in line]
        assert found and hit, f"no line with {text!r}:\n" + self.stderr()
        return hit[0]

    def stderr(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._reader.join(5)
        self._close_pipe()
        return rc

    def _close_pipe(self) -> None:
        if self.proc.stderr is not None and not self._reader.is_alive():
            self.proc.stderr.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(5)
        self._close_pipe()


def message(subject: str = "hello", body: bytes = b"Hello.\r\n", extra: bytes = b"") -> bytes:
    return (b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
            b"Subject: " + subject.encode() + b"\r\nMessage-ID: <t@example.org>\r\n" + extra
            + b"\r\n" + body)


def lmtp_transaction(port: int, sender: str, rcpts: list[str], msg: bytes,
                     xforward: str = "") -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """One LMTP transaction by hand: RCPT replies and every reply after DATA."""
    client = smtplib.LMTP("127.0.0.1", port)
    try:
        client.ehlo_or_helo_if_needed()
        if xforward:
            assert client.docmd("XFORWARD", xforward)[0] == 250
        code, text = client.mail(sender)
        assert code == 250, (code, text)
        rcpt_replies = [client.rcpt(r) for r in rcpts]
        accepted = sum(1 for c, _t in rcpt_replies if c == 250)
        data_replies: list[tuple[int, bytes]] = []
        if accepted:
            code, text = client.docmd("DATA")
            assert code == 354, (code, text)
            payload = re.sub(rb"(?m)^\.", b"..", msg)  # dot-stuffing; msg is CRLF already
            if not payload.endswith(b"\r\n"):
                payload += b"\r\n"
            client.send(payload + b".\r\n")
            data_replies = [client.getreply() for _ in range(accepted)]
        client.quit()
        return rcpt_replies, data_replies
    finally:
        client.close()
