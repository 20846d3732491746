"""Message bytes as local mailbox files want them.

Owns the transformations shared by the maildir and mbox agents: drop a leading mbox ``From ``
line, turn CRLF into LF (local files use LF, as Postfix local(8) and Dovecot write them), and
prepend ``Return-Path:``/``Delivered-To:`` trace headers. Also converts to CRLF wire form for
LMTP/SMTP. Pure functions on bytes; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CONTROL_RE = re.compile(rb"[\x00-\x1f\x7f]")


def strip_from_line(raw: bytes) -> bytes:
    """Remove a leading mbox ``From sender date`` line, if any."""
    if raw.startswith(b"From "):
        end = raw.find(b"\n")
        return b"" if end < 0 else raw[end + 1 :]
    return raw


def to_lf(raw: bytes) -> bytes:
    """Turn CRLF line ends into LF; lone CR bytes stay as they are."""
    return raw.replace(b"\r\n", b"\n")


def to_crlf(raw: bytes) -> bytes:
    """Turn LF or CRLF line ends into CRLF (the SMTP/LMTP wire form)."""
    return to_lf(raw).replace(b"\n", b"\r\n")


def header_safe_address(addr: str) -> bytes:
    """Encode an address for a trace header: UTF-8, control characters removed.

    Envelope values come from SMTP clients; removing CR, LF and NUL makes header injection
    impossible.
    """
    try:
        data = addr.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        data = addr.encode("utf-8", "replace")
    return _CONTROL_RE.sub(b"", data)


def trace_headers(sender: str | None, rcpts: Sequence[str]) -> bytes:
    """Build the trace headers that go on top of a locally delivered message.

    ``Return-Path: <sender>`` (when ``sender`` is not None) and one ``Delivered-To:`` line per
    non-empty recipient, LF-terminated, in that order (as Postfix local(8) does).
    """
    lines = []
    if sender is not None:
        lines.append(b"Return-Path: <" + header_safe_address(sender) + b">\n")
    lines.extend(b"Delivered-To: " + header_safe_address(r) + b"\n" for r in rcpts if r)
    return b"".join(lines)


def local_form(raw: bytes, sender: str | None = None, rcpts: Sequence[str] = ()) -> bytes:
    """Return what a local mailbox file gets: no From_ line, LF line ends, trace headers on top."""
    return trace_headers(sender, rcpts) + to_lf(strip_from_line(raw))


def wire_form(raw: bytes) -> bytes:
    """Return what LMTP/SMTP carry before dot-stuffing: no From_ line, CRLF line ends."""
    return to_crlf(strip_from_line(raw))


def is_8bit(raw: bytes) -> bool:
    """Tell whether the message has any byte above 0x7F (so it needs ``BODY=8BITMIME``)."""
    return not raw.isascii()
