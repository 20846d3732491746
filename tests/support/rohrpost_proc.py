"""Start ``bin/rohrpost serve`` / ``bin/rohrpost milter`` as real subprocesses for tests.

Readiness is the process's own signal (a "listening" line on stderr, or the port accepting),
waited on with a deadline; stderr is collected into a file for failure reports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = str(ROOT / "bin" / "rohrpost")


class RohrpostProcess:
    """A rohrpost daemon subprocess; ``kill9()`` and ``stop()`` end it."""

    def __init__(self, args: list[str], log_dir: Path, port: int) -> None:
        self.args = args
        self.port = port
        self.log_path = log_dir / f"rohrpost-{args[0]}-{port}-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> RohrpostProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([BIN, *self.args], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rohrpost {self.args[0]} exited {self.proc.returncode}:\n"
                                   + self.log())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"rohrpost {self.args[0]} not listening on {self.port}:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill9()
