"""POP3 retrieval (RFC 1939, STLS from RFC 2595, CAPA from RFC 2449) on top of poplib.

Owns ``Pop3Mailbox``. poplib is subclassed, never patched: lines are bounded by the account's
``max_line_length`` (poplib's own 2048-byte module limit would refuse real mail with long
lines), RETR is read by our own loop that stops at ``max_message_size``, STLS is required when
configured (no fallback when the server does not offer it) and any byte the server sends
between the STLS reply and the handshake fails the job. Every protocol problem becomes a
``FetchError`` with a plain message; the password never appears in one.
"""

from __future__ import annotations

import contextlib
import poplib
import re
import socket
import ssl
from typing import Any

from rohrpost.fetch.accounts import Account, FetchError
from rohrpost.fetch.remote import RemoteMessage, data_pending, describe, safe_uid

_NUM = re.compile(rb"^(\d{1,9}) (\S{1,200})$")


class _BoundedPop3(poplib.POP3):
    """poplib.POP3 with our line bound, bounded RETR and a strict STLS."""

    max_line = 1024 * 1024

    def __init__(self, host: str, port: int, timeout: float, max_line: int) -> None:
        self.max_line = max_line
        super().__init__(host, port, timeout)

    def _getline(self) -> tuple[bytes, int]:
        line = self.file.readline(self.max_line + 1)
        if len(line) > self.max_line:
            raise FetchError(f"POP3 server sent a line longer than {self.max_line} bytes")
        if not line:
            raise FetchError("POP3 server closed the connection")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        return line[:-1] if line.endswith(b"\n") else line, octets

    def _cmd(self, line: str) -> bytes:
        """One command with a one-line reply (poplib's private ``_shortcmd``, not in stubs)."""
        me: Any = self
        return bytes(me._shortcmd(line))

    def retr_bounded(self, which: str, limit: int) -> bytes:
        """RETR ``which``; FetchError when more than ``limit`` bytes arrive."""
        self._cmd(f"RETR {which}")
        out: list[bytes] = []
        total = 0
        while True:
            line, octets = self._getline()
            if line == b".":
                break
            if line.startswith(b".."):
                line = line[1:]
            total += octets
            if total > limit:
                raise FetchError(f"POP3 server sent more than max_message_size ({limit} bytes) "
                                 f"for message {which}: size announced by LIST was wrong")
            out.append(line)
        return b"\r\n".join(out) + b"\r\n"

    def stls_strict(self, context: ssl.SSLContext) -> None:
        """STLS or FetchError: not offered, refused, or data injected before the handshake."""
        try:
            caps = self.capa()
        except (poplib.error_proto, ValueError):
            caps = {}
        if "STLS" not in caps:
            raise FetchError("POP3 server does not offer STLS and tls = \"starttls\" requires "
                             "it; refusing to log in without TLS (STARTTLS stripping?)")
        self._cmd("STLS")
        if data_pending(self.sock, self.file):
            raise FetchError("POP3 server sent data after the STLS reply, before TLS started "
                             "(response injection); aborting")
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        self.file = self.sock.makefile("rb")
        self._tls_established = True


class _BoundedPop3Ssl(_BoundedPop3):
    """Implicit TLS (port 995): the socket is wrapped before the greeting is read."""

    def __init__(self, host: str, port: int, timeout: float, max_line: int,
                 context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(host, port, timeout, max_line)

    # poplib's private socket hook is not in the stubs; POP3_SSL overrides it the same way
    def _create_socket(self, timeout: float) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)  # type: ignore[misc]
        return self.context.wrap_socket(sock, server_hostname=self.host)


class Pop3Mailbox:
    """A logged-in POP3 session for one account (see ``rohrpost.fetch.remote.Mailbox``)."""

    protocol = "POP3"

    def __init__(self, acct: Account, password: str, context: ssl.SSLContext | None) -> None:
        self.acct = acct
        self.has_uidl = True
        try:
            self.conn = self._connect(acct, context)
        except (OSError, poplib.error_proto, ssl.SSLError) as exc:
            raise FetchError(f"POP3 {acct.label}: {describe(exc)}") from None
        try:
            self.conn.user(acct.user)
            self.conn.pass_(password)
        except poplib.error_proto as exc:
            self.close()
            raise FetchError(f"POP3 {acct.label}: login refused: {describe(exc)}") from None
        except (OSError, ssl.SSLError) as exc:
            self.close()
            raise FetchError(f"POP3 {acct.label}: {describe(exc)}") from None
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _connect(acct: Account, context: ssl.SSLContext | None) -> _BoundedPop3:
        host, port, timeout, max_line = acct.host, acct.real_port, acct.timeout, \
            acct.max_line_length
        if acct.tls == "implicit":
            if context is None:
                raise FetchError("implicit TLS needs a TLS context")
            return _BoundedPop3Ssl(host, port, timeout, max_line, context)
        conn = _BoundedPop3(host, port, timeout, max_line)
        if acct.tls == "starttls":
            if context is None:
                raise FetchError("STARTTLS needs a TLS context")
            try:
                conn.stls_strict(context)
            except BaseException:
                with contextlib.suppress(OSError):
                    conn.close()
                raise
        return conn

    def list_messages(self, folder: str) -> list[RemoteMessage]:
        """LIST for sizes and UIDL for keys (no UIDL: keys are empty, delete mode only)."""
        del folder
        try:
            _resp, lines, _octets = self.conn.list()
            sizes = dict(_pairs(lines, "LIST"))
            try:
                _resp, ulines, _octets = self.conn.uidl()
                uids = dict(_pairs(ulines, "UIDL"))
            except poplib.error_proto:
                self.has_uidl = False
                uids = {}
        except (OSError, poplib.error_proto) as exc:
            raise FetchError(f"POP3 {self.acct.label}: {describe(exc)}") from None
        out = []
        for num, size_text in sizes.items():
            if not size_text.isdigit() or len(size_text) > 15:
                raise FetchError(f"POP3 server announced a bogus size {size_text[:40]!r} for "
                                 f"message {num}")
            uid = uids.get(num, "")
            if self.has_uidl and not safe_uid(uid):
                raise FetchError(f"POP3 server gave message {num} a missing or bogus UIDL")
            out.append(RemoteMessage(f"uidl:{uid}" if uid else "", num, int(size_text)))
        return out

    def retrieve(self, msg: RemoteMessage) -> bytes:
        """RETR, bounded by ``max_message_size``."""
        try:
            return self.conn.retr_bounded(msg.ref, self.acct.max_message_size)
        except (OSError, poplib.error_proto) as exc:
            raise FetchError(f"POP3 RETR {msg.ref}: {describe(exc)}") from None

    def delete(self, msg: RemoteMessage) -> None:
        """DELE (the server removes it at QUIT)."""
        try:
            self.conn.dele(msg.ref)
        except (OSError, poplib.error_proto) as exc:
            raise FetchError(f"POP3 DELE {msg.ref}: {describe(exc)}") from None

    def end_folder(self, folder: str) -> None:
        """Nothing: POP3 deletes at QUIT."""
        del folder

    def close(self) -> None:
        """QUIT (commits DELEs) and close."""
        conn = getattr(self, "conn", None)
        if conn is None:
            return
        with contextlib.suppress(OSError, poplib.error_proto, FetchError, ssl.SSLError):
            conn.quit()
        with contextlib.suppress(OSError):
            conn.close()
        self.conn = None  # type: ignore[assignment]


def _pairs(lines: list[bytes], what: str) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        found = _NUM.match(line.strip())
        if not found:
            raise FetchError(f"POP3 server sent a malformed {what} line {line[:60]!r}")
        out.append((found.group(1).decode(), found.group(2).decode("ascii", "replace")))
    return out
