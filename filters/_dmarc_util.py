"""Helpers of the ``dmarc`` filter: From domains, the ARC override test, report data.

Owns ``from_domains``, ``arc_says_dmarc_passed``, ``Evaluation`` (one author domain's result),
``dkim_results`` and ``record_report`` with its ``ReportMemo`` (the per-day aggregate data in
the state store that ``rohrpost dmarc report`` reads). Store key layout (shared with
``_dmarc_report``):

* ``dmarc:agg:YYYYMMDD:<policy-domain>``: a list of compact JSON rows, one per message.
* ``dmarc:pol:YYYYMMDD:<policy-domain>``: the published policy last seen that day (JSON).
* ``dmarc:rel:<policy-domain>``: present while we have seen aligned, passing mail from the
  domain (the "established relationship" that allows sending it reports).
"""

from __future__ import annotations

import email.utils
import functools
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rohrpost.envelope import domain_of
from rohrpost.filter import Context, Mail
from rohrpost.message import Message
from rohrpost.store import StoreError

from ._dmarc_record import DmarcRecord

AGG_PREFIX = "dmarc:agg:"
POL_PREFIX = "dmarc:pol:"
REL_PREFIX = "dmarc:rel:"
SENT_PREFIX = "dmarc:sent:"
AGG_TTL = 8 * 86400.0
_INSTANCE_RE = re.compile(r"(?:^|;)\s*i\s*=\s*(\d+)", re.I)
_D_RE = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)", re.I)


class FromError(ValueError):
    """The From header field gives no usable author domain."""


def from_domains(message: Message) -> tuple[list[str], int]:
    """Return the distinct author domains of the From field(s) and the number of fields.

    :raises FromError: when there is no From field or an address has no domain.
    """
    fields = message.get_all("From")
    if not fields:
        raise FromError("no From header field")
    domains: list[str] = []
    for header in fields:
        for domain in _field_domains(header.value):
            if domain not in domains:
                domains.append(domain)
    return domains, len(fields)


@functools.lru_cache(maxsize=1024)
def _field_domains(value: str) -> tuple[str, ...]:
    """The author domains of one From field's value, in order.

    Kept per value: senders repeat their From field, and ``email.utils.getaddresses`` is most
    of this filter's parsing.

    :raises FromError: when the field has no address or an address has no usable domain.
    """
    addresses = email.utils.getaddresses([value])
    if not addresses or not any(addr for _name, addr in addresses):
        raise FromError("From header field without an address")
    domains = []
    for _name, addr in addresses:
        domain = domain_of(addr)
        if not domain or not re.fullmatch(r"[a-z0-9._-]+", domain) or ".." in domain:
            raise FromError(f"From address without a usable domain: {addr[:80]!r}")
        domains.append(domain)
    return tuple(domains)


def _tags(header_value: str) -> tuple[int, str]:
    m_i, m_d = _INSTANCE_RE.search(header_value), _D_RE.search(header_value)
    return (int(m_i.group(1)) if m_i else 0), (m_d.group(1).lower() if m_d else "")


def arc_says_dmarc_passed(message: Message, sealers: Sequence[str], author: str) -> str:
    """Return the trusted sealer whose ARC-Authentication-Results say ``dmarc=pass``, or "".

    Only call this when the ARC chain validated (fact ``arc.result`` is ``pass``): the chain
    then vouches for every instance's headers. The newest instance sealed by a trusted domain
    is used; its result must be ``dmarc=pass`` and, if it names ``header.from``, for our
    author domain.
    """
    trusted = {s.lower().rstrip(".") for s in sealers}
    seals = sorted((_tags(h.value) for h in message.get_all("ARC-Seal")), reverse=True)
    results = {_tags(h.value)[0]: h.value for h in message.get_all("ARC-Authentication-Results")}
    for instance, domain in seals:
        if domain not in trusted:
            continue
        aar = results.get(instance, "")
        for part in aar.split(";"):
            words = part.split()
            if words and words[0].lower() == "dmarc=pass":
                hf = [w.split("=", 1)[1].lower() for w in words if w.lower().startswith(
                    "header.from=")]
                if not hf or hf[0] == author:
                    return domain
        return ""
    return ""


@dataclass
class Evaluation:
    """The DMARC outcome for one author domain."""

    author: str
    result: str  # pass, fail, none, temperror, permerror
    record: DmarcRecord | None = None
    policy_domain: str = ""
    policy: str = "none"  # the p/sp/np value that applies
    dkim_aligned: bool = False
    spf_aligned: bool = False
    disposition: str = "none"
    overrides: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""


def day_of(now: float) -> str:
    """Return the UTC day ``YYYYMMDD`` of ``now``."""
    return time.strftime("%Y%m%d", time.gmtime(now))


def report_row(ev: Evaluation, ip: str, dkim: Sequence[dict[str, Any]],
               spf: tuple[str, str, str]) -> bytes:
    """Return one compact JSON row for the aggregate report."""
    row = {
        "ip": ip, "hf": ev.author, "disp": ev.disposition,
        "da": "pass" if ev.dkim_aligned else "fail", "sa": "pass" if ev.spf_aligned else "fail",
        "dkim": [[str(d.get("domain", "")), str(d.get("selector", "")),
                  str(d.get("result", ""))] for d in dkim][:10],
        "spf": list(spf), "ov": [list(o) for o in ev.overrides],
    }
    return json.dumps(row, separators=(",", ":")).encode()


def policy_json(domain: str, record: DmarcRecord) -> bytes:
    """Return the published policy as stored for the report's ``policy_published``."""
    data = {"domain": domain, "p": record.p or "none", "sp": record.sp or record.p or "none",
            "np": record.np or "", "adkim": record.adkim, "aspf": record.aspf,
            "pct": record.pct, "fo": record.fo, "rua": list(record.rua)}
    return json.dumps(data, separators=(",", ":")).encode()


def dkim_results(mail: Mail) -> list[dict[str, Any]]:
    """Return the ``dkim.results`` fact of ``dkim-verify`` (a list of dicts), or []."""
    value = mail.fact("dkim.results", [])
    if not isinstance(value, list | tuple):
        return []
    return [d for d in value if isinstance(d, dict)]


@dataclass
class ReportMemo:
    """What this process last wrote of the slow-changing report keys, so as not to rewrite it.

    Per message only the row is new: the day's published policy is nearly always the one
    already stored, and the relationship mark needs its ttl renewed, not rewritten each time.
    Each store write is a commit (an fsync with SQLite's ``synchronous = full``), so skipping
    the two redundant ones takes two thirds of the report cost off the event loop
    (docs/performance.md, finding 18). Written values only; a failed write is not remembered,
    and a different store (or a new day) starts afresh.
    """

    store: object = None
    day: str = ""
    policies: dict[str, bytes] = field(default_factory=dict)
    relations: dict[str, float] = field(default_factory=dict)

    def begin(self, store: object, day: str) -> None:
        """Forget everything when the store or the day changed, or the memo grew large."""
        if store is not self.store or day != self.day or len(self.relations) > MEMO_LIMIT:
            self.store, self.day = store, day
            self.policies.clear()
            self.relations.clear()


#: the relationship mark is renewed at most this often (at most a tenth of its lifetime)
REL_REFRESH = 3600.0
MEMO_LIMIT = 10000


async def record_report(ctx: Context, mail: Mail, ev: Evaluation, relationship_days: float,
                        memo: ReportMemo | None = None) -> None:
    """Append this message's row to the day's aggregate data; note a relationship on pass.

    With ``memo``, the day's policy is written only when it differs from what this process
    last wrote for that key, and the relationship mark is renewed at most every
    ``REL_REFRESH`` seconds (its ttl may fall short of ``relationship_days`` by that much).

    A store failure is logged and ignored: reports are best effort and must never hold mail.
    """
    now = ctx.now()
    day = day_of(now)
    identity = "helo" if mail.fact("spf.identity") == "helo" else "mfrom"
    spf = (str(mail.fact("spf.domain", "") or ""), str(mail.fact("spf.result", "") or "none"),
           identity)
    row = report_row(ev, mail.envelope.client_ip, dkim_results(mail), spf)
    assert ev.record is not None
    try:
        store = ctx.store
        if memo is not None:
            memo.begin(store, day)
        await store.list_append(f"{AGG_PREFIX}{day}:{ev.policy_domain}", row, ttl=AGG_TTL)
        pol_key = f"{POL_PREFIX}{day}:{ev.policy_domain}"
        policy = policy_json(ev.policy_domain, ev.record)
        if memo is None or memo.policies.get(pol_key) != policy:
            await store.set(pol_key, policy, ttl=AGG_TTL)
            if memo is not None:
                memo.policies[pol_key] = policy
        if ev.result == "pass" and not ev.overrides:
            ttl = relationship_days * 86400
            refresh = min(REL_REFRESH, ttl / 10)
            last = memo.relations.get(ev.policy_domain) if memo is not None else None
            if last is None or not 0 <= now - last < refresh:
                await store.set(f"{REL_PREFIX}{ev.policy_domain}", b"1", ttl=ttl)
                if memo is not None:
                    memo.relations[ev.policy_domain] = now
    except (StoreError, RuntimeError) as exc:
        ctx.log.warning("dmarc: report data not stored: %s", exc)
