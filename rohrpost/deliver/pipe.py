"""Delivery to a command, as Postfix pipe(8) does it, but never through a shell.

Owns running the command (argv from ``shlex``, message on stdin, SENDER/RECIPIENT in the
environment, its own process group so a timeout kills every child) and mapping its exit status
to a reply: 0 delivered; 75, 71, signals and timeouts temporary; 67 unknown user; 77 policy;
anything else permanent. The first line of stderr goes into the reply text, sanitized.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import IO

from rohrpost.envelope import Envelope
from rohrpost.result import Reply, safe_text

_STDERR_LIMIT = 4096
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "TZ", "HOME", "USER", "LOGNAME")

EXIT_REPLIES: Mapping[int, tuple[int, str, str]] = {
    0: (250, "2.0.0", "delivered"),
    75: (451, "4.3.0", "temporary failure"),
    71: (451, "4.3.0", "temporary failure (operating system error)"),
    67: (550, "5.1.1", "unknown user"),
    77: (550, "5.7.1", "permission denied"),
}


def pipe_environment(envelope: Envelope, base: Mapping[str, str]) -> dict[str, str]:
    """Build the command's environment.

    A few safe variables from ``base`` plus Postfix local(8)'s SENDER, RECIPIENT (the first
    recipient), CLIENT_ADDRESS, CLIENT_HELO, SASL_USERNAME and QUEUE_ID. NUL bytes (which exec
    refuses) are removed.
    """
    env = {k: base[k] for k in _PASSED_THROUGH if k in base}
    env.setdefault("PATH", _DEFAULT_PATH)
    env.update(
        SENDER=envelope.mail_from,
        RECIPIENT=envelope.rcpts[0] if envelope.rcpts else "",
        CLIENT_ADDRESS=envelope.client_ip,
        CLIENT_HELO=envelope.helo,
        SASL_USERNAME=envelope.auth_user,
        QUEUE_ID=envelope.queue_id,
    )
    return {k: v.replace("\x00", "") for k, v in env.items()}


def reply_for_status(status: int, stderr_line: str) -> Reply:
    """Map a command's exit status (negative: killed by that signal) to a reply."""
    if status < 0:
        code, enhanced, text = 451, "4.3.0", f"command killed by signal {-status}"
    else:
        default = (554, "5.3.0", f"command failed with exit status {status}")
        code, enhanced, text = EXIT_REPLIES.get(status, default)
    if stderr_line:
        text = f"{text}: {stderr_line}"
    return Reply(code, enhanced, text)


def _first_line(stream: IO[bytes]) -> str:
    stream.seek(0)
    head = stream.read(_STDERR_LIMIT).decode("utf-8", "replace")
    for line in head.splitlines():
        if line.strip():
            return safe_text(line.strip(), 200)
    return ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_pipe(
    argv: Sequence[str], raw: bytes, envelope: Envelope, *, timeout: float = 60.0
) -> Reply:
    """Run ``argv`` with ``raw`` on stdin and return the mapped reply.

    Never raises for delivery failures. stdout is discarded; stderr is kept (first 4 KiB) for
    the reply text.

    :param timeout: seconds before the whole process group is killed (451 4.4.7).
    """
    env = pipe_environment(envelope, os.environ)
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv list, no shell, by design
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                env=env, start_new_session=True, close_fds=True,
            )
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            return Reply(451, "4.3.5", f"cannot run {argv[0]!r}: {reason}")
        try:
            proc.communicate(raw, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return Reply(451, "4.4.7", f"command timed out after {timeout:g} s and was killed")
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        return reply_for_status(proc.returncode, _first_line(err))
