"""The ``dmarc`` filter: RFC 7489 DMARC with the DMARCbis tree walk, at end of message.

Owns the filter's options and the policy decision: author domain(s) from From, alignment of
the SPF result (facts ``spf.result``/``spf.domain`` from the ``spf`` filter) and the DKIM
results (fact ``dkim.results`` from ``dkim-verify``: a list of dicts with ``domain``,
``selector``, ``result``, ``algorithm``) through the public suffix list, policy discovery by the
tree walk, ``p``/``sp``/``np``, ``pct`` and ``t=y``, local overrides (trusted forwarders, ARC
from trusted sealers), and the verdict. It collects aggregate-report data in the state store
(see ``_dmarc_util``); it never sends anything itself.

Multiple From header fields are refused by default (``multiple_from = "reject"``): RFC 5322
allows one, and a second one is the classic trick to show the reader a different sender than
the one DKIM and DMARC checked. One From field with several addresses is evaluated per domain
and the strictest failing policy applies (RFC 7489 6.6.1).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.options import OptionError
from rohrpost.result import Action, AuthResult, FilterResult, Symbol, Verdict

from ._dmarc_discovery import discover, domain_exists
from ._dmarc_record import POLICIES, aligned
from ._dmarc_util import (
    Evaluation,
    FromError,
    ReportMemo,
    arc_says_dmarc_passed,
    dkim_results,
    from_domains,
    record_report,
)
from ._nets import in_networks
from ._psl import DEFAULT_PATH, PublicSuffixList

SYMBOLS = {"pass": "DMARC_POLICY_ALLOW", "reject": "DMARC_POLICY_REJECT",
           "quarantine": "DMARC_POLICY_QUARANTINE", "softfail": "DMARC_POLICY_SOFTFAIL",
           "none": "DMARC_NA", "permerror": "DMARC_BAD_POLICY", "temperror": "DMARC_DNSFAIL",
           "override": "DMARC_POLICY_OVERRIDE"}
DEFAULT_SCORES = {"pass": -0.5, "reject": 2.0, "quarantine": 1.5, "softfail": 0.1, "none": 0.0,
                  "permerror": 0.5, "temperror": 0.0, "override": 0.0}
_RANK = {"fail": 4, "temperror": 3, "permerror": 2, "pass": 1, "none": 0}
Handling = Literal["reject", "quarantine", "score", "none"]


@dataclass(frozen=True)
class DmarcOptions:
    """Options of the ``dmarc`` filter."""

    reject_action: Handling = field(default="reject", metadata={
        "help": "what p=reject does: reject (550 5.7.1), quarantine, score (symbol only), none"})
    quarantine_action: Literal["quarantine", "score", "none"] = field(
        default="quarantine", metadata={"help": "what p=quarantine does"})
    reject_message: str = field(default="550 5.7.1 Email rejected per DMARC policy", metadata={
        "help": "SMTP reply for a DMARC reject"})
    multiple_from: Literal["reject", "evaluate"] = field(default="reject", metadata={
        "help": "several From header fields: reject, or evaluate every domain (RFC 7489 6.6.1)"})
    tempfail_on_temperror: bool = field(default=False, metadata={
        "help": "answer 451 when the policy could not be fetched"})
    scores: dict[str, float] = field(default_factory=dict, metadata={
        "help": "score per outcome: " + ", ".join(DEFAULT_SCORES)})
    trusted_forwarders: list[str] = field(default_factory=list, metadata={
        "help": "client networks whose failing mail is not refused (override trusted_forwarder)"})
    skip_authenticated: bool = field(default=True, metadata={
        "help": "do not evaluate mail from SMTP-authenticated users"})
    skip_trusted_networks: bool = field(default=True, metadata={
        "help": "do not evaluate mail from [pipeline] trusted_networks (our own outgoing)"})
    arc_override: bool = field(default=False, metadata={
        "help": "accept failing mail whose valid ARC chain from a trusted sealer says dmarc=pass"})
    trusted_arc_sealers: list[str] = field(default_factory=list, metadata={
        "help": "ARC sealing domains trusted for arc_override (e.g. lists.example.org)"})
    psl_file: str = field(default=DEFAULT_PATH, metadata={
        "help": "public suffix list (Debian package publicsuffix)"})
    collect_reports: bool = field(default=True, metadata={
        "help": "store aggregate-report data for 'rohrpost dmarc report'"})
    relationship_days: float = field(default=180.0, metadata={
        "help": "days a domain stays 'established' after aligned passing mail"})

    def __post_init__(self) -> None:
        for key in self.scores:
            if key not in DEFAULT_SCORES:
                raise OptionError("scores", f"unknown outcome {key!r}",
                                  "use " + ", ".join(DEFAULT_SCORES))
        if self.arc_override and not self.trusted_arc_sealers:
            raise OptionError("trusted_arc_sealers", "arc_override needs at least one sealer")


class DmarcFilter(Filter):
    """DMARC policy evaluation and enforcement with report-data collection."""

    name: ClassVar[str] = "dmarc"
    description: ClassVar[str] = "DMARC (RFC 7489, DMARCbis tree walk) with aggregate reports"
    stage: ClassVar[Stage] = Stage.EOM
    Options: ClassVar[type[DmarcOptions]] = DmarcOptions

    def __init__(self, options: DmarcOptions) -> None:
        super().__init__(options)
        self.opts = options
        self.scores = {**DEFAULT_SCORES, **options.scores}
        try:
            self.psl = PublicSuffixList.load(options.psl_file)
        except OSError as exc:
            raise OptionError("psl_file", f"cannot read {options.psl_file}: {exc.strerror}",
                              "install Debian's publicsuffix package") from None
        #: pct sampling; a test may replace it with a fixed function
        self.sample: Callable[[], float] = random.random
        #: report keys this process already wrote (fewer commits per message, finding 18)
        self.report_memo = ReportMemo()
        #: organizational domains by domain (the PSL walk for the same few domains each time)
        self.org_domain: Callable[[str], str] = functools.lru_cache(maxsize=4096)(
            functools.partial(organizational_domain, self.psl))

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Evaluate the From domain(s), decide the disposition, record report data."""
        if self.opts.skip_authenticated and mail.envelope.authenticated:
            return FilterResult(facts={"dmarc.skipped": "authenticated"})
        trusted = list(ctx.settings.get("trusted_networks", ()))
        if (self.opts.skip_trusted_networks and mail.envelope.client_ip
                and in_networks(mail.envelope.client_ip, trusted)):
            # our own outgoing mail: dkim-sign runs after us, so it would look unsigned here
            return FilterResult(facts={"dmarc.skipped": "trusted network"})
        if mail.message is None:
            return FilterResult(facts={"dmarc.skipped": "no message"})
        try:
            domains, count = from_domains(mail.message)
        except FromError as exc:
            return self._finish(ctx, mail, [Evaluation("", "permerror", reason=str(exc))])
        if count > 1 and self.opts.multiple_from == "reject":
            ev = Evaluation(domains[0], "permerror", reason="multiple From header fields")
            verdict = Verdict.of(Action.REJECT, "550 5.7.1 Message has several From fields",
                                 ev.reason, self.name)
            return self._finish(ctx, mail, [ev], verdict)
        evaluations = [await self._evaluate(ctx, mail, d) for d in domains]
        for ev in evaluations:
            if self.opts.collect_reports and ev.record is not None:
                await record_report(ctx, mail, ev, self.opts.relationship_days,
                                    self.report_memo)
        return self._finish(ctx, mail, evaluations)

    async def _evaluate(self, ctx: Context, mail: Mail, author: str) -> Evaluation:
        found = await discover(ctx.resolver, author)
        if found.error:
            return Evaluation(author, found.error, policy_domain=found.domain,
                              reason=found.reason)
        record = found.record
        if record is None or (record.p is None and not record.rua):
            return Evaluation(author, "none", reason=found.reason or "record without p=")
        subdomain = found.domain != author
        if record.psd == "y" and subdomain and author.endswith("." + found.domain):
            subdomain = author.count(".") > found.domain.count(".") + 1  # below the org
        nonexistent = record.np is not None and not await domain_exists(ctx.resolver, author)
        policy = record.policy_for(subdomain=subdomain, nonexistent=nonexistent) or "none"
        ev = Evaluation(author, "fail", record, found.domain, policy)
        self._align(ev, mail, record.adkim, record.aspf)
        if ev.dkim_aligned or ev.spf_aligned:
            ev.result = "pass"
        else:
            ev.disposition = self._disposition(ev, mail)
        return ev

    def _align(self, ev: Evaluation, mail: Mail, adkim: str, aspf: str) -> None:
        org = self.org_domain
        for sig in dkim_results(mail):
            if sig.get("result") == "pass" and aligned(str(sig.get("domain", "")), ev.author,
                                                       adkim, org):
                ev.dkim_aligned = True
        spf_domain = str(mail.fact("spf.domain", "") or "")
        if mail.fact("spf.result") == "pass":
            ev.spf_aligned = aligned(spf_domain, ev.author, aspf, org)

    def _disposition(self, ev: Evaluation, mail: Mail) -> str:
        """Apply overrides, t=y and pct to the failing policy (RFC 7489 6.6.4, 7.2.1)."""
        assert ev.record is not None
        policy = ev.policy
        env = mail.envelope
        if self.opts.trusted_forwarders and in_networks(env.client_ip,
                                                          self.opts.trusted_forwarders):
            ev.overrides.append(("trusted_forwarder", f"client {env.client_ip}"))
        elif self.opts.arc_override and mail.fact("arc.result") == "pass" and mail.message:
            sealer = arc_says_dmarc_passed(mail.message, self.opts.trusted_arc_sealers,
                                           ev.author)
            if sealer:
                ev.overrides.append(("local_policy", f"arc=pass as.d={sealer} dmarc=pass"))
        if ev.overrides:
            return "none"
        if policy != "none" and (ev.record.testing or self.sample() * 100 >= ev.record.pct):
            ev.overrides.append(("sampled_out", "t=y" if ev.record.testing else
                                 f"pct={ev.record.pct}"))
            return POLICIES[POLICIES.index(policy) - 1]
        return policy

    def _finish(self, ctx: Context, mail: Mail, evaluations: list[Evaluation],
                verdict: Verdict | None = None) -> FilterResult:
        ev = max(evaluations, key=lambda e: (_RANK[e.result], POLICIES.index(e.disposition)))
        symbol = self._symbol(ev)
        if self._handling(ev) == "none" and ev.result == "fail":
            symbol = Symbol(symbol.name, 0.0, symbol.reason + " (action none)")
        auth = AuthResult("dmarc", ev.result, ev.reason if ev.result.endswith("error") else "",
                          [("header.from", ev.author or "unknown"),
                           ("policy.dmarc", ev.policy)])
        verdict = verdict or self._verdict(ctx, ev)
        facts: dict[str, object] = {
            "dmarc.result": ev.result, "dmarc.domain": ev.author, "dmarc.policy": ev.policy,
            "dmarc.disposition": ev.disposition, "dmarc.policy_domain": ev.policy_domain}
        del mail
        return FilterResult(verdict=verdict, symbols=[symbol], auth=[auth], facts=facts)

    def _symbol(self, ev: Evaluation) -> Symbol:
        if ev.result == "fail":
            key = ("override" if ev.overrides and ev.overrides[0][0] != "sampled_out"
                   else {"none": "softfail"}.get(ev.disposition, ev.disposition))
        else:
            key = ev.result
        why = f"{ev.author or '-'}: {ev.result} p={ev.policy} dis={ev.disposition}"
        if ev.overrides:
            why += " (" + ", ".join(f"{t}: {c}" for t, c in ev.overrides) + ")"
        return Symbol(SYMBOLS[key], self.scores[key], why)

    def _handling(self, ev: Evaluation) -> str:
        """Return what to do about the disposition: reject, quarantine, score or none."""
        if ev.result != "fail" or ev.disposition == "none":
            return "score"
        table = {"reject": self.opts.reject_action, "quarantine": self.opts.quarantine_action}
        return table[ev.disposition]

    def _verdict(self, ctx: Context, ev: Evaluation) -> Verdict | None:
        o = self.opts
        if ev.result == "temperror" and o.tempfail_on_temperror:
            return Verdict.of(Action.TEMPFAIL, "451 4.7.5 DMARC policy lookup failed, try later",
                              ev.reason, self.name)
        handling = self._handling(ev)
        reason = f"DMARC policy {ev.disposition} for {ev.author}"
        if handling == "reject":
            ctx.log.debug("dmarc: reject (%s)", reason)
            return Verdict.of(Action.REJECT, o.reject_message, reason, self.name)
        if handling == "quarantine":
            return Verdict.of(Action.QUARANTINE, "", reason, self.name)
        return None


def organizational_domain(psl: PublicSuffixList, domain: str) -> str:
    """Return the organizational domain (RFC 7489 3.2): public suffix plus one label.

    A domain that is itself a public suffix is its own organizational domain.
    """
    return psl.registered_domain(domain) or domain.lower().rstrip(".")


FILTER = DmarcFilter
