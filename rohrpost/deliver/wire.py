"""A small SMTP/LMTP client connection: connect, send a command, read a (multi-line) reply.

Owns sockets, deadlines, reply parsing and dot-stuffing. smtplib is not used because its LMTP
class cannot return the per-recipient replies that follow DATA; this module reads exactly as
many replies as the caller asks for. Every read and write is bounded by one overall deadline.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass, field

from rohrpost.result import Reply

_MAX_LINE = 4096
_MAX_LINES = 200
_LINE_RE = re.compile(rb"^([2-5]\d\d)([ -])(.*?)\r?\n$", re.S)
_ENHANCED_RE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s*(.*)$", re.S)


class ProtocolError(OSError):
    """The server closed the connection, timed out or answered something that is not SMTP."""


@dataclass(frozen=True)
class ServerReply:
    """A complete server reply: the code and every text line, plus the parsed ``Reply``."""

    code: int
    lines: tuple[str, ...]

    @property
    def reply(self) -> Reply:
        """As a ``Reply``; the enhanced code comes from the first line or ``X.0.0``.

        Continuation lines that repeat the enhanced code (RFC 2034) lose the repetition.
        """
        first = self.lines[0] if self.lines else ""
        m = _ENHANCED_RE.match(first)
        klass = str(self.code // 100)
        if m and m.group(1)[0] == klass:
            enhanced, rest = m.group(1), m.group(2)
        else:
            enhanced, rest = f"{klass}.0.0", first
        more = [line.removeprefix(enhanced).strip() for line in self.lines[1:]]
        text = " ".join([rest, *more]).strip()
        return Reply(self.code, enhanced, text or "(no text)")

    @property
    def keywords(self) -> frozenset[str]:
        """EHLO/LHLO extension keywords (upper case), from every line but the first."""
        return frozenset(line.split(" ", 1)[0].upper() for line in self.lines[1:] if line)


@dataclass
class Connection:
    """One client connection with an overall ``deadline`` (``time.monotonic()`` value)."""

    sock: socket.socket
    deadline: float
    _buffer: bytes = field(default=b"", repr=False)

    @classmethod
    def open_tcp(cls, host: str, port: int, deadline: float) -> Connection:
        """Connect over TCP (IPv4 or IPv6)."""
        remaining = max(0.001, deadline - time.monotonic())
        return cls(socket.create_connection((host, port), timeout=remaining), deadline)

    @classmethod
    def open_unix(cls, path: str, deadline: float) -> Connection:
        """Connect to a unix-domain stream socket (e.g. Dovecot's ``lmtp`` socket)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            sock.connect(path)
        except BaseException:
            sock.close()
            raise
        return cls(sock, deadline)

    def _arm(self) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolError("timed out")
        self.sock.settimeout(remaining)

    def _readline(self) -> bytes:
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_LINE:
                raise ProtocolError("reply line too long")
            self._arm()
            chunk = self.sock.recv(8192)
            if not chunk:
                raise ProtocolError("connection closed by server")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def read_reply(self) -> ServerReply:
        """Read one complete (possibly multi-line) reply.

        :raises ProtocolError: on timeouts, a closed connection or a malformed reply.
        """
        lines: list[str] = []
        while len(lines) < _MAX_LINES:
            raw = self._readline()
            m = _LINE_RE.match(raw)
            if not m:
                raise ProtocolError(f"not an SMTP reply line: {raw[:80]!r}")
            lines.append(m.group(3).decode("utf-8", "replace"))
            if m.group(2) == b" ":
                return ServerReply(int(m.group(1)), tuple(lines))
        raise ProtocolError("reply has too many lines")

    def send(self, data: bytes) -> None:
        """Send ``data`` completely before the deadline."""
        view = memoryview(data)
        while view:
            self._arm()
            sent = self.sock.send(view)
            view = view[sent:]

    def command(self, line: str, *, utf8: bool = False) -> ServerReply:
        """Send one command line (CRLF added) and read its reply."""
        self.send(line.encode("utf-8" if utf8 else "ascii") + b"\r\n")
        return self.read_reply()

    def close(self) -> None:
        """Close the socket (no QUIT; see :meth:`quit`)."""
        self.sock.close()

    def quit(self) -> None:
        """Say QUIT politely and close; errors are irrelevant at this point."""
        try:
            self.send(b"QUIT\r\n")
            self.read_reply()
        except OSError:
            pass
        finally:
            self.close()


def dot_stuff(wire: bytes) -> bytes:
    """Dot-stuff CRLF message bytes and add the terminating ``.`` line."""
    stuffed = wire.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"
