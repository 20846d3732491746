"""``dnsbl``: the client's IP address against DNS blocklists (zen-style return codes).

Owns the connect-time DNSBL check. Each ``[[filter.list]]`` is queried concurrently through
``ctx.resolver.query_many`` (cached by the resolver for the answer's TTL, bounded by the
``[dns] timeout``); return codes map to symbols with scores, and a code may ask for a final
reject or tempfail (``554 5.7.1 Service unavailable; client [IP] blocked using ZONE``). A lookup
that times out or fails is no hit: it adds ``DNSBL_TEMPFAIL`` with score 0 so the log shows it.
There are no default lists: a pipeline without ``[[filter.list]]`` is a configuration error, so
no test and no fresh installation ever queries a public list by accident.

Skipped: clients in the pipeline's ``trusted_networks``, ``skip_networks``, and (with
``skip_private``, the default) private, loopback, link-local and other non-global addresses,
which no public list lists. It must not touch the message (it runs before there is one).
"""

from __future__ import annotations

import builtins
import ipaddress
from dataclasses import dataclass, field

from rohrpost.filters._dnslists import DnsList, Hit, check_lists, hit_verdict, interpret, reverse_ip

from rohrpost.dns import DnsAnswer, DnsPermError
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.pipeline import in_networks
from rohrpost.result import FilterResult, Symbol, Verdict

TEMPFAIL_SYMBOL = "DNSBL_TEMPFAIL"


@dataclass(frozen=True)
class DnsblOptions:
    """Options of the ``dnsbl`` filter."""

    list: builtins.list[DnsList] = field(default_factory=builtins.list, metadata={
        "help": "[[filter.list]] entries: zone, codes, default symbol/score/action"})
    skip_private: bool = field(default=True, metadata={
        "help": "skip private, loopback and other non-global client addresses"})
    skip_trusted: bool = field(default=True, metadata={
        "help": "skip clients in [pipeline] trusted_networks"})
    skip_networks: builtins.list[str] = field(default_factory=builtins.list, metadata={
        "help": "further client networks (CIDR) never looked up"})
    concurrency: int = field(default=16, metadata={"help": "most lookups in flight at once"})

    def __post_init__(self) -> None:
        check_lists(self.list)
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        for net in self.skip_networks:
            ipaddress.ip_network(net, strict=False)  # ValueError names the bad network


def client_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Parse the client's address as MTAs write it (``[..]``, ``IPv6:``); None if none."""
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class DnsblFilter(Filter):
    """Look the client IP up in every configured DNS blocklist at once."""

    name = "dnsbl"
    description = "client IP against DNS blocklists (zen-style codes to symbols)"
    stage = Stage.CONNECT
    Options = DnsblOptions

    def __init__(self, options: DnsblOptions) -> None:
        super().__init__(options)
        self.opts = options

    def skip_reason(self, ctx: Context, client_ip: str) -> str:
        """Return why this client is not looked up ("" when it is)."""
        addr = client_address(client_ip)
        if addr is None:
            return "no client IP"
        if self.opts.skip_private and not addr.is_global:
            return "private or reserved address"
        trusted = ctx.settings.get("trusted_networks", [])
        if self.opts.skip_trusted and in_networks(str(addr), trusted):
            return "trusted network"
        if in_networks(str(addr), self.opts.skip_networks):
            return "skip_networks"
        return ""

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Query every list concurrently; map answers to symbols and maybe a verdict."""
        client_ip = mail.envelope.client_ip
        why = self.skip_reason(ctx, client_ip)
        if why:
            ctx.log.debug("dnsbl: skipped %s: %s", client_ip or "-", why)
            return FilterResult(facts={"dnsbl.skipped": why})
        addr = client_address(client_ip)
        label = reverse_ip(client_ip)
        if addr is None or label is None:  # skip_reason() has ruled this out
            return FilterResult()
        lists = self.opts.list
        answers = await ctx.resolver.query_many(
            [(f"{label}.{lst.zone}", "A") for lst in lists], limit=self.opts.concurrency)
        hits: list[Hit] = []
        failed: list[str] = []
        for lst, answer in zip(lists, answers, strict=True):
            if isinstance(answer, DnsAnswer):
                found, warnings = interpret(lst, str(addr), answer.records)
                hits.extend(found)
                for warning in warnings:
                    ctx.log.warning("dnsbl: %s", warning)
            elif isinstance(answer, DnsPermError):
                ctx.log.warning("dnsbl: %s: %s", lst.zone, answer)
            else:
                failed.append(lst.zone)
                ctx.log.info("dnsbl: %s lookup failed: %s", lst.zone, answer)
        return self.result(str(addr), hits, failed)

    def result(self, ip: str, hits: list[Hit], failed: list[str]) -> FilterResult:
        """Build symbols (one per name), the first verdict a hit asks for, and facts."""
        symbols: dict[str, Symbol] = {}
        verdict: Verdict | None = None
        for hit in hits:
            name = hit.hit.symbol
            if name not in symbols:
                symbols[name] = Symbol(name, hit.hit.score, f"{ip} listed on {hit.zone} "
                                                            f"({hit.code})")
            if verdict is None:
                verdict = hit_verdict(hit, "client", self.name)
        if failed:
            symbols[TEMPFAIL_SYMBOL] = Symbol(TEMPFAIL_SYMBOL, 0.0,
                                              "lookup failed: " + ", ".join(failed))
        facts = {"dnsbl.listed": sorted({h.zone for h in hits}),
                 "dnsbl.codes": sorted({f"{h.zone}={h.code}" for h in hits}),
                 "dnsbl.failed": failed}
        return FilterResult(verdict=verdict, symbols=list(symbols.values()), facts=facts)


FILTER = DnsblFilter
