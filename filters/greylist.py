"""``greylist``: triplet greylisting (client network, sender, recipient) with auto-whitelist.

Owns the greylisting decision and its state in ``ctx.store`` (keys under ``grey:``). The first
attempt of a new triplet gets ``451 4.7.1 Greylisted, please try again in N seconds``; a retry
after ``delay`` and within ``window`` of the first attempt passes, and the triplet is then
remembered for ``pass_days``; a retry after ``window`` starts over. A client network whose
triplets passed ``awl_count`` times is whitelisted for ``awl_days`` after its last pass.

Exempt: authenticated clients, the pipeline's ``trusted_networks``, ``exempt_networks``,
``exempt_senders``, ``exempt_recipients``, SPF pass for ``spf_pass_domains`` (the spf filter's
``spf.result``/``spf.domain`` facts, or its Authentication-Results), DKIM pass for
``dkim_pass_domains`` (``dkim=pass header.d=`` results of ``dkim-verify``, or a
``dkim.pass_domains`` list fact of a custom filter).

Stage: RCPT by default (a refused recipient costs the sender no DATA transfer; other recipients
are not affected). DKIM is only known at end of data, so ``dkim_pass_domains`` needs
``stage = "eom"``; the EOM form greylists all recipients of the message at once (one tempfail
for the whole message). A filter instance runs at one stage, so "RCPT for everybody, EOM for
senders from DKIM-signing domains" is two instances (docs/spam.md has the recipe).

Store failures raise ``StoreError``: the ``on_error`` of the filter decides. The pipeline
default (tempfail) keeps all mail waiting while the store is down; ``on_error = "skip"`` lets
mail through ungreylisted instead. Never ``"accept"``: that ends the pipeline with an accept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from rohrpost.filters._greykeys import client_network, digest, normalize_sender

from rohrpost.envelope import domain_of
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.pipeline import domain_matches, in_networks
from rohrpost.result import Action, FilterResult, Symbol, Verdict

DAY = 86400
DEFAULT_MESSAGE = "451 4.7.1 Greylisted, please try again in {seconds} seconds"


@dataclass(frozen=True)
class GreylistOptions:
    """Options of the ``greylist`` filter."""

    delay: int = field(default=300, metadata={"help": "seconds before a retry is accepted"})
    window: int = field(default=4 * 3600, metadata={
        "help": "seconds after the first attempt within which the retry must come"})
    pass_days: int = field(default=35, metadata={"help": "days a passed triplet is remembered"})
    awl_count: int = field(default=5, metadata={
        "help": "passes after which the client network is whitelisted (0: never)"})
    awl_days: int = field(default=30, metadata={
        "help": "days a whitelisted network stays whitelisted after its last pass"})
    ipv4_prefix: int = field(default=24, metadata={"help": "IPv4 client network size"})
    ipv6_prefix: int = field(default=64, metadata={"help": "IPv6 client network size"})
    exempt_authenticated: bool = field(default=True, metadata={
        "help": "never greylist SMTP AUTH clients"})
    exempt_trusted: bool = field(default=True, metadata={
        "help": "exempt [pipeline] trusted_networks"})
    exempt_networks: list[str] = field(default_factory=list, metadata={
        "help": "client networks (CIDR) never greylisted"})
    exempt_senders: list[str] = field(default_factory=list, metadata={
        "help": "addresses, user@ or @domain (.domain: subdomains too)"})
    exempt_recipients: list[str] = field(default_factory=list, metadata={
        "help": "addresses, user@ or @domain (.domain: subdomains too), e.g. postmaster@"})
    spf_pass_domains: list[str] = field(default_factory=list, metadata={
        "help": "exempt when SPF passed for these MAIL FROM domains (spf filter first)"})
    dkim_pass_domains: list[str] = field(default_factory=list, metadata={
        "help": "needs stage = \"eom\""})
    fold_digits: bool = field(default=True, metadata={
        "help": "fold digit runs in sender local parts (VERP, bounce addresses)"})
    stage: Literal["rcpt", "eom"] = field(default="rcpt", metadata={
        "help": "rcpt: per recipient at RCPT TO; eom: whole message after DATA"})
    message: str = field(default=DEFAULT_MESSAGE, metadata={"help": "{seconds} is filled in"})

    def __post_init__(self) -> None:
        if self.delay < 0 or self.window <= self.delay:
            raise ValueError("need 0 <= delay < window")
        if min(self.pass_days, self.awl_days) < 1 or self.awl_count < 0:
            raise ValueError("pass_days and awl_days must be >= 1, awl_count >= 0")
        if not (0 <= self.ipv4_prefix <= 32 and 0 <= self.ipv6_prefix <= 128):
            raise ValueError("ipv4_prefix must be 0..32, ipv6_prefix 0..128")
        if self.dkim_pass_domains and self.stage != "eom":
            raise ValueError("dkim_pass_domains needs stage = \"eom\": DKIM is only known after "
                             "DATA (see docs/spam.md for the two-instance recipe)")
        self.verdict(1)

    def verdict(self, seconds: int) -> Verdict:
        """Return the tempfail verdict for a wait of ``seconds``."""
        return Verdict.of(Action.TEMPFAIL, self.message.replace("{seconds}", str(seconds)),
                          f"greylisted for {seconds}s", "greylist")


def address_matches(addr: str, patterns: list[str]) -> bool:
    """``addr`` against ``user@domain``, ``user@``, ``@domain`` and ``@.domain`` patterns."""
    addr = addr.lower()
    local, _at, domain = addr.rpartition("@")
    for pat in (p.lower() for p in patterns):
        if pat.startswith("@"):
            if domain_matches(domain, [pat[1:]]):
                return True
        elif pat.endswith("@"):
            if local == pat[:-1]:
                return True
        elif "@" not in pat:
            if domain_matches(domain, [pat]):
                return True
        elif addr == pat:
            return True
    return False


def auth_domains(mail: Mail, method: str, prop: str) -> set[str]:
    """Return domains with ``method=pass`` in earlier filters' authentication results."""
    return {domain_of(v) if "@" in v else v.lower()
            for _n, result in mail.prior for a in result.auth
            if a.method == method and a.result == "pass" for k, v in a.props if k == prop}


class GreylistFilter(Filter):
    """Greylist by (client network, sender, recipient); see the module docstring."""

    name = "greylist"
    description = "triplet greylisting with retry window, auto-whitelist and exemptions"
    stage = Stage.RCPT
    Options = GreylistOptions

    def __new__(cls, options: GreylistOptions) -> GreylistFilter:
        """With ``stage = "eom"`` the instance is a ``GreylistEomFilter``."""
        target = GreylistEomFilter if options.stage == "eom" else cls
        return super().__new__(target)

    def __init__(self, options: GreylistOptions) -> None:
        super().__init__(options)
        self.opts = options

    def exempt(self, ctx: Context, mail: Mail) -> str:  # noqa: PLR0911 - one per exemption
        """Return why this message is not greylisted at all ("" when it is)."""
        opts, env = self.opts, mail.envelope
        if opts.exempt_authenticated and env.authenticated:
            return "authenticated"
        if opts.exempt_trusted and in_networks(env.client_ip,
                                               ctx.settings.get("trusted_networks", [])):
            return "trusted network"
        if in_networks(env.client_ip, opts.exempt_networks):
            return "exempt_networks"
        if address_matches(env.mail_from, opts.exempt_senders):
            return "exempt_senders"
        if opts.spf_pass_domains:
            spf = {str(mail.fact("spf.domain") or "").lower()} if mail.fact(
                "spf.result") == "pass" else set()
            spf |= auth_domains(mail, "spf", "smtp.mailfrom")
            if any(domain_matches(d, opts.spf_pass_domains) for d in spf if d):
                return "SPF pass"
        if opts.dkim_pass_domains:
            fact = mail.fact("dkim.pass_domains") or ()
            dkim = {str(d).lower() for d in fact} if isinstance(fact, list | tuple | set) else set()
            dkim |= auth_domains(mail, "dkim", "header.d")
            if any(domain_matches(d, opts.dkim_pass_domains) for d in dkim):
                return "DKIM pass"
        return ""

    async def whitelisted(self, ctx: Context, net: str) -> bool:
        """Tell whether the client network is auto-whitelisted (and refresh its expiry)."""
        if self.opts.awl_count == 0:
            return False
        key = f"grey:awl:{net}"
        if await ctx.store.get(key) is None:
            return False
        await ctx.store.set(key, b"1", ttl=self.opts.awl_days * DAY)
        return True

    async def passed(self, ctx: Context, net: str) -> None:
        """Count a pass of the client network towards the auto-whitelist."""
        if self.opts.awl_count == 0:
            return
        ttl = self.opts.awl_days * DAY
        if await ctx.store.incr(f"grey:awlc:{net}", 1, ttl=ttl) >= self.opts.awl_count:
            await ctx.store.set(f"grey:awl:{net}", b"1", ttl=ttl)

    async def triplet(self, ctx: Context, net: str, sender: str, rcpt: str) -> int:
        """Return the seconds the client must still wait for this triplet (0: it passes)."""
        opts, store, now = self.opts, ctx.store, ctx.now()
        key = f"grey:t:{digest(net, sender, rcpt.lower())}"
        entry = _load(await store.get(key))
        fresh: dict[str, Any] = {"first": now, "passed": None, "tries": 1,
                                 "triplet": [net, sender, rcpt]}
        if entry is None:
            if await store.add(key, _dump(fresh), ttl=opts.window):
                return opts.delay
            entry = _load(await store.get(key)) or fresh  # another instance made it just now
        if entry.get("passed") is not None:
            entry["passed"] = now
            await store.set(key, _dump(entry), ttl=opts.pass_days * DAY)
            await self.passed(ctx, net)
            return 0
        elapsed = now - float(entry["first"])
        if elapsed >= opts.window or elapsed < 0:  # retry too late (or clocks disagree)
            await store.set(key, _dump(fresh), ttl=opts.window)
            return opts.delay
        if elapsed < opts.delay:
            entry["tries"] = int(entry.get("tries", 1)) + 1
            await store.set(key, _dump(entry), ttl=opts.window)
            return max(1, math.ceil(opts.delay - elapsed))
        entry["passed"] = now
        await store.set(key, _dump(entry), ttl=opts.pass_days * DAY)
        await self.passed(ctx, net)
        return 0

    async def decide(self, ctx: Context, mail: Mail, rcpts: list[str]) -> FilterResult:
        """Greylist ``rcpts``; the longest wait of any of them is the reply."""
        why = self.exempt(ctx, mail)
        net = client_network(mail.envelope.client_ip, self.opts.ipv4_prefix,
                             self.opts.ipv6_prefix)
        if not why and not net:
            why = "no client IP"
        if not why and await self.whitelisted(ctx, net):
            why = "auto-whitelisted network"
        if why:
            return FilterResult(facts={"greylist.state": "exempt", "greylist.reason": why})
        sender = normalize_sender(mail.envelope.mail_from, fold_digits=self.opts.fold_digits)
        wait = 0
        for rcpt in rcpts:
            if not address_matches(rcpt, self.opts.exempt_recipients):
                wait = max(wait, await self.triplet(ctx, net, sender, rcpt))
        if wait == 0:
            return FilterResult(facts={"greylist.state": "passed"})
        reason = f"{net} <{sender}> wait {wait}s"
        return FilterResult(verdict=self.opts.verdict(wait),
                            symbols=[Symbol("GREYLIST", 0.0, reason)],
                            facts={"greylist.state": "delayed", "greylist.wait": wait})

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Greylist the recipient of this RCPT command."""
        return await self.decide(ctx, mail, [mail.rcpt] if mail.rcpt else [])


class GreylistEomFilter(GreylistFilter):
    """``greylist`` with ``stage = "eom"``: all recipients at end of data, DKIM known."""

    stage = Stage.EOM

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Greylist every recipient of the message at once."""
        return await self.decide(ctx, mail, list(mail.envelope.rcpts))


def _dump(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode()


def _load(raw: bytes | None) -> dict[str, Any] | None:
    """Return a stored triplet, or None when absent or unreadable (it starts over)."""
    if raw is None:
        return None
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("first"), int | float):
        return None
    return entry


FILTER = GreylistFilter
