"""The ``spf`` filter: RFC 7208 checks of the MAIL FROM and HELO identities (pyspf).

Owns the filter's options, the result-to-symbol mapping and the receiver policy (scores,
optional reject on ``fail``, optional tempfail on ``temperror``). It runs at the MAIL stage, so
in milter mode a hard fail can be refused before the body is sent. DNS goes through the
pipeline's resolver via ``filters._spf_adapter`` (the only module that imports pyspf); this
module must not import pyspf or change any of its globals.

Published facts: ``spf.result`` and ``spf.domain`` (the identity DMARC aligns: MAIL FROM, or
the HELO name for the null sender), ``spf.identity``, ``spf.helo_result``, ``spf.skipped``.
"""

from __future__ import annotations

import contextvars
import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar

from rohrpost.envelope import domain_of
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.options import OptionError
from rohrpost.result import Action, AuthResult, FilterResult, Symbol, Verdict

from ._nets import in_networks

#: The seven RFC 7208 results, in the order of section 2.6.
RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")
#: Results of older pyspf interfaces (RFC 4408 names) mapped to RFC 7208's.
_OLD_NAMES = {"unknown": "permerror", "error": "temperror", "tempfail": "temperror"}

def normalize_result(result: str) -> str:
    """Map anything pyspf may return to one of ``RESULTS``.

    An unexpected value becomes ``temperror``: an internal surprise must never read as
    ``pass`` or ``fail`` (it would accept forged mail or refuse good mail).
    """
    value = str(result).strip().lower()
    value = _OLD_NAMES.get(value, value)
    return value if value in RESULTS else "temperror"


def normalize_client_ip(text: str) -> str:
    """Return the client address as pyspf wants it ("" when absent or not an IP).

    Postfix writes ``[192.0.2.1]`` or ``IPv6:2001:db8::1`` in some places; both are accepted.
    """
    value = text.strip().strip("[]").removeprefix("IPv6:").removeprefix("ipv6:")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return ""


@dataclass(frozen=True, slots=True)
class SpfCheck:
    """One ``check_host()`` outcome.

    :param result: one of ``RESULTS``.
    :param explanation: pyspf's explanation (the domain's ``exp=`` text for ``fail``).
    :param identity: ``"mailfrom"`` or ``"helo"``.
    :param domain: the domain checked (MAIL FROM domain, or the HELO name).
    """

    result: str
    explanation: str
    identity: str
    domain: str


#: Rspamd's symbol names for the MAIL FROM result, and its default scores.
SYMBOLS = {
    "pass": "R_SPF_ALLOW", "fail": "R_SPF_FAIL", "softfail": "R_SPF_SOFTFAIL",
    "neutral": "R_SPF_NEUTRAL", "none": "R_SPF_NA", "temperror": "R_SPF_DNSFAIL",
    "permerror": "R_SPF_PERMFAIL",
}
DEFAULT_SCORES = {"pass": -0.2, "fail": 1.0, "softfail": 0.0, "neutral": 0.0, "none": 0.0,
                  "temperror": 0.0, "permerror": 0.0}


def symbol_for(result: str, helo: bool = False) -> str:
    """Return the symbol of ``result`` (``R_SPF_HELO_*`` for the HELO identity).

    :raises ValueError: for a value that is not an RFC 7208 result.
    """
    name = SYMBOLS.get(result, "")
    if not name:
        raise ValueError(f"not an SPF result: {result!r}")
    return name.replace("R_SPF_", "R_SPF_HELO_") if helo else name


def _check_scores(table: dict[str, float], what: str) -> None:
    for key in table:
        if key not in RESULTS:
            raise OptionError(what, f"unknown SPF result {key!r}", "use " + ", ".join(RESULTS))


@dataclass(frozen=True)
class SpfOptions:
    """Options of the ``spf`` filter."""

    scores: dict[str, float] = field(default_factory=dict, metadata={
        "help": "score per MAIL FROM result (pass, fail, softfail, neutral, none, temperror, "
                "permerror), merged over the defaults"})
    helo_scores: dict[str, float] = field(default_factory=dict, metadata={
        "help": "score per HELO result (symbols R_SPF_HELO_*); default 0 for all"})
    check_helo: bool = field(default=True, metadata={
        "help": "also check the HELO identity (RFC 7208 2.3)"})
    reject_on_fail: bool = field(default=False, metadata={
        "help": "refuse MAIL FROM when its SPF result is fail"})
    reject_on_helo_fail: bool = field(default=False, metadata={
        "help": "refuse when the HELO identity's result is fail"})
    reject_on_softfail: bool = field(default=False, metadata={
        "help": "refuse softfail too (not recommended: RFC 7208 8.5)"})
    reject_on_permerror: bool = field(default=False, metadata={
        "help": "refuse when the sender's record is broken (RFC 7208 8.7 allows it)"})
    tempfail_on_temperror: bool = field(default=False, metadata={
        "help": "answer 451 when DNS failed temporarily (RFC 7208 8.6)"})
    reject_message: str = field(default="550 5.7.23 SPF validation failed", metadata={
        "help": "reply for reject_on_* (RFC 7372 codes)"})
    tempfail_message: str = field(default="451 4.7.24 SPF validation error, try again later",
                                  metadata={"help": "reply for tempfail_on_temperror"})
    skip_authenticated: bool = field(default=True, metadata={
        "help": "do not check mail from SMTP-authenticated users"})
    skip_trusted_networks: bool = field(default=True, metadata={
        "help": "do not check clients in [pipeline] trusted_networks"})
    timeout: float = field(default=20.0, metadata={
        "help": "seconds for one whole SPF evaluation (RFC 7208 4.6.4)"})

    def __post_init__(self) -> None:
        _check_scores(self.scores, "scores")
        _check_scores(self.helo_scores, "helo_scores")
        if self.timeout <= 0:
            raise OptionError("timeout", "must be positive")


class SpfFilter(Filter):
    """RFC 7208 SPF for MAIL FROM and HELO, with Rspamd-style symbols and opt-in rejects."""

    name: ClassVar[str] = "spf"
    description: ClassVar[str] = "SPF (RFC 7208) for MAIL FROM and HELO via pyspf"
    stage: ClassVar[Stage] = Stage.MAIL
    Options: ClassVar[type[SpfOptions]] = SpfOptions

    def __init__(self, options: SpfOptions) -> None:
        super().__init__(options)
        self.opts = options
        self.scores = {**DEFAULT_SCORES, **options.scores}
        self.helo_scores = {**dict.fromkeys(RESULTS, 0.0), **options.helo_scores}

    def _skip_reason(self, ctx: Context, mail: Mail, ip: str) -> str:
        env = mail.envelope
        if not ip:
            return "no client address"
        if self.opts.skip_authenticated and env.authenticated:
            return "authenticated"
        trusted = ctx.settings.get("trusted_networks", ())
        if self.opts.skip_trusted_networks and in_networks(ip, list(trusted)):
            return "trusted network"
        return ""

    async def _checks(self, ctx: Context, ip: str, sender: str, helo: str,
                      check_helo: bool) -> tuple[SpfCheck | None, SpfCheck | None]:
        """Check HELO (when ``check_helo``), then MAIL FROM, in one call.

        MAIL FROM is checked when there is a sender and HELO was not refused. The call runs on
        the event loop when every answer is in the resolver's cache, else in one worker-thread
        call for both identities (``_inline.run_with_dns``; one attempt, no prefetch: pyspf
        gives each query what is left of its time budget).
        """
        from ._inline import SyncResolver, run_with_dns
        from ._spf_adapter import check_host

        budget = self.opts.timeout
        context = contextvars.copy_context()  # check_host sets its resolver in there

        def both(resolver: SyncResolver) -> tuple[SpfCheck | None, SpfCheck | None]:
            first = check_host(resolver, ip, "", helo, total_timeout=budget) \
                if check_helo else None
            if not sender or (first is not None and self._helo_refused(first)):
                return first, None
            return first, check_host(resolver, ip, sender, helo, total_timeout=budget)

        return await run_with_dns(ctx, lambda resolver: context.run(both, resolver))

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Check HELO (when enabled and not the only identity), then MAIL FROM."""
        env = mail.envelope
        ip = normalize_client_ip(env.client_ip)
        skip = self._skip_reason(ctx, mail, ip)
        if skip:
            ctx.log.debug("spf: skipped (%s)", skip)
            return FilterResult(facts={"spf.skipped": skip})
        check_helo = bool(env.helo and (self.opts.check_helo or not env.mail_from))
        if not env.mail_from and not check_helo:
            return FilterResult(facts={"spf.skipped": "no MAIL FROM and no HELO"})
        helo_check, main = await self._checks(ctx, ip, env.mail_from, env.helo, check_helo)
        if env.mail_from:
            if main is None:  # HELO was refused: MAIL FROM not checked
                return self._result(ctx, env.mail_from, None, helo_check)
        else:
            main, helo_check = helo_check, None  # null sender: MAIL FROM is postmaster@HELO
        return self._result(ctx, env.mail_from, main, helo_check)

    def _helo_refused(self, helo: SpfCheck) -> bool:
        return self.opts.reject_on_helo_fail and helo.result == "fail"

    def _result(self, ctx: Context, sender: str, main: SpfCheck | None,
                helo: SpfCheck | None) -> FilterResult:
        symbols: list[Symbol] = []
        auth: list[AuthResult] = []
        facts: dict[str, object] = {}
        if main is not None:
            name = symbol_for(main.result)
            symbols.append(Symbol(name, self.scores[main.result], _reason(main)))
            ident = sender if main.identity == "mailfrom" else f"postmaster@{main.domain}"
            props = [("smtp.mailfrom", ident)]
            auth.append(AuthResult("spf", main.result, _ar_reason(main), props))
            facts.update({"spf.result": main.result, "spf.domain": main.domain or
                          domain_of(ident), "spf.identity": main.identity})
        if helo is not None:
            name = symbol_for(helo.result, helo=True)
            symbols.append(Symbol(name, self.helo_scores[helo.result], _reason(helo)))
            auth.append(AuthResult("spf", helo.result, _ar_reason(helo),
                                   [("smtp.helo", helo.domain)]))
            facts["spf.helo_result"] = helo.result
        verdict = self._verdict(main, helo)
        if verdict is not None:
            ctx.log.debug("spf: %s (%s)", verdict.action.value, verdict.reason)
        return FilterResult(verdict=verdict, symbols=symbols, auth=auth, facts=facts)

    def _verdict(self, main: SpfCheck | None, helo: SpfCheck | None) -> Verdict | None:
        o = self.opts
        if helo is not None and self._helo_refused(helo):
            return Verdict.of(Action.REJECT, o.reject_message,
                              f"SPF fail for HELO {helo.domain}", self.name)
        if main is None:
            return None
        refuse = {"fail": o.reject_on_fail, "softfail": o.reject_on_softfail,
                  "permerror": o.reject_on_permerror}
        if refuse.get(main.result, False):
            return Verdict.of(Action.REJECT, o.reject_message,
                              f"SPF {main.result} for {main.domain}", self.name)
        if main.result == "temperror" and o.tempfail_on_temperror:
            return Verdict.of(Action.TEMPFAIL, o.tempfail_message,
                              f"SPF temperror for {main.domain}", self.name)
        return None


def _reason(check: SpfCheck) -> str:
    return f"{check.identity} {check.domain}: {check.result}"


def _ar_reason(check: SpfCheck) -> str:
    """A-R reason text only where it explains a problem (errors), never the domain's exp=."""
    return check.explanation if check.result in ("temperror", "permerror") else ""


FILTER = SpfFilter
