"""The milter tests' Postfix, catcher and client: tests/support/daemons.py with their own API.

``Postfix`` and ``Catcher`` are ``PostfixInstance`` and ``MailCatcher`` (one milter, tuned for
many quick sessions); ``send`` is ``smtp_send`` answering with the reply that decided the
transaction; ``MilterProcess`` is `rohrpost milter` started through tests/milter/launch.py
(which adds the test-only filters).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.daemons import (
    MailCatcher,
    PostfixInstance,
    daemon_dir,
    free_port,
    smtp_send,
    wait_until,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
__all__ = ["Catcher", "MilterProcess", "Postfix", "free_port", "send", "wait_for"]

wait_for = wait_until


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


class Catcher(MailCatcher):
    """A ``MailCatcher`` whose ``start`` returns it (for one-line fixtures)."""

    def start(self) -> Catcher:  # type: ignore[override]
        super().start()
        return self


class Postfix(PostfixInstance):
    """A throwaway Postfix with one milter, relaying to ``relay_port``; many quick sessions."""

    def __init__(self, relay_port: int, milter: str, **extra: str) -> None:
        super().__init__(daemon_dir("milter-pf"), relay_port=relay_port, milters=[milter],
                         extra_main={"milter_connect_timeout": "2s",
                                     "smtpd_soft_error_limit": "1000",
                                     "smtpd_hard_error_limit": "2000",
                                     "smtpd_client_connection_count_limit": "0",
                                     "smtpd_client_connection_rate_limit": "0",
                                     "default_process_limit": "100", **extra})

    def start(self) -> Postfix:  # type: ignore[override]
        super().start()
        return self

    def log(self) -> str:
        return self.log_text()


def send(port: int, mail_from: str, rcpts: list[str], data: bytes) -> tuple[int, str]:
    """One SMTP transaction; return the reply that decided it (RCPT or end of DATA)."""
    final = smtp_send(port, mail_from, rcpts, data, helo="client.example", timeout=60).final
    return final.code, final.text


class MilterProcess:
    """``rohrpost milter`` (through tests/milter/launch.py) as a subprocess."""

    def __init__(self, config: Path, port: int, workers: int = 2, metrics: str = "",
                 engine: str = "asyncio") -> None:
        self.config, self.port, self.workers, self.metrics = config, port, workers, metrics
        self.engine = engine
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = config.parent / f"milter-{port}.log"

    def start(self) -> MilterProcess:
        cmd = [sys.executable, str(HERE / "launch.py"), "milter", "-c", str(self.config),
               "--socket", f"inet:{self.port}@127.0.0.1", "--workers", str(self.workers),
               "--engine", self.engine]
        if self.metrics:
            cmd += ["--metrics", self.metrics]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})
        log.close()
        def up() -> bool:
            ready = self.log().count(" ready") >= max(self.workers, 1)
            return (ready and port_open(self.port)) or self.proc.poll() is not None

        wait_for(up, 30, "rohrpost milter")
        if self.proc.poll() is not None:
            raise RuntimeError(f"rohrpost milter exited: {self.log()}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        assert self.proc is not None
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True,
                             check=False)
        return [int(p) for p in out.stdout.split()]

    def kill9(self) -> None:
        """SIGKILL the whole process group (parent and workers)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None
