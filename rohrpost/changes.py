"""Changes a filter asks for: the only way a filter alters a message or its envelope.

Owns the change value types. Applying them is done per mode: ``rohrpost.apply`` rewrites
bytes (pipe and SMTP modes), the milter adapter maps them to libmilter calls. Header names and
values are validated here so that nothing a filter returns can inject a header or break folding.
"""

from __future__ import annotations

import re

from rohrpost.record import FrozenRecord

_NAME_RE = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII except ":"
_OTHER_BAD = dict.fromkeys([0x00, 0x2028, 0x2029, 0x85, 0x0B, 0x0C], " ")  # for str.translate
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
    value = value.translate(_OTHER_BAD)
    value = _BARE_LF_RE.sub(" ", value)
    value = _EMPTY_FOLD_RE.sub("", value)
    return value.strip()


_set = object.__setattr__


class AddHeader(FrozenRecord):
    """Append a header at the end of the header block."""

    __slots__ = _fields = ("name", "value")
    name: str
    value: str

    def __init__(self, name: str, value: str) -> None:
        _set(self, "name", check_header_name(name))
        _set(self, "value", clean_header_value(value))


class InsertHeader(FrozenRecord):
    """Insert a header before the header at ``index`` (0 = first line, like milter's 1)."""

    __slots__ = _fields = ("index", "name", "value")
    index: int
    name: str
    value: str

    def __init__(self, index: int, name: str, value: str) -> None:
        check_header_name(name)
        value = clean_header_value(value)
        if index < 0:
            raise ChangeError("insert index must be >= 0")
        _set(self, "index", index)
        _set(self, "name", name)
        _set(self, "value", value)


class ChangeHeader(FrozenRecord):
    """Replace the ``occurrence``-th (1-based) header called ``name``; ``None`` deletes it."""

    __slots__ = _fields = ("name", "occurrence", "value")
    name: str
    occurrence: int
    value: str | None

    def __init__(self, name: str, occurrence: int, value: str | None) -> None:
        check_header_name(name)
        if occurrence < 1:
            raise ChangeError("header occurrence is 1-based")
        _set(self, "name", name)
        _set(self, "occurrence", occurrence)
        _set(self, "value", None if value is None else clean_header_value(value))


def delete_header(name: str, occurrence: int) -> ChangeHeader:
    """Return the change that deletes the ``occurrence``-th header ``name``."""
    return ChangeHeader(name, occurrence, None)


class ReplaceBody(FrozenRecord):
    """Replace the whole body (bytes after the blank line), CRLF or LF as the message uses."""

    __slots__ = _fields = ("body",)
    body: bytes

    def __init__(self, body: bytes) -> None:
        _set(self, "body", body)


class AddRecipient(FrozenRecord):
    """Add an envelope recipient."""

    __slots__ = _fields = ("address",)
    address: str

    def __init__(self, address: str) -> None:
        _set(self, "address", address)


class DeleteRecipient(FrozenRecord):
    """Remove an envelope recipient (compared case-insensitively)."""

    __slots__ = _fields = ("address",)
    address: str

    def __init__(self, address: str) -> None:
        _set(self, "address", address)


class ChangeSender(FrozenRecord):
    """Replace MAIL FROM (``""`` is the null sender)."""

    __slots__ = _fields = ("address",)
    address: str

    def __init__(self, address: str) -> None:
        _set(self, "address", address)


Change = (AddHeader | InsertHeader | ChangeHeader | ReplaceBody | AddRecipient | DeleteRecipient
          | ChangeSender)
