"""Delivery destinations: the ``DEST`` argument of ``rohrpost deliver`` as a typed value.

Owns ``Destination``, ``DestinationError`` and ``parse_destination``. It only parses and
validates text (and expands ``~``); it never touches the file system or the network (that is
the agents' job).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

KINDS = ("maildir", "mbox", "lmtp", "smtp", "pipe")

_EXAMPLES = {
    "maildir": "maildir:/home/alice/Maildir",
    "mbox": "mbox:/var/mail/alice",
    "lmtp": "lmtp:127.0.0.1:24, lmtp:[::1]:24 or lmtp:unix:/run/dovecot/lmtp",
    "smtp": "smtp:127.0.0.1:10026",
    "pipe": "pipe:/usr/bin/procmail -f- -a extra",
}


class DestinationError(ValueError):
    """A destination spec that cannot be used; the message says what is wrong, with an example."""


@dataclass(frozen=True)
class Destination:
    """Where a message goes.

    :param kind: one of ``maildir``, ``mbox``, ``lmtp``, ``smtp``, ``pipe``.
    :param path: the maildir or mbox path, or the unix socket path of ``lmtp:unix:PATH``.
    :param host: host name or address for ``lmtp``/``smtp`` over TCP (no brackets).
    :param port: TCP port for ``lmtp``/``smtp`` over TCP.
    :param argv: the command and its arguments for ``pipe`` (split by shlex, never a shell).
    :param folder: Maildir++ folder (e.g. ``"Junk"``) for ``maildir``; ``None`` is the inbox.
    """

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0
    argv: tuple[str, ...] = ()
    folder: str | None = None

    @property
    def is_unix_socket(self) -> bool:
        """True for ``lmtp:unix:PATH``."""
        return self.kind == "lmtp" and bool(self.path)

    def __str__(self) -> str:
        if self.kind in ("maildir", "mbox"):
            return f"{self.kind}:{self.path}"
        if self.kind == "pipe":
            return f"pipe:{shlex.join(self.argv)}"
        if self.is_unix_socket:
            return f"lmtp:unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}:{host}:{self.port}"


def _fail(kind: str, problem: str) -> DestinationError:
    example = _EXAMPLES.get(kind, ", ".join(_EXAMPLES.values()))
    return DestinationError(f"{problem} (example: {example})")


def _has_control(text: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


def _parse_port(kind: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _fail(kind, f"{kind}: port must be a number from 1 to 65535, got {text!r}")
    return int(text)


def _parse_hostport(kind: str, rest: str) -> Destination:
    """Parse ``HOST:PORT`` or ``[IPV6]:PORT``."""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0 or rest[end + 1 : end + 2] != ":":
            raise _fail(kind, f"{kind}: expected [IPV6]:PORT, got {rest!r}")
        host, port = rest[1:end], rest[end + 2 :]
    else:
        host, sep, port = rest.rpartition(":")
        if not sep:
            raise _fail(kind, f"{kind}: expected HOST:PORT, got {rest!r}")
        if ":" in host:
            raise _fail(kind, f"{kind}: write IPv6 addresses in brackets, got {rest!r}")
    if not host or any(ch.isspace() for ch in host) or _has_control(host):
        raise _fail(kind, f"{kind}: missing or invalid host in {rest!r}")
    return Destination(kind, host=host, port=_parse_port(kind, port))


def _parse_pipe(rest: str) -> Destination:
    try:
        argv = tuple(shlex.split(rest))
    except ValueError as exc:
        raise _fail("pipe", f"pipe: cannot split command {rest!r}: {exc}") from exc
    if not argv:
        raise _fail("pipe", "pipe: missing command")
    if any("\x00" in arg for arg in argv):
        raise _fail("pipe", "pipe: NUL byte in command")
    return Destination("pipe", argv=argv)


def parse_destination(spec: str) -> Destination:
    """Parse a destination spec such as ``maildir:/home/alice/Maildir`` or ``lmtp:[::1]:24``.

    Pipe commands are split with :func:`shlex.split` and later run without a shell, so shell
    syntax (``$(...)``, ``;``, ``|``) is passed to the command literally. A leading ``~`` in a
    maildir, mbox or socket path is the home folder (a shell leaves ``maildir:~/Maildir`` alone).

    :raises DestinationError: with what is wrong and an example of a valid spec.
    """
    kind, sep, rest = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or kind not in KINDS:
        raise _fail("", f"unknown destination {spec!r}: expected one of {', '.join(KINDS)}")
    if kind == "pipe":
        return _parse_pipe(rest)
    if kind in ("maildir", "mbox"):
        if not rest or "\x00" in rest or _has_control(rest):
            raise _fail(kind, f"{kind}: missing or invalid path in {spec!r}")
        return Destination(kind, path=os.path.expanduser(rest))
    if kind == "lmtp" and rest.startswith("unix:"):
        path = rest[len("unix:") :]
        if not path or _has_control(path):
            raise _fail(kind, f"lmtp: missing or invalid socket path in {spec!r}")
        return Destination(kind, path=os.path.expanduser(path))
    return _parse_hostport(kind, rest)
