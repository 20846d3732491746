"""dkimpy's message split and canonicalization, byte for byte, without its per-call overhead.

Owns ``parse`` (what ``dkim.rfc822_parse`` returns), ``relaxed_body``/``simple_body``
(``dkim.canonicalization``'s ``canonicalize_body``), ``relaxed_header`` (one header of
``Relaxed.canonicalize_headers``) and ``HeaderError`` (dkimpy's ``MessageFormatError`` text).
Pure functions on bytes: no dkimpy, no crypto library; ``_dkim_verifier`` uses them in place of
dkimpy's own inside its verification (docs/performance.md, finding 20).

Every function returns exactly what dkimpy's returns, including for hostile input (lone CR or
LF, tabs, runs of white space, 8-bit bytes, no body, no header block); tests/dkim/
test_dkim_canon.py compares them with dkimpy's on generated messages. What makes them cheaper:

* ``parse`` splits only the header block into lines (dkimpy splits the whole message and joins
  the body's lines again with CRLF, which is the same as turning every bare LF into CRLF), and
  matches field names with a precompiled pattern (``re.match`` looks the pattern up per line).
* White space: dkimpy replaces every run of SP/HTAB by one SP with a pattern that stops at
  every single space of the text; here each HTAB becomes SP (``bytes.replace``) and then only
  runs of two or more SP are replaced, with a pattern whose literal prefix the engine finds
  fast (the result is the same), and nothing is done when the text has neither. Trailing
  white space before CRLF is removed after that step, when each such run has become exactly
  one SP, with ``bytes.replace``.
* ``strip_b`` empties ``b=`` as ``dkim.RE_BTAG`` does, with a pattern that matches the value
  in one pass instead of trying folding white space before each of its characters.
* A caller canonicalizes only the header fields a signature selects, not all of them.
"""

from __future__ import annotations

import re

__all__ = ["HeaderError", "parse", "relaxed_body", "relaxed_header", "simple_body", "strip_b"]

#: a LF that ends a header line and is followed by the empty line (or the message's end)
_EMPTY_AFTER_LF = re.compile(rb"\n(?:\r?\n|\Z)")
#: runs of two or more SP (a literal prefix: the pattern engine skips to each "  ")
_SPACES = re.compile(rb"  +")
#: ``dkim.RE_BTAG`` (``b=`` and its value, to empty it), written so that the engine matches the
#: value in one pass: dkimpy's optional folding white space before each base64 character is
#: any run of white space, so "any run of white space and base64 ending in base64" is the same
_BTAG = re.compile(rb"([;\s]b\s*=)(?:[\sa-zA-Z0-9+/=]*[a-zA-Z0-9+/=])?(?:\r?\n\Z)?")
#: the bytes a field name may contain (dkimpy: ``[\x21-\x7e]+?:``)
_NAME_BYTES = bytes(range(0x21, 0x7F))


class HeaderError(ValueError):
    """A header line dkimpy refuses; the message is dkimpy's ``MessageFormatError`` text."""


def _crlf(data: bytes) -> bytes:
    """Every LF, with or without a CR before it, as CRLF (dkimpy splits and joins lines)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """``dkim.rfc822_parse(message)``: ([[name, value + CRLF], ...], body with CRLF lines).

    :raises HeaderError: for a header line that is neither a field, a continuation nor an
        mbox ``From `` line (dkimpy's ``MessageFormatError``).
    :raises IndexError: for a continuation line before the first field, as dkimpy does.
    """
    if not message or message.startswith((b"\n", b"\r\n")):
        headers: list[list[bytes]] = []  # the first line is empty: no header fields
        rest = message
    else:
        m = _EMPTY_AFTER_LF.search(message)
        if m is None:  # no empty line: every line is a header line, and there is no body
            return _fields(message), b""
        start = m.start()
        # the LF ends the last header line (a CR before it belongs to that line end)
        cut = start - 1 if message[start - 1] == 0x0D else start
        headers, rest = _fields(message[:cut]), message[start + 1 :]
    # ``rest`` starts with the empty line: its line end, or nothing at the end of the message
    if rest.startswith(b"\r\n"):
        return headers, _crlf(rest[2:])
    if rest.startswith(b"\n"):
        return headers, _crlf(rest[1:])
    return headers, b""


def _lines(data: bytes) -> list[bytes]:
    """The lines as dkimpy splits them (at CRLF or LF: a CR before a LF ends the line)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data.split(b"\r\n")
    return data.replace(b"\r\n", b"\n").split(b"\n")


def _fields(head: bytes) -> list[list[bytes]]:
    """The header lines of ``head`` (no empty line in it) as dkimpy's [name, value] pairs."""
    headers: list[list[bytes]] = []
    for line in _lines(head):
        if line[0] in (0x09, 0x20):
            if not headers:
                raise IndexError("list index out of range")
            headers[-1][1] += line + b"\r\n"
            continue
        # the shortest non-empty run of printable bytes followed by a colon
        colon = line.find(b":", 1)
        if colon > 0 and not line[:colon].translate(None, _NAME_BYTES):
            headers.append([line[:colon], line[colon + 1 :] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise HeaderError(f"Unexpected characters in RFC822 header: {line!r}")
    return headers


def strip_b(value: bytes) -> bytes:
    """The signature header value with ``b=`` emptied, as ``dkim.RE_BTAG`` empties it."""
    return _BTAG.sub(b"\\1", value)


def _compress(data: bytes) -> bytes:
    """Every run of SP/HTAB as one SP (dkimpy's ``compress_whitespace``).

    HTAB to SP first (a run stays a run), then runs of SP to one SP.
    """
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    if b"  " in data:
        data = _SPACES.sub(b" ", data)
    return data


def _strip_trailing_lines(content: bytes) -> bytes:
    """One CRLF at the end, however many there were (dkimpy's ``strip_trailing_lines``)."""
    end = None
    while content.endswith(b"\r\n", 0, end):
        end = -2 if end is None else end - 2
    if end is None:
        return content + b"\r\n"
    end += 2
    if end == 0:
        return content
    return content[:end]


def simple_body(body: bytes) -> bytes:
    """``Simple.canonicalize_body``."""
    return _strip_trailing_lines(body)


def relaxed_body(body: bytes) -> bytes:
    """``Relaxed.canonicalize_body``.

    No white space at line ends, runs as one SP, one CRLF at the end, and an empty body for a
    body of only CRLFs.
    """
    body = _compress(body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    body = _strip_trailing_lines(body)
    return b"" if body == b"\r\n" else body


def relaxed_header(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    """One field of ``Relaxed.canonicalize_headers``.

    Lower-case name; the value unfolded, runs of white space as one SP, stripped, with CRLF.
    """
    if b"\n" in value:
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
    return name.lower().rstrip(), _compress(value).strip() + b"\r\n"
