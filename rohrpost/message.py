"""The message: raw bytes with headers kept exactly, MIME parsed lazily once.

Owns ``Message`` and ``Header``. Headers are split without any normalisation (order, case and
folding preserved, as DKIM needs); ``Message.mime`` parses the MIME tree on first use and caches
it for every later filter. An mbox ``From `` line in front of the headers (as procmail and
fetchmail hand it over) is kept apart in ``from_line`` and never counted as a header.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import TYPE_CHECKING

from rohrpost.record import FrozenRecord

if TYPE_CHECKING:
    import email.message

# The email package (parser, policy, header) is imported on first use: a pipeline whose
# filters only read headers never pays for it (about a quarter of a pipe-mode start).

_set = object.__setattr__


class Header(FrozenRecord):
    """One header field exactly as received.

    :param name: the field name as written (case preserved).
    :param raw: the whole field including name, colon, folding and the line end.
    """

    __slots__ = _fields = ("name", "raw")
    name: str
    raw: bytes

    def __init__(self, name: str, raw: bytes) -> None:
        _set(self, "name", name)
        _set(self, "raw", raw)

    @property
    def raw_value(self) -> bytes:
        """The bytes after the colon, folding kept, without the final line end."""
        value = self.raw.split(b":", 1)[1] if b":" in self.raw else b""
        return value.rstrip(b"\r\n")

    @property
    def value(self) -> str:
        """The unfolded value as text (8-bit bytes decoded as UTF-8 with replacement)."""
        text = self.raw_value.decode("utf-8", "replace")
        return text.replace("\r\n", "").replace("\n", "").strip()

    @property
    def decoded(self) -> str:
        """The value with RFC 2047 encoded words decoded (what a mail client shows)."""
        return decode_words(self.value)


def decode_words(text: str) -> str:
    """``text`` with RFC 2047 encoded words decoded; malformed words are left as they are."""
    if "=?" not in text:
        return text
    import email.header

    try:
        parts = email.header.decode_header(text)
    except Exception:  # noqa: BLE001 - malformed encoded words: show the raw text
        return text
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            try:
                out.append(chunk.decode(charset or "ascii", "replace"))
            except LookupError:
                out.append(chunk.decode("utf-8", "replace"))
        else:
            out.append(chunk)
    return "".join(out)


def _split(raw: bytes) -> tuple[bytes, list[Header], int]:
    """Split ``raw`` into mbox From_ line, headers and the offset where the body starts."""
    pos = 0
    from_line = b""
    if raw.startswith(b"From "):
        end = raw.find(b"\n")
        end = len(raw) if end < 0 else end + 1
        from_line, pos = raw[:end], end
    headers: list[Header] = []
    n = len(raw)
    while pos < n:
        end = raw.find(b"\n", pos)
        end = n if end < 0 else end + 1
        line = raw[pos:end]
        if line in (b"\r\n", b"\n"):
            return from_line, headers, end
        if line[:1] in (b" ", b"\t") and headers:
            last = headers[-1]
            headers[-1] = Header(last.name, last.raw + line)
        elif b":" in line:
            name = line.split(b":", 1)[0]
            if name.strip() != name or not name:
                # "Name :" or garbage: not a valid header, the header block ends here
                return from_line, headers, pos
            headers.append(Header(name.decode("ascii", "replace"), line))
        else:
            # a line without a colon ends the header block (RFC 5322 has no other reading)
            return from_line, headers, pos
        pos = end
    return from_line, headers, n


class Message:
    """An RFC 5322 message as bytes, with exact headers and lazily parsed MIME.

    Nothing here re-serializes: ``raw`` is what came in; writers build new bytes only when a
    change asks for it.
    """

    __slots__ = ("__dict__", "_body_offset", "from_line", "headers", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.from_line, self.headers, self._body_offset = _split(raw)

    @property
    def body(self) -> bytes:
        """The bytes after the blank line that ends the headers."""
        return self.raw[self._body_offset :]

    @property
    def header_bytes(self) -> bytes:
        """The header block exactly as received (without the mbox From_ line)."""
        return b"".join(h.raw for h in self.headers)

    @property
    def crlf(self) -> bool:
        """True when the message uses CRLF line ends (SMTP wire form)."""
        first = self.raw.find(b"\n")
        return first > 0 and self.raw[first - 1 : first] == b"\r"

    @property
    def size(self) -> int:
        """Size in bytes (without an mbox From_ line)."""
        return len(self.raw) - len(self.from_line)

    def get_all(self, name: str) -> list[Header]:
        """Every header called ``name`` (case-insensitive), in order."""
        return list(self._by_name.get(name.lower(), ()))

    @cached_property
    def _by_name(self) -> dict[str, list[Header]]:
        # Filters ask for ~25 header names per message; lower-casing every header name for
        # each question was a measurable part of the milter's per-message cost.
        index: dict[str, list[Header]] = {}
        for h in self.headers:
            index.setdefault(h.name.lower(), []).append(h)
        return index

    def get(self, name: str, default: str = "") -> str:
        """The unfolded value of the first header ``name``, or ``default``."""
        found = self.get_all(name)
        return found[0].value if found else default

    def __iter__(self) -> Iterator[Header]:
        return iter(self.headers)

    def without_from_line(self) -> bytes:
        """The message bytes without a leading mbox From_ line."""
        return self.raw[len(self.from_line) :]

    @cached_property
    def mime(self) -> email.message.Message:
        """The MIME tree, parsed once on first use (compat32: tolerant of broken input)."""
        import email.parser
        import email.policy

        parser = email.parser.BytesParser(policy=email.policy.compat32)
        return parser.parsebytes(self.without_from_line())

    @cached_property
    def text(self) -> str:
        """The text parts decoded and joined (for body rules), bounded by the message size."""
        chunks: list[str] = []
        for part in self.mime.walk():
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                charset = part.get_content_charset() or "utf-8"
                try:
                    chunks.append(payload.decode(charset, "replace"))
                except LookupError:
                    chunks.append(payload.decode("utf-8", "replace"))
        return "\n".join(chunks)
