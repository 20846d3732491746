"""The milter protocol on the wire (version 6, as Postfix and Sendmail speak it), sans I/O.

Owns the packet framing (``PacketReader``), the decoding of the MTA's commands into typed
values and the encoding of rohrpost's replies and modification requests. Nothing here reads
a socket, knows about filters or keeps connection state: ``rohrpost.milter.aioengine`` does
the I/O and ``rohrpost.milter.connection`` the policy.

Format (libmilter's ``mfdef.h``; Postfix's ``milter8.c``): every packet is a 4-byte
big-endian length, then one command byte, then ``length - 1`` bytes of data. Strings are
NUL-terminated. A malformed packet raises ``WireError``; the engine then drops the connection
and Postfix applies ``milter_default_action`` (tempfail in every rohrpost example), so a
protocol error never accepts mail.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 6

# Commands from the MTA (SMFIC_*).
ABORT = b"A"
BODY = b"B"
CONNECT = b"C"
MACRO = b"D"
BODYEOB = b"E"
HELO = b"H"
QUIT_NC = b"K"
HEADER = b"L"
MAIL = b"M"
EOH = b"N"
OPTNEG = b"O"
QUIT = b"Q"
RCPT = b"R"
DATA = b"T"
UNKNOWN = b"U"

# Replies and modification requests to the MTA (SMFIR_*).
ADDRCPT = b"+"
DELRCPT = b"-"
ACCEPT = b"a"
REPLBODY = b"b"
CONTINUE = b"c"
DISCARD = b"d"
CHGFROM = b"e"
ADDHEADER = b"h"
INSHEADER = b"i"
CHGHEADER = b"m"
PROGRESS = b"p"
QUARANTINE = b"q"
REJECT = b"r"
TEMPFAIL = b"t"
REPLYCODE = b"y"

# Actions the milter may take (SMFIF_*), negotiated at OPTNEG.
ACT_ADDHDRS = 0x01
ACT_CHGBODY = 0x02
ACT_ADDRCPT = 0x04
ACT_DELRCPT = 0x08
ACT_CHGHDRS = 0x10
ACT_QUARANTINE = 0x20
ACT_CHGFROM = 0x40

# Protocol steps (SMFIP_*): what the MTA may skip or send without waiting for a reply.
P_NOCONNECT = 0x01
P_NOHELO = 0x02
P_NOMAIL = 0x04
P_NORCPT = 0x08
P_NOBODY = 0x10
P_NOHDRS = 0x20
P_NOEOH = 0x40
P_NR_HDR = 0x80
P_NOUNKNOWN = 0x100
P_NODATA = 0x200
P_NR_CONN = 0x1000
P_NR_HELO = 0x2000
P_NR_MAIL = 0x4000
P_NR_RCPT = 0x8000
P_NR_EOH = 0x40000
P_NR_BODY = 0x80000
P_HDR_LEADSPC = 0x100000

#: Largest packet accepted. Postfix sends body chunks of at most 64 KiB and headers of at
#: most ``header_size_limit`` (100 KiB by default); 1 MiB bounds a hostile or broken peer.
MAX_PACKET = 1 << 20
#: Largest body chunk per ``REPLBODY`` packet (libmilter's MILTER_CHUNK_SIZE).
CHUNK = 65535

_LEN = struct.Struct(">I")
_OPTNEG = struct.Struct(">III")


class WireError(ValueError):
    """A packet that does not follow the protocol."""


class PacketReader:
    """Split a byte stream into ``(command, data)`` packets."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Append bytes received from the MTA."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def __len__(self) -> int:
        """Bytes buffered and not yet returned as a packet."""
        return len(self._buf) - self._pos

    def next(self) -> tuple[bytes, bytes] | None:
        """The next complete packet, or ``None`` until more bytes arrive.

        :raises WireError: on an empty or oversized packet.
        """
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        (length,) = _LEN.unpack_from(buf, pos)
        if length < 1 or length > MAX_PACKET:
            raise WireError(f"packet length {length} out of range")
        end = pos + 4 + length
        if len(buf) < end:
            return None
        command = bytes(buf[pos + 4 : pos + 5])
        data = bytes(buf[pos + 5 : end])
        if end == len(buf):
            buf.clear()
            self._pos = 0
        elif end > 65536:  # drop what was consumed once it is worth the copy
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return command, data


def packet(command: bytes, data: bytes = b"") -> bytes:
    """Frame one packet."""
    return _LEN.pack(len(data) + 1) + command + data


def _cstrings(data: bytes) -> list[bytes]:
    """NUL-terminated strings; a missing final NUL is tolerated (Sendmail omits none)."""
    if not data:
        return []
    if data.endswith(b"\0"):
        data = data[:-1]
    return data.split(b"\0")


def text(raw: bytes) -> str:
    """Bytes from the MTA as text; undecodable bytes survive as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class OptNeg:
    """The MTA's (or our) protocol version, actions and protocol steps."""

    version: int
    actions: int
    protocol: int


def decode_optneg(data: bytes) -> OptNeg:
    """SMFIC_OPTNEG: version, actions offered, protocol steps offered."""
    if len(data) < _OPTNEG.size:
        raise WireError("short OPTNEG")
    return OptNeg(*_OPTNEG.unpack_from(data))


def encode_optneg(neg: OptNeg) -> bytes:
    """Our answer to OPTNEG."""
    return packet(OPTNEG, _OPTNEG.pack(neg.version, neg.actions, neg.protocol))


@dataclass(frozen=True, slots=True)
class Connect:
    """SMFIC_CONNECT: the client's host name and address ("" for a local or unknown one)."""

    hostname: str
    family: str  # "4", "6", "L" (Unix socket) or "U" (unknown)
    port: int
    address: str


def decode_connect(data: bytes) -> Connect:
    """Host name NUL, family byte, then (for 4/6/L) port (2 bytes) and address NUL."""
    nul = data.find(b"\0")
    if nul < 0 or nul + 1 >= len(data):
        raise WireError("malformed CONNECT")
    hostname = text(data[:nul])
    family = chr(data[nul + 1])
    if family == "U":
        return Connect(hostname, family, 0, "")
    rest = data[nul + 2 :]
    if len(rest) < 2:
        raise WireError("malformed CONNECT address")
    port = int.from_bytes(rest[:2], "big")
    address = text(rest[2:].split(b"\0", 1)[0])
    return Connect(hostname, family, port, address if family in "46" else "")


def decode_macro_pairs(data: bytes) -> dict[str, str]:
    """SMFIC_MACRO's name/value pairs (after its command byte); a lone name gets "".

    The engine keeps each MACRO packet's bytes and decodes them on first lookup.
    """
    parts = _cstrings(data)
    if len(parts) % 2:
        parts.append(b"")
    return {text(parts[i]): text(parts[i + 1]) for i in range(0, len(parts), 2)}


def decode_args(data: bytes) -> tuple[str, list[str]]:
    """SMFIC_MAIL/RCPT: the address (with its angle brackets) and ESMTP parameters."""
    parts = _cstrings(data)
    if not parts:
        raise WireError("empty MAIL/RCPT")
    return text(parts[0]), [text(p) for p in parts[1:]]


def decode_helo(data: bytes) -> str:
    """SMFIC_HELO: the name the client gave."""
    parts = _cstrings(data)
    return text(parts[0]) if parts else ""


def decode_header(data: bytes) -> tuple[str, bytes]:
    """SMFIC_HEADER: the field name and its value as bytes (exact, for DKIM)."""
    nul = data.find(b"\0")
    if nul < 0:
        raise WireError("malformed HEADER")
    value = data[nul + 1 :]
    if value.endswith(b"\0"):
        value = value[:-1]
    return text(data[:nul]), value


def _z(value: str) -> bytes:
    """A NUL-terminated string; a NUL inside is refused (it would cut the field short)."""
    raw = value.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise WireError("NUL byte in a string sent to the MTA")
    return raw + b"\0"


def encode_replycode(code: str, enhanced: str, message: str) -> bytes:
    """SMFIR_REPLYCODE: ``"550 5.7.1 text"``; a multi-line text becomes a multi-line reply.

    ``%`` is doubled because Postfix and Sendmail expand the text as a format string (what
    libmilter's ``smfi_setreply`` requires of its callers too).
    """
    lines = message.replace("%", "%%").replace("\r", "").split("\n") or [""]
    head = f"{code} {enhanced} " if enhanced else f"{code} "
    if len(lines) == 1:
        return packet(REPLYCODE, _z(head + lines[0]))
    sep = f"{code}-{enhanced} " if enhanced else f"{code}-"
    body = "\r\n".join(sep + line for line in lines[:-1]) + "\r\n" + head + lines[-1]
    return packet(REPLYCODE, _z(body))


def encode_addheader(name: str, value: str) -> bytes:
    """SMFIR_ADDHEADER: append a header."""
    return packet(ADDHEADER, _z(name) + _z(value))


def encode_insheader(index: int, name: str, value: str) -> bytes:
    """SMFIR_INSHEADER: insert a header at ``index`` (0 = top)."""
    return packet(INSHEADER, _LEN.pack(max(0, index)) + _z(name) + _z(value))


def encode_chgheader(name: str, occurrence: int, value: str) -> bytes:
    """SMFIR_CHGHEADER: change the ``occurrence``-th (from 1) ``name``; "" deletes it."""
    return packet(CHGHEADER, _LEN.pack(max(0, occurrence)) + _z(name) + _z(value))


def encode_replbody(body: bytes) -> list[bytes]:
    """SMFIR_REPLBODY packets for a whole new body (at most ``CHUNK`` bytes each)."""
    if not body:
        return [packet(REPLBODY)]
    return [packet(REPLBODY, body[i : i + CHUNK]) for i in range(0, len(body), CHUNK)]


def encode_rcpt(command: bytes, address: str) -> bytes:
    """SMFIR_ADDRCPT / SMFIR_DELRCPT with ``<address>``."""
    return packet(command, _z(f"<{address}>"))


def encode_chgfrom(address: str) -> bytes:
    """SMFIR_CHGFROM with ``<address>`` and no ESMTP parameters."""
    return packet(CHGFROM, _z(f"<{address}>"))


def encode_quarantine(reason: str) -> bytes:
    """SMFIR_QUARANTINE: the MTA holds the message (Postfix: the hold queue)."""
    return packet(QUARANTINE, _z(reason.replace("\r", " ").replace("\n", " ")))
