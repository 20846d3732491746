"""What the fetch job needs from a mail server, and the socket checks both protocols share.

Owns ``RemoteMessage``, the ``Mailbox`` protocol that ``pop3.Pop3Mailbox`` and
``imap.ImapMailbox`` implement, ``data_pending`` (is there input the server sent before we
asked? used to refuse responses injected around STARTTLS) and ``wait_readable`` (for IMAP IDLE
without socket timeouts, which would leave a ``makefile`` reader unusable).
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Protocol

_UID_OK = frozenset(range(0x21, 0x7F))


@dataclass(frozen=True)
class RemoteMessage:
    """One message on the server.

    :param key: the seen key (``uidl:UID`` or ``imap:FOLDER:UIDVALIDITY:UID``), stable across
        sessions; ``""`` for a POP3 server without UIDL.
    :param ref: the protocol handle (POP3 message number, IMAP UID).
    :param size: the size the server announced.
    :param folder: the IMAP folder (``INBOX`` for POP3).
    """

    key: str
    ref: str
    size: int
    folder: str = "INBOX"


class Mailbox(Protocol):
    """A logged-in connection to one account."""

    protocol: str  # "POP3" or "IMAP", as written into Received

    def list_messages(self, folder: str) -> list[RemoteMessage]:
        """Every message in ``folder`` (POP3: the maildrop), oldest first."""
        ...

    def retrieve(self, msg: RemoteMessage) -> bytes:
        """The message's bytes (CRLF line ends), bounded by the account's size limit."""
        ...

    def delete(self, msg: RemoteMessage) -> None:
        r"""Mark for deletion (POP3 DELE, IMAP \\Deleted); takes effect at ``end_folder``/close."""
        ...

    def end_folder(self, folder: str) -> None:
        """Make the deletions in ``folder`` final where the protocol allows it (EXPUNGE)."""
        ...

    def close(self) -> None:
        """Log out (POP3 QUIT commits deletions) and close the connection; never raises."""
        ...


def safe_uid(text: str, limit: int = 200) -> bool:
    """True for a UID made of printable ASCII without spaces (RFC 1939 UIDL: 0x21-0x7E)."""
    return 0 < len(text) <= limit and all(ord(c) in _UID_OK for c in text)


def data_pending(sock: socket.socket, reader: Any) -> bool:
    """True when the server has already sent bytes we did not ask for (buffered or queued).

    ``reader`` is the connection's buffered ``makefile("rb")`` (typed ``Any`` because the
    stdlib stubs type it as a plain ``IO``). Checked right after a STARTTLS/STLS reply:
    anything there came before the TLS handshake and would be taken for a protected response
    (CVE-2011-0411 style injection).
    """
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(reader.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return False
    finally:
        sock.settimeout(timeout)


def wait_readable(sock: socket.socket, reader: Any, seconds: float) -> bool:
    """Wait up to ``seconds`` until a response byte can be read without blocking."""
    deadline = time.monotonic() + seconds
    while True:
        if data_pending(sock, reader):
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _w, _x = select.select([sock], [], [], min(left, 1.0))
        if ready and data_pending(sock, reader):
            return True
        if ready:  # TLS records without application data (session tickets): look again
            time.sleep(0.01)


def describe(exc: BaseException) -> str:
    """A short, password-free description of a connection or protocol error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}); use --ca FILE or ca_file"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    text = exc.args[0] if exc.args else type(exc).__name__
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{type(exc).__name__}: {str(text)[:200]}"
