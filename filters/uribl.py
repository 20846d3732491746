"""``uribl``: domains and URLs in the message against URI blocklists (SURBL, URIBL, DBL).

Owns the end-of-message URI blocklist check. Hosts are found by ``rohrpost.filters._urls``
(text/plain and text/html parts decoded, HTML link attributes first, bare domain names with a
top-level-domain check) and optionally in the From/Reply-To headers (``headers``). Domain lists
(``type = "domain"``) are asked for the registered domain (public suffix list + 1 label), IP
lists (``type = "ip"``) for URL hosts that are IP addresses. Items are de-duplicated and capped
at ``max_domains``; every lookup of every list runs concurrently through
``ctx.resolver.query_many``. Answers map to symbols by exact ``codes`` or by ``bits`` of the
last octet (``multi.uribl.com``: 2 black, 4 grey, 8 red); a failed lookup adds
``URIBL_TEMPFAIL`` (score 0) and is no hit. No default lists. It never changes the message.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field

from rohrpost.filters._dnslists import DnsList, Hit, check_lists, hit_verdict, interpret, reverse_ip
from rohrpost.filters._psl import DEFAULT_PATH, PublicSuffixList
from rohrpost.filters._urls import header_domains, is_ip, message_hosts

from rohrpost.dns import DnsAnswer, DnsPermError
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.options import OptionError
from rohrpost.pipeline import domain_matches
from rohrpost.result import FilterResult, Symbol, Verdict

TEMPFAIL_SYMBOL = "URIBL_TEMPFAIL"


@dataclass(frozen=True)
class UriblOptions:
    """Options of the ``uribl`` filter."""

    list: builtins.list[DnsList] = field(default_factory=builtins.list, metadata={
        "help": "[[filter.list]] entries: zone, type (domain|ip), bits or codes"})
    max_domains: int = field(default=50, metadata={
        "help": "most distinct domains and IPs looked up per message (first found first)"})
    headers: builtins.list[str] = field(default_factory=builtins.list, metadata={
        "help": "headers whose address domains are checked too, e.g. [\"From\", \"Reply-To\"]"})
    bare_domains: bool = field(default=True, metadata={
        "help": "also look up bare names like example.com in the text (known TLDs only)"})
    skip_domains: builtins.list[str] = field(default_factory=builtins.list, metadata={
        "help": "never looked up: your own domains; \".example.org\" means subdomains too"})
    psl_file: str = field(default=DEFAULT_PATH, metadata={
        "help": "public suffix list (Debian package publicsuffix)"})
    max_scan_chars: int = field(default=1_000_000, metadata={
        "help": "characters of decoded text scanned per message"})
    concurrency: int = field(default=32, metadata={"help": "most lookups in flight at once"})

    def __post_init__(self) -> None:
        check_lists(self.list)
        if self.max_domains < 1 or self.concurrency < 1 or self.max_scan_chars < 1:
            raise ValueError("max_domains, concurrency and max_scan_chars must be positive")


class UriblFilter(Filter):
    """Look up the domains and IPs of a message's links in URI blocklists."""

    name = "uribl"
    description = "domains and URLs in body and headers against URI blocklists"
    stage = Stage.EOM
    Options = UriblOptions

    def __init__(self, options: UriblOptions) -> None:
        super().__init__(options)
        self.opts = options
        try:
            self.psl = PublicSuffixList.load(options.psl_file)
        except OSError as exc:
            raise OptionError("psl_file", f"cannot read {options.psl_file}: {exc.strerror}",
                              "install Debian's publicsuffix package") from None

    def items(self, mail: Mail) -> tuple[list[str], list[str], bool]:
        """Return registered domains and IPs to look up (capped), and whether capped."""
        message = mail.message
        if message is None:
            return [], [], False
        hosts = header_domains(h.decoded for name in self.opts.headers
                               for h in message.get_all(name))
        hosts += message_hosts(message.mime, self.psl, bare=self.opts.bare_domains,
                               max_chars=self.opts.max_scan_chars)
        seen: dict[str, bool] = {}  # item -> is an IP
        capped = False
        for host in hosts:
            ip = is_ip(host)
            item = host if ip else self.psl.registered_domain(host)
            if item is None or item in seen or (
                    not ip and domain_matches(host, self.opts.skip_domains)):
                continue
            if len(seen) >= self.opts.max_domains:
                capped = True
                break
            seen[item] = ip
        return [d for d, ip in seen.items() if not ip], [d for d, ip in seen.items() if ip], capped

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Find the hosts, query every list for them at once, and map the answers."""
        domains, ips, capped = self.items(mail)
        if capped:
            ctx.log.info("uribl: more than %d domains; only the first are looked up",
                         self.opts.max_domains)
        jobs: list[tuple[DnsList, str, str]] = []  # list, item, query name
        for lst in self.opts.list:
            if lst.type == "domain":
                jobs.extend((lst, d, f"{d}.{lst.zone}") for d in domains)
            else:
                for ip in ips:
                    label = reverse_ip(ip)
                    if label is not None:
                        jobs.append((lst, ip, f"{label}.{lst.zone}"))
        answers = await ctx.resolver.query_many([(q, "A") for _l, _i, q in jobs],
                                                limit=self.opts.concurrency)
        hits: list[Hit] = []
        failed: list[str] = []
        for (lst, item, qname), answer in zip(jobs, answers, strict=True):
            if isinstance(answer, DnsAnswer):
                found, warnings = interpret(lst, item, answer.records)
                hits.extend(found)
                for warning in warnings:
                    ctx.log.warning("uribl: %s", warning)
            elif isinstance(answer, DnsPermError):
                ctx.log.debug("uribl: %s: %s", qname, answer)
            else:
                failed.append(qname)
        if failed:
            ctx.log.info("uribl: %d lookup(s) failed, first: %s", len(failed), failed[0])
        facts = {"uribl.domains": domains, "uribl.ips": ips, "uribl.capped": capped,
                 "uribl.listed": sorted({f"{h.item}@{h.zone}" for h in hits})}
        return self.result(hits, failed, facts)

    def result(self, hits: list[Hit], failed: list[str],
               facts: dict[str, object]) -> FilterResult:
        """One symbol per name (its reason lists the items), the first verdict asked for."""
        items: dict[str, list[str]] = {}
        scores: dict[str, float] = {}
        verdict: Verdict | None = None
        for hit in hits:
            items.setdefault(hit.hit.symbol, [])
            if hit.item not in items[hit.hit.symbol]:
                items[hit.hit.symbol].append(hit.item)
            scores[hit.hit.symbol] = hit.hit.score
            if verdict is None:
                verdict = hit_verdict(hit, "URL domain", self.name)
        symbols = [Symbol(name, scores[name], "listed: " + ", ".join(found[:5]))
                   for name, found in items.items()]
        if failed:
            symbols.append(Symbol(TEMPFAIL_SYMBOL, 0.0, f"{len(failed)} lookup(s) failed"))
        return FilterResult(verdict=verdict, symbols=symbols, facts=facts)


FILTER = UriblFilter
