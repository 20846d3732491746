"""File types by content (magic bytes), never by name, plus the active-content checks.

Owns ``sniff`` (a short type name such as ``pe``, ``zip``, ``ole2``, ``pdf``), ``ole_has_macros``
(VBA project streams in an OLE2 compound file) and ``pdf_active`` (JavaScript or Launch actions
in a PDF, with ``#xx`` name escapes undone). Pure functions on bytes; they read at most a bounded
prefix of the data and never execute or extract anything.
"""

from __future__ import annotations

import re
import struct

_LNK = bytes.fromhex("4c0000000114020000000000c000000000000046")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "elf"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"PK\x07\x08", "zip"),
    (bytes.fromhex("d0cf11e0a1b11ae1"), "ole2"),
    (b"Rar!\x1a\x07", "rar"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"MSCF", "cab"),
    (b"ISc(", "cab"),
    (b"\xfe\xed\xfa\xce", "macho"),
    (b"\xfe\xed\xfa\xcf", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"),
    (b"\xcf\xfa\xed\xfe", "macho"),
    (b"\xca\xfe\xba\xbe", "macho"),  # fat Mach-O (also Java class files: both executable)
    (_LNK, "lnk"),
    (b"{\\rtf", "rtf"),
)
PDF_SCAN = 16 * 1024 * 1024
_PDF_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")
_PDF_ACTIVE = re.compile(rb"/(JavaScript|JS|Launch|OpenAction|AA|EmbeddedFile)(?![A-Za-z])")
# every VBA project has a "_VBA_PROJECT" stream (Excel: "_VBA_PROJECT_CUR" storage); directory
# entry names are UTF-16LE
_VBA_MARKER = "_VBA_PROJECT".encode("utf-16-le")


def sniff(data: bytes) -> str:
    """Return a short type name from the content, or ``""`` when unknown."""
    if data[:2] == b"MZ" and len(data) >= 64:
        (pe_offset,) = struct.unpack_from("<I", data, 0x3C)
        return "pe" if data[pe_offset : pe_offset + 4] == b"PE\0\0" else "dosexe"
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if b"%PDF-" in data[:1024]:
        return "pdf"
    if data[0x8001:0x8006] == b"CD001":
        return "iso"
    if data[:2] == b"#!":
        return "script"
    return ""


def ole_has_macros(data: bytes) -> bool:
    """Tell whether an OLE2 file (legacy Office) holds a VBA project (directory names)."""
    return _VBA_MARKER in data


def pdf_active(data: bytes) -> list[str]:
    """Return the active-content keys of a PDF, ``[]`` when it has none.

    Active means JavaScript, JS or Launch; OpenAction, AA and EmbeddedFile are reported only
    along with those.

    Looks at the raw file only (compressed object streams can hide keys; clamd covers those).
    """
    head = _PDF_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), data[:PDF_SCAN])
    keys = sorted({m.group(1).decode() for m in _PDF_ACTIVE.finditer(head)})
    return keys if {"JavaScript", "JS", "Launch"} & set(keys) else []
