"""List zip archives in memory, nested ones too, within limits; nothing is written to disk.

Owns ``ArchiveLimits``, ``Member``, ``Listing`` and ``list_zip``. Reads the central directory
with ``zipfile`` on a BytesIO; decompresses only the head of each member (for type sniffing),
members that are themselves zips (to list them, up to ``max_depth``) and OLE2/PDF members (for
the macro and JavaScript checks), all against one budget of uncompressed bytes. Bombs are
reported, not survived by luck: too deep, too many members, too many declared bytes, a
compression ratio above ``max_ratio``, or entries whose data overlap (the non-recursive zip bomb).
Encrypted members (flag bit 0) are reported and never read.
"""

from __future__ import annotations

import io
import itertools
import struct
import zipfile
import zlib
from dataclasses import dataclass, field

from ._filetypes import ole_has_macros, pdf_active, sniff

HEAD = 0x8006  # enough for every magic in _filetypes (ISO's is at 0x8001)
RATIO_MIN_SIZE = 1024 * 1024  # ratios of small members say nothing
FULL_READ = ("ole2", "pdf", "zip")
_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
           zlib.error, EOFError, ValueError, OSError, struct.error, KeyError)


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Limits for one archive including everything nested in it."""

    max_depth: int = 3
    max_members: int = 1000
    max_total: int = 100 * 1024 * 1024
    max_ratio: float = 100.0


@dataclass(frozen=True, slots=True)
class Member:
    """One member: its path through the nesting (``outer.zip/inner.zip/x.exe``) and findings."""

    path: str
    name: str
    type: str = ""
    encrypted: bool = False
    macro: bool = False
    pdf_active: tuple[str, ...] = ()


@dataclass
class Listing:
    """Members of an archive tree and the limits it broke (``bombs``)."""

    members: list[Member] = field(default_factory=list)
    bombs: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    macro: bool = False
    declared: int = 0
    read: int = 0


def list_zip(data: bytes, label: str, limits: ArchiveLimits) -> Listing:
    """List the zip ``data`` (shown as ``label``) and the zips inside it."""
    listing = Listing()
    _list(data, label, 1, limits, listing)
    return listing


def _overlaps(data: bytes, infos: list[zipfile.ZipInfo]) -> bool:
    """Tell whether two entries' local headers and data overlap (or share an offset)."""
    spans = []
    for info in infos:
        off = info.header_offset
        if data[off : off + 4] != b"PK\x03\x04":
            return True
        name_len, extra_len = struct.unpack_from("<HH", data, off + 26)
        spans.append((off, off + 30 + name_len + extra_len + info.compress_size))
    spans.sort()
    return any(nxt[0] < cur[1] for cur, nxt in itertools.pairwise(spans))


def _list(data: bytes, label: str, depth: int, limits: ArchiveLimits, out: Listing) -> None:
    if depth > limits.max_depth:
        out.bombs.append(f"{label}: archives nested deeper than {limits.max_depth}")
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            if _overlaps(data, infos):
                out.bombs.append(f"{label}: overlapping entries")
                return
            for info in infos:
                if len(out.members) >= limits.max_members:
                    out.bombs.append(f"{label}: more than {limits.max_members} members")
                    return
                if not _member(zf, info, label, depth=depth, limits=limits, out=out):
                    return
    except _ERRORS as exc:
        out.corrupt.append(f"{label}: unreadable zip ({type(exc).__name__})")


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str, *, depth: int,
            limits: ArchiveLimits, out: Listing) -> bool:
    """Record one member; False when a limit ends the listing."""
    path = f"{label}/{info.filename}"
    base = info.filename.replace("\\", "/").rsplit("/", 1)[-1]
    if base.lower() == "vbaproject.bin":
        out.macro = True
    out.declared += info.file_size
    if out.declared > limits.max_total:
        out.bombs.append(f"{label}: more than {limits.max_total} bytes uncompressed")
        return False
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > RATIO_MIN_SIZE and ratio > limits.max_ratio:
        out.bombs.append(f"{path}: compression ratio {ratio:.0f} > {limits.max_ratio:g}")
        return False
    if info.flag_bits & 0x1:
        out.members.append(Member(path, info.filename, encrypted=True))
        return True
    if info.is_dir():
        return True
    budget = limits.max_total - out.read
    if budget <= 0:
        out.bombs.append(f"{label}: more than {limits.max_total} bytes decompressed")
        return False
    with zf.open(info) as fh:
        head = fh.read(min(HEAD, budget))
        kind = sniff(head)
        rest = b""
        if kind in FULL_READ and len(head) == HEAD:
            rest = fh.read(max(0, budget - len(head)))
    content = head + rest
    out.read += len(content)
    out.members.append(Member(path, info.filename, kind, macro=kind == "ole2" and
                              ole_has_macros(content),
                              pdf_active=tuple(pdf_active(content)) if kind == "pdf" else ()))
    if kind == "zip":
        _list(content, path, depth + 1, limits, out)
    return not out.bombs
