r"""IMAP retrieval (RFC 3501, UIDPLUS RFC 4315, IDLE RFC 2177) on top of imaplib.

Owns ``ImapMailbox``. imaplib is subclassed, never patched: ``readline`` is bounded by
``max_line_length``, ``read`` refuses literals (``{N}``) above ``max_message_size`` before
reading a byte of them, STARTTLS is required when configured (no fallback), bytes injected
before the handshake fail the job, and capabilities and untagged data from before TLS are
thrown away. Messages are read with ``BODY.PEEK[]`` (no \\Seen flag) and keyed by UIDVALIDITY
and UID. IDLE is implemented here (imaplib has none before Python 3.14).
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
import threading
import time
from typing import Any

from rohrpost.fetch.accounts import Account, FetchError
from rohrpost.fetch.remote import RemoteMessage, data_pending, describe, wait_readable

_FETCH_RE = re.compile(rb"UID (\d+)")
_SIZE_RE = re.compile(rb"RFC822\.SIZE (\d+)")
_EXISTS_RE = re.compile(rb"^\* \d+ (EXISTS|RECENT)", re.IGNORECASE)
_MAX_UID = 2**32 - 1


class _BoundedImap(imaplib.IMAP4):
    """imaplib.IMAP4 with bounded lines and literals, optional implicit TLS."""

    def __init__(self, host: str, port: int, timeout: float, *, max_line: int,
                 max_literal: int, context: ssl.SSLContext | None) -> None:
        self.max_line, self.max_literal, self.implicit = max_line, max_literal, context
        super().__init__(host, port, timeout)

    # imaplib's private socket hook is not in the stubs; IMAP4_SSL overrides it the same way
    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock: socket.socket = super()._create_socket(timeout)  # type: ignore[misc]
        if self.implicit is not None:
            return self.implicit.wrap_socket(sock, server_hostname=self.host)
        return sock

    def readline(self) -> bytes:
        """One response line, at most ``max_line`` bytes."""
        reader: Any = self.file  # the stubs say IO[str] | IO[bytes]; it is makefile('rb')
        line: bytes = reader.readline(self.max_line + 1)
        if len(line) > self.max_line:
            raise FetchError(f"IMAP server sent a line longer than {self.max_line} bytes")
        return line

    def read(self, size: int) -> bytes:
        """A literal of ``size`` bytes; refused before reading when it is too large."""
        if size > self.max_literal:
            raise FetchError(f"IMAP server announced a literal of {size} bytes, more than "
                             f"max_message_size ({self.max_literal}); refusing to read it")
        reader: Any = self.file
        data: bytes = reader.read(size)
        if len(data) != size:
            raise FetchError("IMAP server closed the connection inside a literal")
        return data

    def starttls_strict(self, context: ssl.SSLContext) -> None:
        """STARTTLS or FetchError; never falls back to plain text."""
        if "STARTTLS" not in self.capabilities:
            raise FetchError("IMAP server does not offer STARTTLS and tls = \"starttls\" "
                             "requires it; refusing to log in without TLS (STARTTLS stripping?)")
        typ, _dat = self._simple_command("STARTTLS")
        if typ != "OK":
            raise FetchError("IMAP server refused STARTTLS")
        if data_pending(self.sock, self.file):
            raise FetchError("IMAP server sent data after the STARTTLS reply, before TLS "
                             "started (response injection); aborting")
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)
        self.file = self.sock.makefile("rb")
        self._tls_established = True
        self.untagged_responses.clear()
        self._get_capabilities()

    def idle_until(self, seconds: float, stop: threading.Event) -> bool:
        """IDLE until new mail (True), ``seconds`` pass or ``stop`` is set (False)."""
        tag = self._new_tag()
        self.send(tag + b" IDLE\r\n")
        line = self._get_line()
        if not line.startswith(b"+"):
            raise FetchError(f"IMAP server refused IDLE: {line[:100]!r}")
        deadline = time.monotonic() + seconds
        got = False
        while not stop.is_set() and time.monotonic() < deadline:
            if not wait_readable(self.sock, self.file, min(1.0, deadline - time.monotonic())):
                continue
            line = self._get_line()
            if _EXISTS_RE.match(line):
                got = True
                break
            if line.startswith(b"* BYE"):
                raise FetchError("IMAP server ended the IDLE session (BYE)")
        self.send(b"DONE\r\n")
        while True:
            line = self._get_line()
            if line.startswith(tag + b" "):
                if not line[len(tag) + 1:].upper().startswith(b"OK"):
                    raise FetchError(f"IMAP IDLE ended badly: {line[:100]!r}")
                del self.tagged_commands[tag]
                return got
            if _EXISTS_RE.match(line):
                got = True


def quote(name: str) -> str:
    """An IMAP quoted string (folder names)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    """A logged-in IMAP session for one account (see ``rohrpost.fetch.remote.Mailbox``)."""

    protocol = "IMAP"

    def __init__(self, acct: Account, password: str, context: ssl.SSLContext | None) -> None:
        self.acct = acct
        self.selected = ""
        self.deleted: list[str] = []
        try:
            self.conn = _BoundedImap(
                acct.host, acct.real_port, acct.timeout, max_line=acct.max_line_length,
                max_literal=acct.max_message_size,
                context=context if acct.tls == "implicit" else None)
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
            raise FetchError(f"IMAP {acct.label}: {describe(exc)}") from None
        try:
            if acct.tls == "starttls" and context is not None:
                self.conn.starttls_strict(context)
            self.conn.login(acct.user, password)
        except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
            self.close()
            raise FetchError(f"IMAP {acct.label}: {describe(exc)}") from None
        except BaseException:
            self.close()
            raise

    @property
    def can_idle(self) -> bool:
        """True when the server announced IDLE."""
        return "IDLE" in self.conn.capabilities

    def select(self, folder: str) -> tuple[int, int]:
        """SELECT ``folder``; return (UIDVALIDITY, number of messages)."""
        readonly = self.acct.keep and self.acct.on_reject == "keep"
        try:
            typ, data = self.conn.select(quote(folder), readonly=readonly)
            if typ != "OK":
                raise FetchError(f"IMAP cannot select folder {folder!r}: {data!r:.100}")
            _typ, validity = self.conn.response("UIDVALIDITY")
        except (OSError, imaplib.IMAP4.error) as exc:
            raise FetchError(f"IMAP SELECT {folder!r}: {describe(exc)}") from None
        value = validity[-1] if validity and validity[-1] is not None else b""
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
        if not text.isdigit() or not 0 < int(text) <= _MAX_UID:
            raise FetchError(f"IMAP folder {folder!r} has no valid UIDVALIDITY ({text[:40]!r})")
        count = data[0].decode("ascii", "replace") if data and isinstance(data[0], bytes) else ""
        if not count.isdigit():
            raise FetchError(f"IMAP SELECT {folder!r} gave a bogus message count")
        self.selected = folder
        return int(text), int(count)

    def list_messages(self, folder: str) -> list[RemoteMessage]:
        """UID and RFC822.SIZE of every message in ``folder``."""
        validity, count = self.select(folder)
        if count == 0:
            return []
        try:
            typ, data = self.conn.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
        except (OSError, imaplib.IMAP4.error) as exc:
            raise FetchError(f"IMAP FETCH sizes in {folder!r}: {describe(exc)}") from None
        if typ != "OK":
            raise FetchError(f"IMAP FETCH sizes in {folder!r} failed")
        out: dict[int, RemoteMessage] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not isinstance(line, bytes):
                continue
            uid, size = _FETCH_RE.search(line), _SIZE_RE.search(line)
            if uid is None or size is None or len(size.group(1)) > 15:
                raise FetchError(f"IMAP server sent a bogus FETCH line {line[:80]!r}")
            num = int(uid.group(1))
            if not 0 < num <= _MAX_UID:
                raise FetchError(f"IMAP server sent a bogus UID {num}")
            key = f"imap:{folder}:{validity}:{num}"
            out[num] = RemoteMessage(key, str(num), int(size.group(1)), folder)
        return [out[n] for n in sorted(out)]

    def retrieve(self, msg: RemoteMessage) -> bytes:
        r"""UID FETCH BODY.PEEK[] (leaves \\Seen alone); the literal is size-bounded."""
        if self.selected != msg.folder:
            self.select(msg.folder)
        try:
            typ, data = self.conn.uid("FETCH", msg.ref, "(BODY.PEEK[])")
        except (OSError, imaplib.IMAP4.error) as exc:
            raise FetchError(f"IMAP FETCH UID {msg.ref}: {describe(exc)}") from None
        for item in data if typ == "OK" else []:
            if isinstance(item, tuple) and b"BODY[]" in item[0].upper():
                found = _FETCH_RE.search(item[0])
                if found is not None and found.group(1).decode() != msg.ref:
                    raise FetchError(f"IMAP server answered UID {msg.ref} with another UID")
                return bytes(item[1])
        raise FetchError(f"IMAP message UID {msg.ref} in {msg.folder!r} vanished or is empty")

    def delete(self, msg: RemoteMessage) -> None:
        r"""Set \\Deleted; ``end_folder`` expunges."""
        if self.selected != msg.folder:
            self.select(msg.folder)
        try:
            typ, _data = self.conn.uid("STORE", msg.ref, "+FLAGS.SILENT", r"(\Deleted)")
        except (OSError, imaplib.IMAP4.error) as exc:
            raise FetchError(f"IMAP STORE \\Deleted UID {msg.ref}: {describe(exc)}") from None
        if typ != "OK":
            raise FetchError(f"IMAP server refused to flag UID {msg.ref} \\Deleted")
        self.deleted.append(msg.ref)

    def end_folder(self, folder: str) -> None:
        """UID EXPUNGE our messages (UIDPLUS), else EXPUNGE."""
        if not self.deleted or self.selected != folder:
            return
        uids, self.deleted = ",".join(self.deleted), []
        try:
            if "UIDPLUS" in self.conn.capabilities:
                self.conn.uid("EXPUNGE", uids)
            else:
                self.conn.expunge()
        except (OSError, imaplib.IMAP4.error) as exc:
            raise FetchError(f"IMAP EXPUNGE in {folder!r}: {describe(exc)}") from None

    def idle(self, folder: str, seconds: float, stop: threading.Event) -> bool:
        """Select ``folder`` and IDLE on it; True when new mail was announced."""
        if self.selected != folder:
            self.select(folder)
        try:
            return self.conn.idle_until(seconds, stop)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise FetchError(f"IMAP IDLE: {describe(exc)}") from None

    def close(self) -> None:
        """LOGOUT and close; never raises."""
        conn = getattr(self, "conn", None)
        if conn is None:
            return
        with contextlib.suppress(OSError, imaplib.IMAP4.error, FetchError, ssl.SSLError):
            conn.logout()
        with contextlib.suppress(OSError):
            conn.shutdown()
        self.conn = None  # type: ignore[assignment]
