"""Message bytes as local mailbox files want them.

Owns the transformations shared by the maildir and mbox agents: drop a leading mbox ``From ``
line, turn CRLF into LF (local files use LF, as Postfix local(8) and Dovecot write them), and
prepend ``Return-Path:``/``Delivered-To:`` trace headers without repeating the ones already on
top (Postfix pipe(8) ``flags=DR`` and local(8) before procmail put them there). Also converts
to CRLF wire form for LMTP/SMTP. Pure functions on bytes; no I/O.
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


_TRACE_NAMES = (b"return-path", b"delivered-to", b"x-original-to")


def _leading_trace(data: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Split the header fields at the very top that a delivery agent writes from the rest.

    Returns ``[(lower-case name, whole field with its line end)]`` for the leading
    Return-Path/Delivered-To/X-Original-To fields (folded lines included) and the remainder.
    """
    fields: list[tuple[bytes, bytes]] = []
    pos = 0
    while True:
        colon = data.find(b":", pos)
        end = data.find(b"\n", pos)
        if colon < 0 or end < 0 or colon > end:
            break
        name = data[pos:colon].strip().lower()
        if name not in _TRACE_NAMES:
            break
        while data[end + 1 : end + 2] in (b" ", b"\t"):  # folded continuation
            nxt = data.find(b"\n", end + 1)
            if nxt < 0:
                break
            end = nxt
        fields.append((name, data[pos : end + 1]))
        pos = end + 1
    return fields, data[pos:]


def _value(field: bytes) -> bytes:
    return b" ".join(field.split(b":", 1)[1].split()).lower()


def local_form(raw: bytes, sender: str | None = None, rcpts: Sequence[str] = ()) -> bytes:
    """Return what a local mailbox file gets: no From_ line, LF line ends, trace headers on top.

    A ``Return-Path`` already on top is replaced by the envelope's (when ``sender`` is known),
    and a recipient that already has a ``Delivered-To`` there gets no second one.
    """
    body = to_lf(strip_from_line(raw))
    if sender is None and not rcpts:
        return body
    block, rest = _leading_trace(body)
    if sender is not None:
        block = [(name, f) for name, f in block if name != b"return-path"]
    present = {_value(f) for name, f in block if name == b"delivered-to"}
    new = [r for r in rcpts if r and _value(b":" + header_safe_address(r)) not in present]
    return trace_headers(sender, new) + b"".join(f for _n, f in block) + rest


def wire_form(raw: bytes) -> bytes:
    """Return what LMTP/SMTP carry before dot-stuffing: no From_ line, CRLF line ends."""
    return to_crlf(strip_from_line(raw))


def is_8bit(raw: bytes) -> bool:
    """Tell whether the message has any byte above 0x7F (so it needs ``BODY=8BITMIME``)."""
    return not raw.isascii()
