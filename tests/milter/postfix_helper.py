"""Minimal throwaway Postfix + aiosmtpd catcher + `rohrpost milter` process, for milter tests.

Kept small on purpose (shared fixtures live in tests/support on another branch). Tricks that
make a Postfix run from a temp dir as root: ``postfix -c DIR`` needs no
``alternate_config_directories`` when run as root; the queue directory must exist (0755,
root) before ``postfix start``, which then creates the rest; ``maillog_file`` must be under one
of ``maillog_file_prefixes`` and master.cf needs the ``postlog`` service; nothing chrooted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


@dataclass
class Caught:
    mail_from: str
    rcpts: list[str]
    data: bytes


@dataclass
class Catcher:
    """An aiosmtpd server on loopback that keeps every message it gets."""

    port: int = field(default_factory=free_port)
    messages: list[Caught] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def start(self) -> Catcher:
        from aiosmtpd.controller import Controller

        catcher = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with catcher._lock:
                    catcher.messages.append(Caught(envelope.mail_from, list(envelope.rcpt_tos),
                                                   envelope.original_content or envelope.content))
                return "250 2.0.0 Ok"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                      decode_data=False)
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def wait(self, count: int, timeout: float = 30) -> list[Caught]:
        wait_for(lambda: len(self.messages) >= count, timeout, f"{count} message(s) at catcher")
        return list(self.messages)


class Postfix:
    """``postfix -c DIR`` on 127.0.0.1 with one milter, relaying to a catcher."""

    def __init__(self, relay_port: int, milter: str, **extra: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="rp-milter-pf-", dir="/tmp"))
        self.dir.chmod(0o755)
        self.port = free_port()
        self.params = {
            "compatibility_level": "3.6", "config_directory": f"{self.dir}/etc",
            "queue_directory": f"{self.dir}/spool", "data_directory": f"{self.dir}/data",
            "maillog_file": f"{self.dir}/maillog",
            "maillog_file_prefixes": f"/var, /dev/stdout, {self.dir}",
            "syslog_name": f"pf-{self.dir.name}", "mail_owner": "postfix",
            "setgid_group": "postdrop", "myhostname": "mx.rohrpost.test",
            "mydestination": "", "local_recipient_maps": "", "alias_maps": "",
            "alias_database": "", "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8", "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "relayhost": f"[127.0.0.1]:{relay_port}", "smtp_dns_support_level": "disabled",
            "smtp_tls_security_level": "none", "smtpd_tls_security_level": "none",
            "queue_run_delay": "1s", "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
            "smtpd_milters": milter, "milter_default_action": "tempfail",
            "milter_protocol": "6", "milter_connect_timeout": "2s",
            "smtpd_error_sleep_time": "0", "smtpd_soft_error_limit": "1000",
            "smtpd_hard_error_limit": "2000", "in_flow_delay": "0", "biff": "no",
            "smtpd_client_connection_count_limit": "0", "smtpd_client_connection_rate_limit": "0",
            "default_process_limit": "100",
        }
        self.params.update(extra)

    def start(self) -> Postfix:
        etc = self.dir / "etc"
        etc.mkdir()
        (etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in self.params.items()))
        (etc / "master.cf").write_text(MASTER_CF + f"127.0.0.1:{self.port} inet n - n - - smtpd\n")
        (self.dir / "spool").mkdir(mode=0o755)
        (self.dir / "maillog").touch()
        subprocess.run(["postfix", "-c", str(etc), "start"], check=True, capture_output=True)
        wait_for(lambda: port_open(self.port), 30, "postfix smtpd")
        return self

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.dir / "etc"), "stop"], capture_output=True,
                       check=False)

    def log(self) -> str:
        return (self.dir / "maillog").read_text(errors="replace")

    def hold_queue(self) -> list[str]:
        hold = self.dir / "spool" / "hold"
        return [p.name for p in hold.rglob("*") if p.is_file()] if hold.exists() else []


def send(port: int, mail_from: str, rcpts: list[str], data: bytes) -> tuple[int, str]:
    """One SMTP transaction; return the reply that decided it (RCPT or end of DATA)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.example")
        code, text = client.mail(mail_from)
        if code != 250:
            return code, text.decode()
        accepted = 0
        last = (0, b"")
        for rcpt in rcpts:
            last = client.rcpt(rcpt)
            accepted += last[0] in (250, 251)
        if not accepted:
            return last[0], last[1].decode()
        try:
            code, text = client.data(data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        return code, text.decode()


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
