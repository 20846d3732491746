"""Real mail daemons for integration tests, started in throwaway directories on loopback.

Every class here starts a real program from Debian's packages (Postfix, Dovecot, Redis) or an
in-process aiosmtpd server, on 127.0.0.1 and a free port, with all of its configuration, state
and logs inside one temporary directory. Nothing reads or writes /etc/postfix, /etc/dovecot or
a system service. Readiness is always a connect plus a banner or PING with a deadline, never a
fixed sleep. Each class is a context manager; ``stop()`` is idempotent and safe after a failed
``start()``.

Tricks needed to run these as root from a temporary directory (see the class docstrings):

* Directories: pytest's ``tmp_path`` lives under ``/tmp/pytest-of-root`` (mode 0700), which the
  unprivileged helper users (``postfix``, ``dovecot``, ``dovenull``, the mail user) cannot
  traverse. :func:`daemon_dir` makes a short 0755 directory under /tmp instead (short also
  because Unix socket paths are limited to 107 bytes).
* Postfix: ``postfix -c DIR`` is accepted without ``alternate_config_directories`` because the
  check in ``mail_conf.c`` only applies when the effective uid is not 0 (the same holds for
  ``postqueue -c``/``postsuper -c`` run as root). No /etc/postfix/main.cf is needed at all.
* Postfix ``maillog_file`` must start with one of ``maillog_file_prefixes`` (default ``/var,
  /dev/stdout``), so the temporary directory is added to that list, and master.cf needs the
  ``postlog unix-dgram ... postlogd`` service.
* Dovecot refuses mail access for uid 0 (and below ``first_valid_uid``), so mail is stored as
  ``nobody``/``nogroup`` and the mail directory is chowned to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import imaplib
import json
import os
import pwd
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiosmtpd.controller import Controller

LOOPBACK = "127.0.0.1"
DEFAULT_TIMEOUT = 20.0


class DaemonError(RuntimeError):
    """A daemon could not be found, started, or did not become ready in time."""


# --------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def daemon_dir(prefix: str) -> Path:
    """Make a fresh, world-traversable (0755) directory under /tmp for one daemon.

    Not pytest's ``tmp_path``: its parent is 0700 and the daemons' helper users must reach it.
    """
    path = Path(tempfile.mkdtemp(prefix=f"rp-{prefix}-", dir="/tmp"))
    path.chmod(0o755)
    return path


def require_binary(name: str, *candidates: str) -> str:
    """Return the path of an executable or raise :class:`DaemonError` naming the package."""
    for cand in (*candidates, name):
        if "/" in cand:
            if os.access(cand, os.X_OK):
                return cand
        elif found := shutil.which(cand):
            return found
    raise DaemonError(f"{name} not found: run scripts/install-deps.sh (Debian packages)")


def wait_until(check: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    """Call ``check`` until it returns True or ``timeout`` seconds pass (then DaemonError)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError as exc:  # not listening yet, connection reset, ...
            last = exc
        time.sleep(poll)
    raise DaemonError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def read_banner(port: int, prefix: bytes, timeout: float = 2.0) -> bool:
    """Connect to ``port`` on loopback and return True if the first line starts with ``prefix``."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(512)
            if not chunk:
                break
            data += chunk
        return data.startswith(prefix)


def run(cmd: Sequence[str], *, timeout: float = 30.0, env: Mapping[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, and raise DaemonError with that output on failure."""
    proc = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False,
        env=None if env is None else {**os.environ, **env},
    )
    if check and proc.returncode != 0:
        raise DaemonError(
            f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Terminate a process started in its own session, then kill its group if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class _Managed:
    """Context-manager plumbing shared by all daemons: ``with X(...) as x:`` starts and stops.

    Daemons with a ``log_file`` get ``log_text``; those with a ``proc`` get ``_alive`` (which
    turns an early exit into a ``DaemonError`` carrying the log).
    """

    def log_text(self) -> str:
        """The daemon's log so far ("" before it wrote one)."""
        path: Path | None = getattr(self, "log_file", None)
        if path is None:
            return ""
        try:
            return path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _alive(self) -> bool:
        proc: subprocess.Popen[bytes] | None = getattr(self, "proc", None)
        if proc is not None and proc.poll() is not None:
            raise DaemonError(f"{type(self).__name__} exited with {proc.returncode}:\n"
                              f"{self.log_text()}")
        return True

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# SMTP sinks


@dataclass(frozen=True)
class CaughtMessage:
    """One message received by :class:`MailCatcher`, with its envelope."""

    mail_from: str
    rcpts: tuple[str, ...]
    data: bytes
    peer: str = ""


class _CatcherHandler:
    """aiosmtpd handler that stores each message and answers with a configurable reply."""

    def __init__(self, owner: MailCatcher) -> None:
        self.owner = owner

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = CaughtMessage(
            mail_from=str(envelope.mail_from),
            rcpts=tuple(str(r) for r in envelope.rcpt_tos),
            data=bytes(envelope.original_content or envelope.content),
            peer=str(session.peer[0]) if session.peer else "",
        )
        self.owner._add(msg)
        return self.owner.reply


class MailCatcher(_Managed):
    """An aiosmtpd SMTP server on loopback that records every message for assertions.

    ``messages`` is a snapshot list; ``wait_for(n, timeout)`` blocks until ``n`` messages have
    arrived. Set ``reply`` (e.g. ``"451 4.3.0 try later"``) to make it refuse at end of DATA.
    """

    def __init__(self, port: int | None = None, reply: str = "250 2.0.0 OK caught") -> None:
        self.port = port or free_port()
        self.reply = reply
        self._messages: list[CaughtMessage] = []
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def _add(self, msg: CaughtMessage) -> None:
        with self._cond:
            self._messages.append(msg)
            self._cond.notify_all()

    @property
    def messages(self) -> list[CaughtMessage]:
        """Copy of the messages received so far, in arrival order."""
        with self._cond:
            return list(self._messages)

    def wait_for(self, n: int = 1, timeout: float = DEFAULT_TIMEOUT) -> list[CaughtMessage]:
        """Wait until at least ``n`` messages arrived; return them or raise AssertionError."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._messages) >= n, timeout=timeout):
                raise AssertionError(
                    f"MailCatcher on port {self.port}: expected {n} message(s) within "
                    f"{timeout}s, got {len(self._messages)}")
            return list(self._messages)

    def start(self) -> None:
        """Start the server thread; aiosmtpd waits until it answers."""
        self._controller = Controller(
            _CatcherHandler(self), hostname=LOOPBACK, port=self.port,
            loop=asyncio.new_event_loop(), ready_timeout=DEFAULT_TIMEOUT,
            decode_data=False, data_size_limit=0,
        )
        self._controller.start()

    def stop(self) -> None:
        """Stop the server thread (idempotent)."""
        if self._controller is not None:
            controller, self._controller = self._controller, None
            controller.stop()
            controller.loop.close()


class SmtpSink(_Managed):
    """Postfix's ``smtp-sink`` on loopback, dumping each message into ``dir`` (for benchmarks).

    Each file in ``dir`` holds one message with the envelope as X-Client-Addr/X-Helo-Args/
    X-Mail-Args/X-Rcpt-Args headers prepended by smtp-sink.
    """

    def __init__(self, directory: Path, port: int | None = None, backlog: int = 100) -> None:
        self.dir = Path(directory)
        self.port = port or free_port()
        self.backlog = backlog
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start smtp-sink and wait for its 220 banner."""
        binary = require_binary("smtp-sink", "/usr/sbin/smtp-sink")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "-u", "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name,
             "-d", f"{self.dir}/%H%M%S.", f"{LOOPBACK}:{self.port}", str(self.backlog)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_until(lambda: self._alive() and read_banner(self.port, b"220"), DEFAULT_TIMEOUT,
                   f"smtp-sink on port {self.port}")

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonError(f"smtp-sink exited with {self.proc.returncode}")
        return True

    def files(self) -> list[Path]:
        """Dumped message files, oldest first."""
        return sorted(p for p in self.dir.iterdir() if p.is_file())

    def stop(self) -> None:
        """Stop smtp-sink (idempotent)."""
        stop_process(self.proc)
        self.proc = None


# --------------------------------------------------------------------------------------------
# Postfix


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: numeric code and text."""

    code: int
    text: str

    @property
    def kind(self) -> int:
        """First digit of the code: 2 success, 3 intermediate, 4 temporary, 5 permanent."""
        return self.code // 100


@dataclass
class SendResult:
    """What an SMTP client was told at each stage of one transaction.

    Stages after the first refusal are None (or missing from ``rcpts``): ``banner`` is always
    set; ``mail`` unless the banner refused; ``data`` only if some recipient was accepted.
    """

    banner: Reply
    ehlo: Reply | None = None
    mail: Reply | None = None
    rcpts: list[Reply] = field(default_factory=list)
    data: Reply | None = None

    @property
    def final(self) -> Reply:
        """The last reply received: the one that decided the transaction."""
        for reply in (self.data, self.rcpts[-1] if self.rcpts else None, self.mail, self.ehlo):
            if reply is not None:
                return reply
        return self.banner

    @property
    def accepted(self) -> bool:
        """True when the message was queued (2xx at end of DATA)."""
        return self.data is not None and self.data.kind == 2


def smtp_send(port: int, mail_from: str, rcpts: Iterable[str], data: bytes, *,
              host: str = LOOPBACK, helo: str = "client.example.test",
              lmtp: bool = False, timeout: float = DEFAULT_TIMEOUT) -> SendResult:
    """Run one SMTP (or LMTP) transaction step by step and record every reply.

    Never raises for 4xx/5xx replies; only for network errors. For LMTP, ``data`` holds the
    first per-recipient reply after DATA (all recipients share one in our tests).
    """
    client: smtplib.SMTP = smtplib.LMTP() if lmtp else smtplib.SMTP(timeout=timeout)
    client.timeout = timeout
    try:
        code, text = client.connect(host, port)
    except smtplib.SMTPConnectError as exc:
        return SendResult(banner=Reply(exc.smtp_code, _txt(exc.smtp_error)))
    result = SendResult(banner=Reply(code, _txt(text)))
    try:
        if result.banner.kind != 2:
            return result
        code, text = client.ehlo(helo)  # LMTP.ehlo sends LHLO
        result.ehlo = Reply(code, _txt(text))
        if code != 250:
            return result
        code, text = client.mail(mail_from)
        result.mail = Reply(code, _txt(text))
        if code != 250:
            return result
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            result.rcpts.append(Reply(code, _txt(text)))
        if not any(r.code in (250, 251) for r in result.rcpts):
            return result
        try:
            code, data_text = client.data(data)
            result.data = Reply(code, _txt(data_text))
        except smtplib.SMTPDataError as exc:  # refused DATA itself (not 354)
            result.data = Reply(exc.smtp_code, _txt(exc.smtp_error))
        return result
    except smtplib.SMTPServerDisconnected as exc:
        # e.g. 421 then disconnect: record it on the stage that was running
        stage = Reply(421, f"disconnected: {exc}")
        if result.mail is None:
            result.mail = stage
        else:
            result.data = stage
        return result
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()


def _txt(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


# master.cf for a throwaway instance: no chroot anywhere (the queue directory is not a chroot
# jail), the smtpd listener and postlogd added by PostfixInstance.
_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance(_Managed):
    """A throwaway Postfix relaying everything to ``[127.0.0.1]:relay_port``.

    Layout under ``dir``: ``etc/`` (main.cf, master.cf: the config_directory), ``spool/``
    (queue_directory), ``data/`` (data_directory), ``maillog`` (maillog_file via postlogd).

    Modes: ``milters`` become ``smtpd_milters`` (and ``non_smtpd_milters``) with
    ``milter_default_action = tempfail``; ``content_filter=(host, port)`` sets
    ``content_filter = smtp:[host]:port`` and ``reinject_port`` adds the second smtpd from
    Postfix's FILTER_README that takes the filtered mail back without filters or milters.

    Runs only as root (Postfix's master must). Started with ``postfix -c DIR start``: as root
    no ``alternate_config_directories`` entry in /etc/postfix/main.cf is required.
    """

    def __init__(self, directory: Path, *, relay_port: int, milters: Sequence[str] = (),
                 content_filter: tuple[str, int] | None = None,
                 reinject_port: int | None = None, extra_main: Mapping[str, str] | None = None,
                 smtpd_port: int | None = None) -> None:
        self.dir = Path(directory)
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "spool"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "maillog"
        self.relay_port = relay_port
        self.milters = list(milters)
        self.content_filter = content_filter
        self.reinject_port = reinject_port
        self.extra_main = dict(extra_main or {})
        self.port = smtpd_port or free_port()
        self._started = False

    # -- configuration
    def main_cf(self) -> dict[str, str]:
        """The main.cf parameters this instance writes (``extra_main`` applied last)."""
        params = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.log_file),
            # postlogd only writes below these prefixes
            "maillog_file_prefixes": f"/var, /dev/stdout, {self.dir}",
            "syslog_name": f"postfix-{self.dir.name}",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "mx.rohrpost.test",
            "mydomain": "rohrpost.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "",
            "relayhost": f"[{LOOPBACK}]:{self.relay_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtp_tls_security_level": "none",
            "smtpd_tls_security_level": "none",
            "smtp_address_preference": "ipv4",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "maximal_queue_lifetime": "1h",
            "bounce_queue_lifetime": "1h",
            "smtp_connect_timeout": "5s",
            "milter_default_action": "tempfail",
            "milter_protocol": "6",
            "milter_connect_timeout": "5s",
            "smtpd_milters": " ".join(self.milters),
            "non_smtpd_milters": " ".join(self.milters),
            "biff": "no",
            "smtputf8_enable": "no",
            "message_size_limit": str(50 * 1024 * 1024),
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "200",
            "in_flow_delay": "0",
        }
        if self.content_filter is not None:
            host, port = self.content_filter
            params["content_filter"] = f"smtp:[{host}]:{port}"
        params.update(self.extra_main)
        return params

    def master_cf(self) -> str:
        """The master.cf text: base services, the smtpd listener, the reinjection listener."""
        text = _MASTER_CF + f"{LOOPBACK}:{self.port} inet n - n - - smtpd\n"
        if self.reinject_port is not None:
            # after-queue filter recipe from Postfix FILTER_README
            text += (
                f"{LOOPBACK}:{self.reinject_port} inet n - n - - smtpd\n"
                "  -o content_filter=\n"
                "  -o receive_override_options="
                "no_unknown_recipient_checks,no_header_body_checks,no_milters\n"
                "  -o smtpd_milters=\n"
                "  -o smtpd_helo_restrictions=\n"
                "  -o smtpd_client_restrictions=\n"
                "  -o smtpd_sender_restrictions=\n"
                "  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n"
                "  -o smtpd_relay_restrictions=permit_mynetworks,reject\n"
                f"  -o mynetworks=127.0.0.0/8\n"
                "  -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n"
            )
        return text

    def write_config(self) -> None:
        """Write main.cf and master.cf (owned by root, as Postfix expects)."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        main = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (self.config_dir / "main.cf").write_text(main)
        (self.config_dir / "master.cf").write_text(self.master_cf())

    # -- commands
    def _postfix(self, *args: str, timeout: float = 60.0,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([require_binary("postfix", "/usr/sbin/postfix"), "-c", str(self.config_dir),
                    *args], timeout=timeout, check=check)

    def postconf(self, *args: str) -> str:
        """Run ``postconf -c DIR ARGS`` and return its output."""
        return run([require_binary("postconf", "/usr/sbin/postconf"), "-c",
                    str(self.config_dir), *args]).stdout

    def start(self) -> None:
        """Write the configuration, create the queue, start master, wait for the 220 banner."""
        if os.geteuid() != 0:
            raise DaemonError("PostfixInstance needs root (Postfix's master runs as root)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.write_config()
        self.log_file.touch()
        # The postfix command chdir()s into queue_directory before anything else, so it must
        # exist (root-owned, 0755); its subdirectories come from post-install below.
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)
        # `postfix start` runs `postfix-script check-fatal`, i.e. `post-install create-missing`:
        # the queue subdirectories and data_directory get their owners on first start.
        self._postfix("start")
        self._started = True
        wait_until(lambda: read_banner(self.port, b"220"), DEFAULT_TIMEOUT,
                   f"Postfix smtpd on port {self.port} (log: {self.log_file})")
        if self.reinject_port is not None:
            port = self.reinject_port
            wait_until(lambda: read_banner(port, b"220"), DEFAULT_TIMEOUT,
                       f"Postfix reinjection smtpd on port {port}")

    def master_pid(self) -> int | None:
        """PID of the master daemon from ``spool/pid/master.pid``, if present."""
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """``postfix stop``, wait for master to exit; SIGKILL it if it does not (idempotent)."""
        if not self._started:
            return
        self._started = False
        pid = self.master_pid()
        self._postfix("stop", check=False)
        if pid is None:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.05)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def reload(self) -> None:
        """Rewrite the configuration files and ``postfix reload``."""
        self.write_config()
        self._postfix("reload")

    def flush(self) -> None:
        """``postqueue -f``: retry all deferred mail now."""
        run([require_binary("postqueue", "/usr/sbin/postqueue"), "-c", str(self.config_dir),
             "-f"])

    def queue(self) -> list[dict[str, Any]]:
        """The queue as ``postqueue -j`` reports it: one dict per message."""
        out = run([require_binary("postqueue", "/usr/sbin/postqueue"), "-c",
                   str(self.config_dir), "-j"]).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_ids(self) -> list[str]:
        """Queue IDs of all messages in the queue (active, deferred, hold, incoming)."""
        return [str(entry["queue_id"]) for entry in self.queue()]

    def wait_queue_empty(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the queue is empty (everything delivered or bounced)."""
        wait_until(lambda: not self.queue_ids(), timeout, "Postfix queue to drain")

    def wait_log(self, needle: str, timeout: float = DEFAULT_TIMEOUT) -> str:
        """Wait until ``needle`` appears in the maillog; return the log text."""
        wait_until(lambda: needle in self.log_text(), timeout, f"{needle!r} in {self.log_file}")
        return self.log_text()

    def send(self, mail_from: str, rcpts: Iterable[str], data: bytes,
             *, port: int | None = None) -> SendResult:
        """Send one message to this instance's smtpd (or ``port``) and return every reply."""
        return smtp_send(port or self.port, mail_from, rcpts, data)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still "exists"; treat it as gone when /proc says so
    try:
        return "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Dovecot


def make_self_signed_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """Create ``cert.pem``/``key.pem`` (RSA 2048, SAN localhost and 127.0.0.1) with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    run([require_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "2", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE"])
    key.chmod(0o600)
    return cert, key


class DovecotInstance(_Managed):
    """A throwaway Dovecot (LMTP, IMAP/IMAPS, POP3/POP3S) on loopback with TLS.

    ``users`` are names (password :attr:`PASSWORD`) or ``(name, password)`` pairs, stored in a
    passwd-file used as passdb and userdb. Mail is ``maildir:DIR/mail/%u/Maildir`` owned by
    ``nobody``/``nogroup`` when run as root (Dovecot refuses uid 0 for mail access), else by
    the current user. Ports: ``lmtp_port``, ``imap_port``, ``imaps_port``, ``pop3_port``,
    ``pop3s_port``. ``cert_file`` is the self-signed certificate, usable as the CA file.
    ``ssl_required=True`` sets ``ssl = required`` (no plaintext auth without TLS).
    ``auth_socket=True`` adds an auth ``unix_listener`` for Postfix's SASL (``smtpd_sasl_type =
    dovecot``, ``smtpd_sasl_path =`` :attr:`auth_socket_path`), owned by ``postfix`` as root.
    """

    PASSWORD = "secret"

    def __init__(self, directory: Path, users: Sequence[str | tuple[str, str]] = ("alice",), *,
                 lmtp: bool = True, imap: bool = True, pop3: bool = True, tls: bool = True,
                 ssl_required: bool = False, auth_socket: bool = False) -> None:
        self.dir = Path(directory)
        self.auth_socket = auth_socket
        self.auth_socket_path = self.dir / "run" / "auth-postfix"
        self.users: dict[str, str] = {}
        for user in users:
            name, pw = (user, self.PASSWORD) if isinstance(user, str) else user
            self.users[name] = pw
        self.lmtp, self.imap, self.pop3, self.tls = lmtp, imap, pop3, tls
        self.ssl_required = ssl_required
        self.lmtp_port = free_port() if lmtp else None
        self.imap_port = free_port() if imap else None
        self.imaps_port = free_port() if imap and tls else None
        self.pop3_port = free_port() if pop3 else None
        self.pop3s_port = free_port() if pop3 and tls else None
        self.config_file = self.dir / "dovecot.conf"
        self.log_file = self.dir / "dovecot.log"
        self.mail_dir = self.dir / "mail"
        self.cert_file = self.dir / "cert.pem"
        self.key_file = self.dir / "key.pem"
        self.proc: subprocess.Popen[bytes] | None = None
        if os.geteuid() == 0:
            self.mail_uid = pwd.getpwnam("nobody").pw_uid
            self.mail_gid = grp.getgrnam("nogroup").gr_gid
        else:
            self.mail_uid, self.mail_gid = os.geteuid(), os.getegid()

    def maildir_of(self, user: str) -> Path:
        """The Maildir of ``user`` (may not exist before the first delivery)."""
        return self.mail_dir / user / "Maildir"

    def config_text(self) -> str:
        """The dovecot.conf this instance writes."""
        d = self.dir
        protocols = [p for p, on in (("imap", self.imap), ("pop3", self.pop3),
                                     ("lmtp", self.lmtp)) if on]
        lines = [
            f"base_dir = {d}/run",
            f"state_dir = {d}/state",
            f"log_path = {self.log_file}",
            f"info_log_path = {self.log_file}",
            f"protocols = {' '.join(protocols)}",
            f"listen = {LOOPBACK}",
            "ssl = " + ("no" if not self.tls else "required" if self.ssl_required else "yes"),
            "auth_mechanisms = plain login",
            "disable_plaintext_auth = " + ("yes" if self.ssl_required else "no"),
            f"mail_location = maildir:{self.mail_dir}/%u/Maildir",
            f"first_valid_uid = {min(self.mail_uid, 500)}",
            f"first_valid_gid = {min(self.mail_gid, 500)}",
            "mail_privileged_group =",
            "lmtp_save_to_detail_mailbox = no",
            "recipient_delimiter =",
            "lda_mailbox_autocreate = yes",
            "postmaster_address = postmaster@rohrpost.test",
            "hostname = mx.rohrpost.test",
            "passdb {",
            "  driver = passwd-file",
            f"  args = scheme=PLAIN username_format=%u {d}/passwd",
            "}",
            "userdb {",
            "  driver = passwd-file",
            f"  args = username_format=%u {d}/passwd",
            "}",
        ]
        if os.geteuid() != 0:
            me = pwd.getpwuid(os.geteuid()).pw_name
            lines += [f"default_internal_user = {me}", f"default_login_user = {me}"]
        if self.tls:
            lines += [f"ssl_cert = <{self.cert_file}", f"ssl_key = <{self.key_file}"]

        def service(name: str, listeners: list[tuple[str, int | None, bool]]) -> list[str]:
            out = [f"service {name} {{"]
            for lname, port, is_ssl in listeners:
                out += [f"  inet_listener {lname} {{", f"    address = {LOOPBACK}",
                        f"    port = {port or 0}"]
                if is_ssl:
                    out.append("    ssl = yes")
                out.append("  }")
            return [*out, "}"]

        lines += service("imap-login", [("imap", self.imap_port, False),
                                        ("imaps", self.imaps_port, True)])
        lines += service("pop3-login", [("pop3", self.pop3_port, False),
                                        ("pop3s", self.pop3s_port, True)])
        lines += service("lmtp", [("lmtp", self.lmtp_port, False)])
        if self.auth_socket:
            owner = (["    user = postfix", "    group = postfix", "    mode = 0660"]
                     if os.geteuid() == 0 else ["    mode = 0600"])
            lines += ["service auth {", f"  unix_listener {self.auth_socket_path.name} {{",
                      *owner, "  }", "}"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Write config, users and cert, run ``dovecot -F -c FILE``, wait for the banners."""
        binary = require_binary("dovecot", "/usr/sbin/dovecot")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.mail_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.mail_dir, self.mail_uid, self.mail_gid)
        if self.tls:
            make_self_signed_cert(self.dir)
        passwd = "".join(
            f"{name}:{{PLAIN}}{pw}:{self.mail_uid}:{self.mail_gid}::{self.mail_dir / name}::\n"
            for name, pw in self.users.items())
        (self.dir / "passwd").write_text(passwd)
        (self.dir / "passwd").chmod(0o644)
        self.config_file.write_text(self.config_text())
        self.log_file.touch()
        self.proc = subprocess.Popen(
            [binary, "-F", "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        checks = [(self.lmtp_port, b"220"), (self.imap_port, b"* OK"), (self.pop3_port, b"+OK")]
        for port, prefix in checks:
            if port is not None:
                self._wait_banner(port, prefix)
        if self.auth_socket:
            wait_until(lambda: self._alive() and self.auth_socket_path.is_socket(),
                       DEFAULT_TIMEOUT, f"Dovecot auth socket {self.auth_socket_path}")

    def _wait_banner(self, port: int, prefix: bytes) -> None:
        wait_until(lambda: self._alive() and read_banner(port, prefix), DEFAULT_TIMEOUT,
                   f"Dovecot on port {port} (log: {self.log_file})")

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise DaemonError(f"dovecot exited with {self.proc.returncode}: {err}\n"
                              f"{self.log_text()[-2000:]}")
        return True

    def stop(self) -> None:
        """Stop dovecot (SIGTERM to its process group, SIGKILL on timeout; idempotent)."""
        stop_process(self.proc)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts exactly this instance's self-signed cert."""
        return ssl.create_default_context(cafile=str(self.cert_file))

    def imap_fetch_all(self, user: str, password: str | None = None,
                       folder: str = "INBOX") -> list[bytes]:
        """Log in over IMAPS (verifying the cert) and return every message in ``folder``."""
        if self.imaps_port is None:
            raise DaemonError("this DovecotInstance has no IMAPS listener")
        imap = imaplib.IMAP4_SSL(LOOPBACK, self.imaps_port, ssl_context=self.ssl_context(),
                                 timeout=DEFAULT_TIMEOUT)
        try:
            imap.login(user, password if password is not None else self.users[user])
            typ, _ = imap.select(folder, readonly=True)
            if typ != "OK":
                raise DaemonError(f"IMAP SELECT {folder} failed for {user}")
            typ, data = imap.search(None, "ALL")
            out: list[bytes] = []
            for num in data[0].split():
                typ, parts = imap.fetch(num.decode(), "(BODY.PEEK[])")
                for part in parts:
                    if isinstance(part, tuple):
                        out.append(bytes(part[1]))
            return out
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def lmtp_send(self, mail_from: str, rcpts: Iterable[str], data: bytes) -> SendResult:
        """Deliver one message over LMTP (TCP) and return every reply."""
        if self.lmtp_port is None:
            raise DaemonError("this DovecotInstance has no LMTP listener")
        return smtp_send(self.lmtp_port, mail_from, rcpts, data, lmtp=True)


# --------------------------------------------------------------------------------------------
# Redis


def redis_ping(port: int, timeout: float = 2.0) -> bool:
    """Send a RESP ``PING`` to 127.0.0.1:port and return True on ``+PONG``."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class RedisInstance(_Managed):
    """``redis-server`` on loopback and a free port, no persistence, log in ``dir``."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = Path(directory)
        self.port = port or free_port()
        self.log_file = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        """Start redis-server in the foreground and wait for PONG."""
        binary = require_binary("redis-server", "/usr/bin/redis-server")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--bind", LOOPBACK, "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
             "--logfile", str(self.log_file), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_until(lambda: self._alive() and redis_ping(self.port), DEFAULT_TIMEOUT,
                   f"redis-server on port {self.port} (log: {self.log_file})")

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonError(f"redis-server exited with {self.proc.returncode}")
        return True

    def stop(self) -> None:
        """Stop redis-server (idempotent)."""
        stop_process(self.proc)
        self.proc = None


# --------------------------------------------------------------------------------------------
# SpamAssassin spamd


def spamd_ping(port: int, timeout: float = 2.0) -> bool:
    """Send ``PING SPAMC/1.5`` to 127.0.0.1:port and return True on ``SPAMD/1.5 0 PONG``."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(b"PING SPAMC/1.5\r\n\r\n")
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(256)
            if not chunk:
                break
            data += chunk
        return data.startswith(b"SPAMD/") and b" 0 PONG" in data


class SpamdInstance(_Managed):
    """SpamAssassin's ``spamd`` on loopback with its own Bayes database in ``dir``.

    Local tests only (``-L``: no DNS, no network rules), no user configuration (``-x``),
    learning allowed (``--allow-tell``), Bayes on with auto-learn off so that only TELL
    changes it. As root spamd must drop privileges (``-u nobody``), so ``dir`` and the Bayes
    folder are chowned to that user and ``-H`` points its helper home there. The system's site
    rules (/usr/share/spamassassin, /etc/spamassassin) are used read-only; the Bayes settings
    come in as ``--cf`` lines, never through a file under /etc.
    """

    def __init__(self, directory: Path, port: int | None = None, max_children: int = 2,
                 user: str = "nobody") -> None:
        self.dir = Path(directory)
        self.port = port or free_port()
        self.max_children = max_children
        self.user = user
        self.bayes_dir = self.dir / "bayes"
        self.log_file = self.dir / "spamd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        """Start spamd in the foreground and wait until it answers PONG."""
        binary = require_binary("spamd", "/usr/sbin/spamd")
        self.bayes_dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        cmd = [binary, "--listen", f"{LOOPBACK}:{self.port}", "-L", "-x", "--allow-tell",
               "--max-children", str(self.max_children), "-H", str(self.dir),
               "--syslog=stderr", "--cf", "use_bayes 1", "--cf", "bayes_auto_learn 0",
               "--cf", f"bayes_path {self.bayes_dir}/bayes", "--cf", "lock_method flock"]
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            for path in (self.dir, self.bayes_dir):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            cmd += ["-u", self.user]
        self._log = self.log_file.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     cwd=self.dir)
        wait_until(lambda: self._alive() and spamd_ping(self.port), 60.0,
                   f"spamd on port {self.port} (log: {self.log_file})", poll=0.1)

    def stop(self) -> None:
        """Stop spamd and its children (idempotent)."""
        stop_process(self.proc)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


# --------------------------------------------------------------------------------------------
# ClamAV clamd

EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
CLAMAV_TESTFILES = Path("/usr/share/clamav-testfiles")


def clamd_ping(port: int, timeout: float = 2.0) -> bool:
    """Send ``zPING`` to 127.0.0.1:port and return True on ``PONG``."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(b"zPING\0")
        return sock.recv(64).startswith(b"PONG")


class ClamdInstance(_Managed):
    """ClamAV's ``clamd`` on loopback (TCP and a unix socket) with an offline signature database.

    freshclam cannot download here, so ``start`` builds the database with ``sigtool``: an
    ``.ndb`` body signature ``Eicar-Test-Signature`` for the EICAR string anywhere in a file,
    and an ``.hdb`` MD5 signature of /usr/share/clamav-testfiles/clam.exe named
    ``ClamAV-Test-File`` (clamd unpacks the other test files and matches the inner clam.exe).
    clamd appends ``.UNOFFICIAL`` to the names of such local signatures.
    ``stream_max_length`` is clamd's StreamMaxLength (INSTREAM limit), in bytes.
    """

    def __init__(self, directory: Path, port: int | None = None,
                 stream_max_length: int = 25 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.port = port or free_port()
        self.stream_max_length = stream_max_length
        self.db_dir = self.dir / "db"
        self.socket_path = self.dir / "clamd.sock"
        self.config_file = self.dir / "clamd.conf"
        self.log_file = self.dir / "clamd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tcp(self) -> str:
        """``tcp:127.0.0.1:PORT`` for the clamav filter's ``socket`` option."""
        return f"tcp:{LOOPBACK}:{self.port}"

    @property
    def unix(self) -> str:
        """``unix:PATH`` for the clamav filter's ``socket`` option."""
        return f"unix:{self.socket_path}"

    def build_database(self) -> None:
        """Write test.hdb (sigtool --md5 of clam.exe) and eicar.ndb (sigtool --hex-dump)."""
        sigtool = require_binary("sigtool", "/usr/bin/sigtool")
        self.db_dir.mkdir(parents=True, exist_ok=True)
        clam_exe = CLAMAV_TESTFILES / "clam.exe"
        if not clam_exe.is_file():
            raise DaemonError(f"{clam_exe} missing: install Debian's clamav-testfiles")
        md5 = run([sigtool, "--md5", str(clam_exe)]).stdout.strip()
        digest, size, _name = md5.split(":", 2)
        (self.db_dir / "test.hdb").write_text(f"{digest}:{size}:ClamAV-Test-File\n")
        hexed = subprocess.run([sigtool, "--hex-dump"], input=EICAR, capture_output=True,
                               check=True, timeout=30).stdout.decode().strip()
        (self.db_dir / "eicar.ndb").write_text(f"Eicar-Test-Signature:0:*:{hexed}\n")

    def config_text(self) -> str:
        """clamd.conf for this instance."""
        lines = {
            "Foreground": "true", "TCPSocket": str(self.port), "TCPAddr": LOOPBACK,
            "LocalSocket": str(self.socket_path), "DatabaseDirectory": str(self.db_dir),
            "LogFile": str(self.log_file), "PidFile": str(self.dir / "clamd.pid"),
            "TemporaryDirectory": str(self.dir),
            "StreamMaxLength": str(self.stream_max_length), "MaxRecursion": "16",
            "ScanArchive": "yes", "ScanMail": "yes", "ScanPE": "yes", "ScanOLE2": "yes",
            "ScanPDF": "yes", "SelfCheck": "0",
        }
        if os.geteuid() == 0:
            lines["User"] = "root"
        return "".join(f"{k} {v}\n" for k, v in lines.items())

    def start(self) -> None:
        """Build the database, write clamd.conf, start clamd, wait for PONG (up to 60 s)."""
        binary = require_binary("clamd", "/usr/sbin/clamd")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.build_database()
        self.config_file.write_text(self.config_text())
        self.proc = subprocess.Popen([binary, "-c", str(self.config_file)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: self._alive() and clamd_ping(self.port), 60.0,
                   f"clamd on port {self.port} (log: {self.log_file})", poll=0.1)

    def stop(self) -> None:
        """Stop clamd (idempotent)."""
        stop_process(self.proc)
        self.proc = None
