"""Postfix's XFORWARD extension: the original client's facts, passed on by a content_filter.

Owns ``XForward`` (the attributes of one mail transaction), ``parse_xforward`` and
``ADVERTISED``. With ``smtp_send_xforward_command = yes`` on the content_filter transport,
Postfix sends ``XFORWARD NAME=... ADDR=... PROTO=... HELO=... IDENT=... SOURCE=...`` before
MAIL, so the filters see the real client instead of 127.0.0.1 (www.postfix.org/XFORWARD_README).
Values are xtext (RFC 3461); ``[UNAVAILABLE]`` and ``[TEMPUNAVAIL]`` mean "not known".
Pure functions; nothing here talks to the network or decides who may send XFORWARD.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
ADVERTISED = "XFORWARD " + " ".join(ATTRIBUTES)
UNKNOWN_VALUES = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")
MAX_VALUE = 255
_XTEXT_RE = re.compile(r"\+([0-9A-Fa-f]{2})")
_BAD_RE = re.compile(r"[\x00-\x20\x7f]")


class XForwardError(ValueError):
    """An XFORWARD command that cannot be accepted; ``reply`` is what the client gets."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class XForward:
    """Attributes received for the next mail transaction ("" = not sent or unknown)."""

    name: str = ""
    addr: str = ""
    port: str = ""
    proto: str = ""
    helo: str = ""
    ident: str = ""
    source: str = ""

    @property
    def empty(self) -> bool:
        """True when no attribute has a value."""
        return not any((self.name, self.addr, self.port, self.proto, self.helo, self.ident,
                        self.source))


def decode_xtext(text: str) -> str:
    """Decode RFC 3461 xtext (``+2B`` is "+"); malformed escapes are kept as they are."""
    return _XTEXT_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


def _clean(key: str, value: str) -> str:
    value = decode_xtext(value)
    if value.upper() in UNKNOWN_VALUES:
        return ""
    if len(value) > MAX_VALUE or _BAD_RE.search(value):
        raise XForwardError(f"501 5.5.4 Bad XFORWARD attribute value for {key}")
    if key == "ADDR":
        bare = value.removeprefix("IPv6:").removeprefix("ipv6:")
        try:
            return str(ipaddress.ip_address(bare))
        except ValueError:
            raise XForwardError("501 5.5.4 Bad XFORWARD address syntax") from None
    if key == "PORT" and not value.isdigit():
        raise XForwardError("501 5.5.4 Bad XFORWARD port syntax")
    return value


def parse_xforward(arg: str, current: XForward) -> XForward:
    """Merge the attributes of one ``XFORWARD`` command line into ``current``.

    Attributes arrive incrementally (several XFORWARD commands may precede one MAIL), so each
    command updates only the attributes it names.

    :raises XForwardError: for a syntax error or an unknown attribute, with the reply Postfix
        itself would give.
    """
    words = arg.split()
    if not words:
        raise XForwardError("501 5.5.4 Syntax: XFORWARD attribute=value...")
    updates: dict[str, str] = {}
    for word in words:
        key, eq, value = word.partition("=")
        key = key.upper()
        if not eq or not key:
            raise XForwardError("501 5.5.4 Syntax: XFORWARD attribute=value...")
        if key not in ATTRIBUTES:
            shown = re.sub(r"[^A-Z0-9_-]", "?", key[:40])
            raise XForwardError(f"501 5.5.4 Bad XFORWARD attribute name: {shown}")
        updates[key.lower()] = _clean(key, value)
    return replace(current, **updates)
