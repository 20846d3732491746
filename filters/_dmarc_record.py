"""DMARC policy records: parsing (RFC 7489 6.3/6.4, DMARCbis tags) and alignment.

Owns ``DmarcRecord``, ``DmarcRecordError``, ``is_dmarc``, ``parse_record`` (and
``parse_record_cached``, which keeps the parsed record per record text: the same few records
come back from the DNS cache for message after message), ``render`` and ``aligned``. Records
come from hostile DNS, so parsing is strict about structure (every part must be
``tag=value``; a duplicate tag is an error: both are RFC 7489 syntax errors and give
``permerror``) and lenient about values, as RFC 7489 6.3 asks: an unknown tag is ignored, an
invalid ``adkim``/``aspf``/``pct``/``ri`` value falls back to its default, an invalid ``p``
leaves the policy unset (6.6.3 then decides). No DNS here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

POLICIES = ("none", "quarantine", "reject")
_TAG_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*)$", re.S)
_VERSION_RE = re.compile(r"^[ \t]*v[ \t]*=[ \t]*DMARC1[ \t]*(;|$)", re.I)
_MAX_RUA = 10


class DmarcRecordError(ValueError):
    """A DMARC record with a syntax error (RFC 7489: permerror)."""


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    """A parsed ``v=DMARC1`` record; ``p`` is None when absent or invalid."""

    p: str | None = None
    sp: str | None = None
    np: str | None = None
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: str = "0"
    ri: int = 86400
    psd: str = "u"
    testing: bool = False

    def policy_for(self, *, subdomain: bool, nonexistent: bool) -> str | None:
        """Return the policy tag that applies to the author domain.

        :param subdomain: the author domain is below the domain that published the record.
        :param nonexistent: the author domain has no A, AAAA or MX records (RFC 9091 ``np``).
        """
        if not subdomain:
            return (self.np if nonexistent and self.np else None) or self.p
        if nonexistent and self.np:
            return self.np
        return self.sp or self.p


def is_dmarc(text: str) -> bool:
    """Return True when ``text`` starts with the ``v=DMARC1`` tag (RFC 7489 6.6.3 step 3)."""
    return bool(_VERSION_RE.match(text)) and text.split("=", 1)[1].strip()[:6] == "DMARC1"


def _uris(value: str) -> tuple[str, ...]:
    uris = [u.strip() for u in value.split(",") if u.strip()]
    return tuple(u for u in uris[:_MAX_RUA] if u.lower().startswith("mailto:"))


def _int(value: str, default: int, low: int, high: int) -> int:
    return int(value) if value.isdigit() and low <= int(value) <= high else default


def _split(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        m = _TAG_RE.match(part.strip())
        if m is None:
            raise DmarcRecordError(f"not a tag=value pair: {part.strip()[:40]!r}")
        name = m.group(1).lower()
        if name in tags:
            raise DmarcRecordError(f"duplicate tag {name!r}")
        tags[name] = m.group(2).strip()
    return tags


def parse_record(text: str) -> DmarcRecord:
    """Parse one DMARC record.

    :raises DmarcRecordError: when ``v=DMARC1`` is not first or the tag list is malformed.
    """
    if not is_dmarc(text):
        raise DmarcRecordError("record does not start with v=DMARC1")
    tags = _split(text)

    def policy(name: str) -> str | None:
        value = tags.get(name, "").lower()
        return value if value in POLICIES else None

    def choice(name: str, allowed: str, default: str) -> str:
        value = tags.get(name, "").lower()
        return value if len(value) == 1 and value in allowed else default

    return DmarcRecord(
        p=policy("p"), sp=policy("sp"), np=policy("np"),
        adkim=choice("adkim", "rs", "r"), aspf=choice("aspf", "rs", "r"),
        pct=_int(tags.get("pct", ""), 100, 0, 100),
        rua=_uris(tags.get("rua", "")), ruf=_uris(tags.get("ruf", "")),
        fo=tags.get("fo", "0")[:20] or "0", ri=_int(tags.get("ri", ""), 86400, 1, 2**31 - 1),
        psd=choice("psd", "ynu", "u"), testing=tags.get("t", "").lower() == "y",
    )


@functools.lru_cache(maxsize=1024)
def parse_record_cached(text: str) -> DmarcRecord:
    """``parse_record``, kept per record text (records are immutable; errors are not kept)."""
    return parse_record(text)


def render(record: DmarcRecord) -> str:
    """Return ``record`` as record text (``parse_record(render(r)) == r``)."""
    parts = ["v=DMARC1"]
    for name in ("p", "sp", "np"):
        value = getattr(record, name)
        if value:
            parts.append(f"{name}={value}")
    parts += [f"adkim={record.adkim}", f"aspf={record.aspf}", f"pct={record.pct}",
              f"fo={record.fo}", f"ri={record.ri}", f"psd={record.psd}"]
    if record.rua:
        parts.append("rua=" + ",".join(record.rua))
    if record.ruf:
        parts.append("ruf=" + ",".join(record.ruf))
    if record.testing:
        parts.append("t=y")
    return "; ".join(parts)


def mailto_address(uri: str) -> tuple[str, int | None]:
    """Split ``mailto:addr!10m`` into the address and a size limit in bytes (None: none)."""
    body = uri.split(":", 1)[1] if ":" in uri else uri
    addr, _sep, size = body.partition("!")
    limit = None
    m = re.fullmatch(r"(\d+)([kmgt]?)", size.strip().lower())
    if m:
        limit = int(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")
    return addr.strip(), limit


def aligned(identifier: str, author: str, mode: str, org_of: Callable[[str], str]) -> bool:
    """Return True when ``identifier`` aligns with the author domain (RFC 7489 3.1).

    :param mode: ``"s"`` (strict: identical) or ``"r"`` (relaxed: same organizational domain).
    :param org_of: a function from a domain to its organizational domain.
    """
    a, b = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    return mode != "s" and org_of(a) == org_of(b)
