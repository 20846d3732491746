"""Builders of hostile test messages and archives (all in memory, all generated quickly)."""

from __future__ import annotations

import io
import struct
import zipfile

from tests.support.daemons import CLAMAV_TESTFILES

PE = (CLAMAV_TESTFILES / "clam.exe").read_bytes()
ELF = b"\x7fELF\x02\x01\x01" + b"\0" * 57
HEAD = b"From: a@example.net\r\nTo: b@example.org\r\nSubject: t\r\nMIME-Version: 1.0\r\n"


def zip_of(*members: tuple[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def encrypted(data: bytes) -> bytes:
    """Set the "encrypted" flag bit on every local and central header (zipfile can't encrypt)."""
    out = bytearray(data)
    for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        pos = out.find(sig)
        while pos >= 0:
            (flags,) = struct.unpack_from("<H", out, pos + flag_at)
            struct.pack_into("<H", out, pos + flag_at, flags | 1)
            pos = out.find(sig, pos + 4)
    return bytes(out)


def overlapping() -> bytes:
    """Two central-directory entries pointing at the same local header (overlap bomb shape)."""
    data = bytearray(zip_of(("a.txt", b"A" * 100), ("b.txt", b"B" * 100),
                            method=zipfile.ZIP_STORED))
    second = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4)
    struct.pack_into("<I", data, second + 42, 0)  # relative offset of local header -> 0
    return bytes(data)


def nested_zips(depth: int, inner: tuple[str, bytes] = ("readme.txt", b"hi")) -> bytes:
    data = zip_of(inner)
    for level in range(depth - 1):
        data = zip_of((f"level{level}.zip", data))
    return data


def ole_with_macros() -> bytes:
    """OLE2 magic plus a directory entry name _VBA_PROJECT (UTF-16LE), as Office writes it."""
    return (bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 500 + "_VBA_PROJECT".encode("utf-16-le")
            + b"\0" * 100)


def docm() -> bytes:
    return zip_of(("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b"<w:document/>"),
                  ("word/vbaProject.bin", ole_with_macros()))


def raw_mime(parts: list[tuple[str, bytes]], boundary: str = "BOUND") -> bytes:
    """A multipart/mixed message from (header block, body) parts, written byte by byte."""
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + h.encode() + b"\r\n\r\n" + b + b"\r\n"
                    for h, b in parts)
    return (HEAD + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'.encode()
            + b"preamble\r\n" + body + b"--" + boundary.encode() + b"--\r\n")


def deep_nesting(depth: int) -> bytes:
    """``depth`` nested multiparts, one inside the other (built iteratively, linear size)."""
    opens = b"".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
                     for i in range(depth))
    closes = b"".join(f"\r\n--b{i}--".encode() for i in reversed(range(depth)))
    return HEAD + opens + b"Content-Type: text/plain\r\n\r\ndeep" + closes + b"\r\n"


def many_parts(count: int) -> bytes:
    part = b"--B\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    head = HEAD + b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
    return head + part * count + b"--B--\r\n"
