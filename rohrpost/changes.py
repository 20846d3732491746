"""Changes a filter asks for: the only way a filter alters a message or its envelope.

Owns the change value types. Applying them is done per mode: ``rohrpost.apply`` rewrites
bytes (pipe and SMTP modes), the milter adapter maps them to libmilter calls. Header names and
values are validated here so that nothing a filter returns can inject a header or break folding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME_RE = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ":"
_OTHER_BAD_RE = re.compile(r"[\x00\u2028\u2029\x85\x0b\x0c]")
_BARE_LF_RE = re.compile(r"\n(?![ \t])")
_EMPTY_FOLD_RE = re.compile(r"\n[ \t]*(?=\n|$)")


class ChangeError(ValueError):
    """A change that cannot be applied safely (bad header name or value)."""


def check_header_name(name: str) -> str:
    """Return ``name`` when it is a valid header field name, else raise ``ChangeError``."""
    if not name or len(name) > 100 or not _NAME_RE.match(name):
        raise ChangeError(f"invalid header name {name!r}")
    return name


def clean_header_value(value: str) -> str:
    r"""Return ``value`` safe to write as one header field.

    NUL and Unicode line separators become spaces; a line break is kept only as an explicit
    fold (followed by a space or tab, as in ``";\n\t"`` of Authentication-Results), any other
    CR or LF becomes a space, and whitespace-only continuation lines are dropped. A value can
    therefore never start a new header line or end the header block.
    """
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = _OTHER_BAD_RE.sub(" ", value)
    value = _BARE_LF_RE.sub(" ", value)
    value = _EMPTY_FOLD_RE.sub("", value)
    return value.strip()


@dataclass(frozen=True, slots=True)
class AddHeader:
    """Append a header at the end of the header block."""

    name: str
    value: str

    def __post_init__(self) -> None:
        check_header_name(self.name)
        object.__setattr__(self, "value", clean_header_value(self.value))


@dataclass(frozen=True, slots=True)
class InsertHeader:
    """Insert a header before the header at ``index`` (0 = first line, like milter's 1)."""

    index: int
    name: str
    value: str

    def __post_init__(self) -> None:
        check_header_name(self.name)
        object.__setattr__(self, "value", clean_header_value(self.value))
        if self.index < 0:
            raise ChangeError("insert index must be >= 0")


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    """Replace the ``occurrence``-th (1-based) header called ``name``; ``None`` deletes it."""

    name: str
    occurrence: int
    value: str | None

    def __post_init__(self) -> None:
        check_header_name(self.name)
        if self.occurrence < 1:
            raise ChangeError("header occurrence is 1-based")
        if self.value is not None:
            object.__setattr__(self, "value", clean_header_value(self.value))


def delete_header(name: str, occurrence: int) -> ChangeHeader:
    """Return the change that deletes the ``occurrence``-th header ``name``."""
    return ChangeHeader(name, occurrence, None)


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    """Replace the whole body (bytes after the blank line), CRLF or LF as the message uses."""

    body: bytes


@dataclass(frozen=True, slots=True)
class AddRecipient:
    """Add an envelope recipient."""

    address: str


@dataclass(frozen=True, slots=True)
class DeleteRecipient:
    """Remove an envelope recipient (compared case-insensitively)."""

    address: str


@dataclass(frozen=True, slots=True)
class ChangeSender:
    """Replace MAIL FROM (``""`` is the null sender)."""

    address: str


Change = (AddHeader | InsertHeader | ChangeHeader | ReplaceBody | AddRecipient | DeleteRecipient
          | ChangeSender)
