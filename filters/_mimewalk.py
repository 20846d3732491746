"""A bounded MIME walker that sees what a mail client would show, and notices ambiguity.

Owns ``walk`` and its result types. It splits the raw bytes itself (no recursion, an explicit
stack of byte ranges, no copies of nested bodies) with limits on parts, depth and decoded bytes,
and reports instead of crashing when a limit is hit (``too_complex``). It decodes base64,
quoted-printable and uuencode (also ``begin 644 name`` blocks inside text parts), collects every
file name a client could display (Content-Disposition ``filename`` and Content-Type ``name``,
RFC 2231 continuations and RFC 2047 words decoded), and records parser differentials
(``ambiguous``): differing duplicate Content-Type, Content-Transfer-Encoding or
Content-Disposition headers, and two different boundary or name parameters. With
``resolve = "all"`` every reading of an ambiguous part is walked, so a check sees the union of
what different clients show. It judges nothing; ``attachments`` decides.
"""

from __future__ import annotations

import binascii
import email.header
import email.message
import email.utils
import re
from dataclasses import dataclass, field
from typing import Literal

from rohrpost.message import decode_words

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_UU_BEGIN = re.compile(rb"^begin(?:-base64)? [0-7]{3,4} ([^\r\n]+)\r?$", re.M)
_UU_END = re.compile(rb"^end\r?$", re.M)
Resolve = Literal["all", "first", "last"]


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one walk."""

    max_parts: int = 1000
    max_depth: int = 50
    max_decoded: int = 100 * 1024 * 1024
    resolve: Resolve = "all"


@dataclass(frozen=True, slots=True)
class Leaf:
    """One displayable part: MIME path, declared type, every candidate name, decoded bytes."""

    path: str
    content_type: str
    names: tuple[str, ...]
    data: bytes


@dataclass
class Walk:
    """What the walk found: leaves, ambiguities, and why it stopped early (if it did)."""

    leaves: list[Leaf] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)
    too_complex: str = ""
    parts: int = 0
    decoded: int = 0


@dataclass(frozen=True, slots=True)
class _Entity:
    buf: bytes
    start: int
    end: int
    depth: int
    path: str


def _headers(buf: bytes, start: int, end: int) -> tuple[list[tuple[str, str]], int]:
    """Unfolded (lower-case name, value) pairs of the entity and where its body starts."""
    for nl in (b"\r\n", b"\n"):
        if buf.startswith(nl, start):
            return [], start + len(nl)
    m = _HEADER_END.search(buf, start, end)
    head_end, body = (m.start(), m.end()) if m else (end, end)
    out: list[tuple[str, str]] = []
    for line in buf[start:head_end].decode("utf-8", "replace").splitlines():
        if line[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            out.append((name.strip().lower(), value.strip()))
    return out, body


def _distinct(values: list[str]) -> list[str]:
    seen: dict[str, str] = {}
    for v in values:
        seen.setdefault(" ".join(v.lower().split()), v)
    return list(seen.values())


def _pick(values: list[str], resolve: Resolve) -> list[str]:
    if len(values) <= 1 or resolve == "all":
        return values
    return [values[0] if resolve == "first" else values[-1]]


def _params(header: str, value: str) -> list[tuple[str, str]]:
    """(lower-case name, value) parameters with RFC 2231 continuations and charsets decoded."""
    msg = email.message.Message()
    msg[header] = value
    out = []
    for key, raw in msg.get_params(header=header, failobj=[])[1:]:
        out.append((key.lower(), decode_words(email.utils.collapse_rfc2231_value(raw))))
    return out


def decode_body(data: bytes, cte: str) -> bytes:
    """Decode a body by its Content-Transfer-Encoding, leniently (as clients do)."""
    cte = cte.strip().lower()
    if cte == "base64":
        clean = _B64_JUNK.sub(b"", data)
        clean = clean[: len(clean) - (len(clean) % 4 == 1)]
        return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4)) if clean else b""
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte in ("x-uuencode", "uuencode", "x-uue"):
        found = uu_blocks(data)
        return found[0][1] if found else data
    return data


def uu_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each ``begin MODE NAME`` ... ``end`` block in ``data``."""
    out = []
    for m in _UU_BEGIN.finditer(data):
        end = _UU_END.search(data, m.end())
        stop = end.start() if end else len(data)
        decoded = bytearray()
        for line in data[m.end() : stop].splitlines():
            if not line.strip():
                continue
            try:
                decoded += binascii.a2b_uu(line)
            except binascii.Error:
                continue
        out.append((m.group(1).decode("utf-8", "replace").strip(), bytes(decoded)))
    return out


def _split(buf: bytes, start: int, end: int, boundary: str, limit: int) -> list[tuple[int, int]]:
    """Byte ranges of the body parts between ``--boundary`` delimiter lines (at most limit+1)."""
    delim = re.compile(rb"^--" + re.escape(boundary.encode("utf-8", "replace"))
                       + rb"(--)?[ \t]*\r?$", re.M)
    ranges: list[tuple[int, int]] = []
    part_start = -1
    for m in delim.finditer(buf, start, end):
        if part_start >= 0:
            stop = m.start()
            stop -= 2 if buf[stop - 2 : stop] == b"\r\n" else (1 if buf[stop - 1 : stop] == b"\n"
                                                                 else 0)
            ranges.append((part_start, max(part_start, stop)))
            if len(ranges) > limit:
                return ranges
        if m.group(1):  # closing delimiter: the rest is the epilogue
            return ranges
        part_start = m.end() + (2 if buf.startswith(b"\r\n", m.end()) else
                                1 if buf.startswith(b"\n", m.end()) else 0)
    if part_start >= 0:
        ranges.append((part_start, end))  # no closing delimiter: clients show the last part
    return ranges


def walk(raw: bytes, limits: Limits) -> Walk:
    """Walk the MIME tree of ``raw`` within ``limits``."""
    result = Walk()
    stack = [_Entity(raw, 0, len(raw), 0, "1")]
    while stack:
        ent = stack.pop()
        result.parts += 1
        if result.parts > limits.max_parts:
            result.too_complex = f"more than {limits.max_parts} MIME parts"
            break
        if ent.depth > limits.max_depth:
            result.too_complex = f"MIME nesting deeper than {limits.max_depth}"
            break
        children = _entity(ent, limits, result)
        if result.too_complex:
            break
        stack.extend(reversed(children))
    return result


def _entity(ent: _Entity, limits: Limits, result: Walk) -> list[_Entity]:
    headers, body = _headers(ent.buf, ent.start, ent.end)
    values = {n: _distinct([v for k, v in headers if k == n]) for n in
              ("content-type", "content-transfer-encoding", "content-disposition")}
    for label, found in values.items():
        if len(found) > 1:
            result.ambiguous.append(f"part {ent.path}: {len(found)} different {label} headers")
    ctes = _pick(values["content-transfer-encoding"], limits.resolve) or ["7bit"]
    names: list[str] = []
    for disp in values["content-disposition"]:
        names += _names(ent, _params("content-disposition", disp), "filename", result)
    children: list[_Entity] = []
    leaf_types: list[str] = []
    for ctype_value in _pick(values["content-type"], limits.resolve) or ["text/plain"]:
        params = _params("content-type", ctype_value)
        names += _names(ent, params, "name", result)
        ctype = ctype_value.split(";", 1)[0].strip().lower() or "text/plain"
        bounds = _distinct([v for k, v in params if k == "boundary" and v])
        if len(bounds) > 1:
            result.ambiguous.append(f"part {ent.path}: {len(bounds)} different boundary "
                                    "parameters")
        if ctype.startswith("multipart/") and bounds:
            for boundary in _pick(bounds, limits.resolve):
                ranges = _split(ent.buf, body, ent.end, boundary, limits.max_parts)
                children += [_Entity(ent.buf, s, e, ent.depth + 1, f"{ent.path}.{i}")
                             for i, (s, e) in enumerate(ranges, 1)]
                if not ranges:  # no delimiter at all: clients show the body as text
                    leaf_types.append("text/plain")
        elif ctype in ("message/rfc822", "message/global"):
            children += [_message(ent, body, cte) for cte in ctes]
        else:
            leaf_types.append(ctype)
    for ctype in _distinct(leaf_types):
        for cte in ctes:
            _leaf(ent, body, ctype, cte=cte, names=tuple(dict.fromkeys(names)), limits=limits,
                  result=result)
    return children


def _names(ent: _Entity, params: list[tuple[str, str]], key: str, result: Walk) -> list[str]:
    """Return the values of parameter ``key``; two different ones are ambiguous."""
    found = [v for k, v in params if k == key and v]
    if len({" ".join(v.lower().split()) for v in found}) > 1:
        result.ambiguous.append(f"part {ent.path}: {len(found)} different {key} parameters")
    return found


def _message(ent: _Entity, body: int, cte: str) -> _Entity:
    """Return a message/rfc822 body as a child entity (decoded first if it was encoded)."""
    if cte.strip().lower() in ("base64", "quoted-printable"):
        inner = decode_body(ent.buf[body : ent.end], cte)
        return _Entity(inner, 0, len(inner), ent.depth + 1, f"{ent.path}.1")
    return _Entity(ent.buf, body, ent.end, ent.depth + 1, f"{ent.path}.1")


def _leaf(ent: _Entity, body: int, ctype: str, *, cte: str, names: tuple[str, ...],
          limits: Limits, result: Walk) -> None:
    data = decode_body(ent.buf[body : ent.end], cte)
    found = [Leaf(ent.path, ctype, names, data)]
    if ctype.startswith("text/") or not names:
        found += [Leaf(f"{ent.path}.uu{i}", "application/octet-stream", (name,), payload)
                  for i, (name, payload) in enumerate(uu_blocks(data), 1)]
    for leaf in found:
        result.decoded += len(leaf.data)
        if result.decoded > limits.max_decoded:
            result.too_complex = f"more than {limits.max_decoded} decoded bytes"
            return
        result.leaves.append(leaf)
