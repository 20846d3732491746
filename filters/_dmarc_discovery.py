"""DMARC policy discovery: the DMARCbis DNS tree walk, and the np existence test.

Owns ``walk_names``, ``discover`` and ``domain_exists``. The walk follows
draft-ietf-dmarc-dmarcbis section 4.10: query ``_dmarc.<author domain>``; without a usable
record, shorten a name of eight or more labels to its seven rightmost, then drop one label at a
time down to the top-level domain. RFC 7489's walk (author domain, then the PSL
organizational domain) is a subset of these names, so one walk serves both. Only names that
DMARCbis would query are queried: the author domain first, then the rest concurrently.

Errors: a DNS timeout or SERVFAIL before a record is found is ``temperror`` (never ``fail``);
a record with a syntax error stops the walk with ``permerror``; several ``v=DMARC1`` records at
one name are discarded (DMARCbis) and the walk goes on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rohrpost.dns import DnsError, DnsPermError, DnsTempError

from ._dmarc_record import DmarcRecord, DmarcRecordError, is_dmarc, parse_record_cached

if TYPE_CHECKING:
    from rohrpost.dns import DnsAnswer, Resolver

MAX_LABELS = 8


@dataclass(frozen=True, slots=True)
class Discovery:
    """What the walk found.

    :param record: the policy record, or None.
    :param domain: where the record was found ("" when none).
    :param error: ``"temperror"`` or ``"permerror"`` when discovery failed, else "".
    :param reason: a short explanation for logs and Authentication-Results.
    """

    record: DmarcRecord | None
    domain: str
    error: str = ""
    reason: str = ""


def walk_names(domain: str) -> list[str]:
    """Return the names the DMARCbis tree walk queries for ``domain``, longest first."""
    labels = [label for label in domain.lower().rstrip(".").split(".") if label]
    names = [".".join(labels)] if labels else []
    if len(labels) >= MAX_LABELS:
        labels = labels[-(MAX_LABELS - 1) :]
        names.append(".".join(labels))
    while len(labels) > 1:
        labels = labels[1:]
        names.append(".".join(labels))
    return names


def _classify(domain: str, outcome: DnsAnswer | DnsError) -> Discovery | None:
    """Turn one lookup into a final ``Discovery``, or None to continue the walk."""
    if isinstance(outcome, DnsTempError):
        return Discovery(None, domain, "temperror", f"DNS error at _dmarc.{domain}")
    if isinstance(outcome, DnsError):
        return None  # malformed or hostile name: nothing usable at this level
    found = [r for r in outcome.records if is_dmarc(r)]
    if len(found) != 1:
        return None
    try:
        return Discovery(parse_record_cached(found[0]), domain)
    except DmarcRecordError as exc:
        return Discovery(None, domain, "permerror", f"bad record at _dmarc.{domain}: {exc}")


async def _lookup(resolver: Resolver, domain: str) -> DnsAnswer | DnsError:
    try:
        return await resolver.query(f"_dmarc.{domain}", "TXT")
    except DnsError as exc:
        return exc


async def discover(resolver: Resolver, author: str) -> Discovery:
    """Find the DMARC record for the author domain by the tree walk."""
    names = walk_names(author)
    if not names:
        return Discovery(None, "", "permerror", "no author domain")
    first = _classify(names[0], await _lookup(resolver, names[0]))
    if first is not None:
        return first
    outcomes = await asyncio.gather(*(_lookup(resolver, n) for n in names[1:]))
    for name, outcome in zip(names[1:], outcomes, strict=True):
        found = _classify(name, outcome)
        if found is not None:
            return found
    return Discovery(None, "", "", "no DMARC record")


async def domain_exists(resolver: Resolver, domain: str) -> bool:
    """Return False when ``domain`` has no A, AAAA and MX records (RFC 9091 non-existent).

    A temporary DNS error counts as existing, so the milder ``sp`` applies rather than
    ``np`` on a guess.
    """
    async def has(rdtype: str) -> bool:
        try:
            answer = await resolver.query(domain, rdtype)
        except DnsPermError:
            return False
        except DnsTempError:
            return True
        return bool(answer.records)

    results = await asyncio.gather(*(has(t) for t in ("A", "AAAA", "MX")))
    return any(results)
