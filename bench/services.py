"""Daemons the bench starts: each in the foreground, in its own session, on 127.0.0.1.

``World`` owns the shared state of one bench run: the directory under /tmp, the DKIM key and
its DNS records, the loopback DNS server (port 53 inside the bench's network namespace), and
the shared backends (clamd, spamd, Redis), started on first use and stopped at the end.
``Daemon`` is one started program; its CPU and memory are read by session id.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import messages, tools
from tests.support.daemons import (
    DaemonError,
    RedisInstance,
    daemon_dir,
    free_port,
    stop_process,
    wait_until,
)

SELECTOR = "bench"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def banner_ok(port: int, prefix: bytes) -> bool:
    """True when 127.0.0.1:port answers PING (clamd) with ``prefix``."""
    with socket.create_connection(("127.0.0.1", port), 2.0) as sock:
        sock.sendall(b"zPING\0")
        return sock.recv(16).startswith(prefix)


@dataclass
class Daemon:
    """One foreground program in its own session, logging to ``dir/NAME.log``."""

    name: str
    argv: list[str]
    listen: tools.Listen
    dir: Path
    ready: Callable[[], bool] | None = None
    timeout: float = 60.0
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port (0 for a daemon on a Unix socket)."""
        return self.listen.port

    @property
    def log(self) -> Path:
        """Where stdout and stderr go."""
        return self.dir / f"{self.name}.log"

    @property
    def session(self) -> int:
        """Session id (the leader's pid) of the daemon's processes."""
        if self.proc is None:
            raise DaemonError(f"{self.name} not started")
        return self.proc.pid

    def start(self) -> None:
        """Start and wait until ready; on failure raise DaemonError with the log's tail."""
        if shutil.which(self.argv[0]) is None:
            raise DaemonError(f"{self.argv[0]} not installed")
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.dir, env={**os.environ, **self.env})
        check = self.ready or self.listen.accepting
        try:
            wait_until(lambda: self._alive() and check(), self.timeout, f"{self.name} ready")
        except DaemonError as exc:
            self.stop()
            raise DaemonError(f"{exc}; log: {self.log_tail()}") from None
        if self.listen.path is not None:  # Postfix's smtpd (user postfix) must connect
            self.listen.path.chmod(0o666)

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonError(f"{self.name} exited with status {self.proc.returncode}: "
                              f"{self.log_tail()}")
        return True

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of the log, joined on one line."""
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " / ".join(text[-lines:]) or "(empty log)"

    def stop(self) -> None:
        """Stop the whole session (idempotent); throwaway daemons get 2 s before SIGKILL."""
        stop_process(self.proc, timeout=2.0)
        self.proc = None


class World:
    """Directory, keys, DNS and shared backends of one bench run."""

    def __init__(self, dns_port: int = 53, rohrpost_workers: int = 1) -> None:
        self.dir = daemon_dir("bench")
        self.dns_port = dns_port
        self.rohrpost_workers = rohrpost_workers  # `rohrpost milter --workers`
        self.key = self.dir / "dkim.private"
        self.pubkey_b64 = ""
        self._backends: dict[str, Daemon | RedisInstance] = {}
        self._backend_errors: dict[str, str] = {}
        self.dns: object | None = None

    # ---- setup
    def make_key(self) -> None:
        """An RSA-2048 DKIM key (openssl), readable by the tools' users."""
        subprocess.run(["openssl", "genrsa", "-out", str(self.key), "2048"], check=True,
                       capture_output=True)
        der = subprocess.run(["openssl", "rsa", "-in", str(self.key), "-pubout", "-outform",
                              "DER"], check=True, capture_output=True).stdout
        self.pubkey_b64 = base64.b64encode(der).decode()
        self.key.chmod(0o644)

    def dns_records(self) -> list[tuple[str, str, str]]:
        """Records for example.org (DKIM key, SPF, DMARC) and the client's name."""
        dom = messages.SENDER_DOMAIN
        return [
            (f"{SELECTOR}._domainkey.{dom}.", "TXT", f"v=DKIM1; k=rsa; p={self.pubkey_b64}"),
            (f"{dom}.", "TXT", "v=spf1 ip4:127.0.0.0/8 -all"),
            (f"{dom}.", "A", "127.0.0.1"),
            (f"{dom}.", "MX", f"10 mx.{dom}."),
            (f"mx.{dom}.", "A", "127.0.0.1"),
            (f"_dmarc.{dom}.", "TXT", "v=DMARC1; p=reject; adkim=r; aspf=r"),
            (f"{messages.CLIENT_HELO}.", "A", "127.0.0.1"),
            (f"{messages.CLIENT_HELO}.", "TXT", "v=spf1 a -all"),
            ("1.0.0.127.in-addr.arpa.", "PTR", f"{messages.CLIENT_HELO}."),
            ("example.net.", "A", "127.0.0.1"),
        ]

    def start_dns(self) -> None:
        """The test DNS server on 127.0.0.1:dns_port with :meth:`dns_records`."""
        from tests.support.dnsserver import TestDnsServer

        zones: dict[str, list[tuple[str, str, str]]] = {
            "example.org.": [], "example.net.": [], "0.0.127.in-addr.arpa.": []}
        for rec in self.dns_records():
            origin = next(z for z in zones if rec[0].endswith(z))
            zones[origin].append(rec)
        server = TestDnsServer(zones, port=self.dns_port)
        server.start()
        self.dns = server

    def subdir(self, name: str) -> Path:
        """A fresh 0755 directory under the bench directory."""
        path = self.dir / name
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.chmod(0o755)
        return path

    # ---- shared backends
    def backend(self, name: str) -> Daemon | RedisInstance:
        """Start (once) and return the shared backend ``clamd``, ``spamd`` or ``redis``."""
        if name in self._backend_errors:
            raise DaemonError(self._backend_errors[name])
        if name not in self._backends:
            try:
                self._backends[name] = self._start_backend(name)
            except (DaemonError, OSError, subprocess.SubprocessError) as exc:
                self._backend_errors[name] = f"{name}: {exc}"
                raise DaemonError(self._backend_errors[name]) from None
        return self._backends[name]

    def backend_port(self, name: str) -> int:
        """Port of a started backend."""
        return self.backend(name).port

    def backend_session(self, name: str) -> int:
        """Session id of a started backend."""
        daemon = self.backend(name)
        if isinstance(daemon, RedisInstance):
            if daemon.proc is None:
                raise DaemonError("redis not running")
            return daemon.proc.pid
        return daemon.session

    def _start_backend(self, name: str) -> Daemon | RedisInstance:
        d = self.subdir(name)
        port = free_port()
        if name == "redis":
            redis = RedisInstance(d, port)
            redis.start()
            return redis
        if name == "clamd":
            db = self.subdir("clamd/db")
            hexsig = subprocess.run(["sigtool", "--hex-dump"], input=EICAR, check=True,
                                    capture_output=True).stdout.decode().strip()
            (db / "bench.ndb").write_text(f"Bench.EICAR:0:*:{hexsig}\n")
            (d / "clamd.conf").write_text(tools.clamd_conf(d, port, db))
            daemon = Daemon("clamd", ["clamd", "-c", str(d / "clamd.conf")],
                            tools.Listen(port=port), d,
                            ready=lambda: banner_ok(port, b"PONG"))
        elif name == "spamd":
            daemon = Daemon("spamd", tools.spamd_argv(port, d / "spamd.pid"),
                            tools.Listen(port=port), d, timeout=120)
        else:
            raise DaemonError(f"unknown backend {name}")
        daemon.start()
        return daemon

    def stop(self) -> None:
        """Stop every backend and the DNS server; keep the directory for inspection."""
        for daemon in self._backends.values():
            with contextlib.suppress(Exception):
                daemon.stop()
        self._backends.clear()
        if self.dns is not None:
            stop = getattr(self.dns, "stop", None)
            if stop is not None:
                stop()
            self.dns = None


def write_files(base: Path, files: dict[str, str]) -> None:
    """Write ``relative path -> text`` below ``base`` (directories 0755)."""
    for rel, text in files.items():
        path = base / rel
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        path.write_text(text)


def chown_tree(path: Path, user: str) -> None:
    """``chown -R user:user`` (for daemons that drop privileges)."""
    subprocess.run(["chown", "-R", f"{user}:{user}", str(path)], check=True)


def argv_or_error(argv: Sequence[str]) -> list[str]:
    """``argv`` as a list, after checking its program is installed."""
    if shutil.which(argv[0]) is None:
        raise DaemonError(f"{argv[0]} not installed")
    return list(argv)
