"""DNS list plumbing shared by ``dnsbl`` and ``uribl``: list options, query names, answers.

Owns ``DnsList`` and ``ListHit`` (the ``[[filter.list]]`` options), ``reverse_ip`` (the query
label of an address: reversed octets for IPv4, reversed nibbles for IPv6) and ``interpret``
(turn the A records of one answer into hits, or into warnings for answers that are no listing).
It does no I/O; the filters run the queries through ``ctx.resolver.query_many``.

What counts as a listing: only answers inside 127.0.0.0/8. Spamhaus' error codes
127.255.255.0/24 ("query refused", "open resolver", "excessive use") and URIBL's 127.0.0.1 on a
bitmask list mean the list refused to answer; an answer outside 127/8 usually is a resolver that
rewrites NXDOMAIN into an advertising page. Those are logged as warnings and never scored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from rohrpost.result import Action, Verdict

_SYMBOL_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
_ZONE_RE = re.compile(r"^(?=.{1,200}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]+$")
ListAction = Literal["none", "reject", "tempfail"]


@dataclass(frozen=True)
class ListHit:
    """What one return code (or bit) means: ``{ symbol = "RBL_SBL", score = 4.0 }``."""

    symbol: str = field(metadata={"help": "symbol name (upper case, digits, _)"})
    score: float = field(default=0.0, metadata={"help": "score of the symbol"})
    action: ListAction = field(default="none", metadata={
        "help": "final action on this code: none (score only), reject or tempfail"})
    message: str = field(default="", metadata={
        "help": "reply line; {ip}, {zone}, {code}, {domain} are filled in"})

    def __post_init__(self) -> None:
        if not _SYMBOL_RE.match(self.symbol):
            raise ValueError(f"symbol {self.symbol!r}: use upper case letters, digits and _")


@dataclass(frozen=True)
class DnsList:
    """One ``[[filter.list]]``: a DNS list zone and what its answers mean.

    ``codes`` maps whole answers (``"127.0.0.2"``), ``bits`` maps bit values of the last octet
    (``"2"``: URIBL black) for bitmask lists; an answer that neither maps gets ``symbol`` and
    ``score``, or is ignored when ``symbol`` is ``""`` and ``codes`` or ``bits`` are given.
    """

    zone: str = field(metadata={"help": "list zone, e.g. zen.spamhaus.org"})
    codes: dict[str, ListHit] = field(default_factory=dict, metadata={
        "help": "answer address -> hit"})
    bits: dict[str, ListHit] = field(default_factory=dict, metadata={
        "help": "bit value of the last octet -> hit (bitmask lists)"})
    symbol: str = field(default="", metadata={
        "help": "symbol for other answers; default derived from the zone"})
    score: float = field(default=1.0, metadata={"help": "score for other answers"})
    action: ListAction = field(default="none", metadata={"help": "action for other answers"})
    message: str = field(default="", metadata={"help": "reply line for other answers"})
    type: Literal["domain", "ip"] = field(default="domain", metadata={
        "help": "uribl: query registered domains or IP addresses of URLs"})

    def __post_init__(self) -> None:
        zone = self.zone.lower().strip(".")
        if not _ZONE_RE.match(zone):
            raise ValueError(f"zone {self.zone!r} is not a domain name")
        object.__setattr__(self, "zone", zone)
        for code in self.codes:
            try:
                ipaddress.IPv4Address(code)
            except ValueError:
                raise ValueError(f"codes: {code!r} is not an IPv4 answer address") from None
        for bit in self.bits:
            if not bit.isdigit() or not 0 < int(bit) < 256:
                raise ValueError(f"bits: {bit!r} must be a number 1..255")
        if self.symbol and not _SYMBOL_RE.match(self.symbol):
            raise ValueError(f"symbol {self.symbol!r}: use upper case letters, digits and _")

    @property
    def default_hit(self) -> ListHit | None:
        """The hit for answers that ``codes``/``bits`` do not map (None: ignore them)."""
        if not self.symbol and (self.codes or self.bits):
            return None
        name = self.symbol or "LISTED_" + re.sub(r"[^A-Z0-9]+", "_", self.zone.upper())[:50]
        return ListHit(name, self.score, self.action, self.message)


@dataclass(frozen=True)
class Hit:
    """One listing found: which list, for what, with which answer, meaning what."""

    zone: str
    item: str  # the IP address or domain that is listed
    code: str
    hit: ListHit


def reverse_ip(text: str) -> str | None:
    """Return the DNSBL query label of an address, or None if ``text`` is no IP address.

    ``192.0.2.1`` -> ``1.2.0.192``; IPv6 -> 32 reversed nibbles; ``::ffff:192.0.2.1`` is
    treated as IPv4. Brackets and an ``IPv6:`` prefix (as MTAs write them) are accepted.
    """
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.reverse_pointer.rsplit(".", 2)[0]


def interpret(lst: DnsList, item: str, records: Sequence[str]) -> tuple[list[Hit], list[str]]:
    """Turn the A records of one answer into hits and warnings (see the module docstring)."""
    hits: list[Hit] = []
    warnings: list[str] = []
    for code in records:
        try:
            addr = ipaddress.IPv4Address(code)
        except ValueError:
            warnings.append(f"{lst.zone}: ignored non-IPv4 answer {code!r} for {item}")
            continue
        if addr not in ipaddress.IPv4Network("127.0.0.0/8"):
            warnings.append(f"{lst.zone}: ignored answer {code} outside 127/8 for {item} "
                            "(a resolver rewriting NXDOMAIN?)")
            continue
        if code.startswith("127.255.255."):
            warnings.append(f"{lst.zone}: error code {code} for {item} (query refused or "
                            "rate limited: use your own resolver, not a public one)")
            continue
        if lst.bits and code == "127.0.0.1":
            warnings.append(f"{lst.zone}: answer 127.0.0.1 for {item} (query refused)")
            continue
        hits.extend(Hit(lst.zone, item, code, h) for h in _meanings(lst, code))
    return hits, warnings


def _meanings(lst: DnsList, code: str) -> list[ListHit]:
    if code in lst.codes:
        return [lst.codes[code]]
    last = int(code.rsplit(".", 1)[1])
    found = [hit for bit, hit in lst.bits.items() if last & int(bit)]
    if found:
        return found
    default = lst.default_hit
    return [default] if default is not None else []


DEFAULT_REPLIES = {
    "reject": "554 5.7.1 Service unavailable; {what} [{item}] blocked using {zone}",
    "tempfail": "451 4.7.1 Service unavailable; {what} [{item}] listed on {zone}, try later",
}


def hit_verdict(hit: Hit, what: str, by: str) -> Verdict | None:
    """Return the verdict a hit asks for, placeholders filled, or None (score only)."""
    if hit.hit.action == "none":
        return None
    template = hit.hit.message or DEFAULT_REPLIES[hit.hit.action]
    text = (template.replace("{what}", what).replace("{item}", hit.item)
            .replace("{ip}", hit.item).replace("{domain}", hit.item)
            .replace("{zone}", hit.zone).replace("{code}", hit.code))
    reason = f"{hit.item} listed on {hit.zone} ({hit.code}, {hit.hit.symbol})"
    return Verdict.of(Action(hit.hit.action), text, reason, by)


def check_message(hit: ListHit, where: str) -> None:
    """Check at load that a hit's reply line parses and has the right code class."""
    if hit.action == "none":
        return
    sample = Hit("zone.example", "192.0.2.1", "127.0.0.2", hit)
    try:
        hit_verdict(sample, "client", "check")
    except ValueError as exc:
        raise ValueError(f"{where}: message {hit.message!r}: {exc}") from None


def check_lists(lists: Sequence[DnsList], where: str = "list") -> None:
    """Validate every reply line of every list; at least one list is required."""
    if not lists:
        raise ValueError("configure at least one [[filter.list]]: there are no default lists")
    for i, lst in enumerate(lists):
        hits = [*lst.codes.values(), *lst.bits.values()]
        default = lst.default_hit
        for hit in [*hits, *([default] if default else [])]:
            check_message(hit, f"{where}[{i}]")
