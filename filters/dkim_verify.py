"""``dkim-verify``: check every DKIM signature of a message (RFC 6376, RFC 8463, RFC 8301).

Owns the verify filter: its options, the mapping of per-signature outcomes to symbols, the
``dkim.results`` fact (read by ``dmarc``) and the ``dkim=`` Authentication-Results entries.
The cryptography and key parsing live in ``_dkim_verifier`` (it and ``_dkim_adapter`` are the
only dkimpy importers); key records come from the pipeline's resolver (cached with the
record's TTL), so a DNS timeout is ``temperror``, never ``fail``. The verification runs on the
event loop when its keys are in the cache or can be fetched asynchronously first, and in a
worker thread otherwise or for messages over ``INLINE_MAX_BYTES`` (``_inline.run_with_dns``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.options import OptionError, OptionTable, option, suggest
from rohrpost.record import replace
from rohrpost.result import AuthResult, FilterResult, Symbol

if TYPE_CHECKING:
    from ._dkim_verifier import SignatureResult

DEFAULT_SCORES: dict[str, float] = {
    "R_DKIM_ALLOW": -0.2,
    "R_DKIM_REJECT": 1.0,
    "R_DKIM_TEMPFAIL": 0.0,
    "R_DKIM_PERMFAIL": 0.0,
    "R_DKIM_NA": 0.0,
    "DKIM_L_UNSIGNED_CONTENT": 1.0,
    "DKIM_WEAK_KEY": 0.0,
    "DKIM_TOO_MANY_SIGNATURES": 0.0,
}
#: larger messages are verified in a worker thread, not on the event loop (finding 21)
INLINE_MAX_BYTES = 256 * 1024
#: attempts on the loop: each may fetch one missing key asynchronously for the next
INLINE_ROUNDS = 3
# which symbol a per-signature result raises
_RESULT_SYMBOL = {"pass": "R_DKIM_ALLOW", "fail": "R_DKIM_REJECT", "temperror": "R_DKIM_TEMPFAIL",
                  "permerror": "R_DKIM_PERMFAIL", "policy": "R_DKIM_PERMFAIL",
                  "neutral": "R_DKIM_PERMFAIL"}


class DkimVerifyOptions(OptionTable):
    """Options of ``dkim-verify``.

    :param max_signatures: evaluate at most this many signatures (top first); more are ignored.
    :param min_rsa_bits: RSA keys below this give ``policy`` (RFC 8301 forbids < 1024).
    :param weak_rsa_bits: RSA keys below this (but >= min) pass with symbol DKIM_WEAK_KEY.
    :param l_policy: signatures with ``l=`` that leave body content unsigned: ``accept``,
        ``flag`` (pass plus DKIM_L_UNSIGNED_CONTENT) or ``ignore-signature`` (``policy``).
    :param clock_skew: seconds of tolerance for ``t=`` in the future and ``x=`` in the past.
    :param allow_sha1: accept rsa-sha1 signatures (RFC 8301 says no).
    :param scores: symbol name to score, over the defaults.
    """

    max_signatures: int = 5
    min_rsa_bits: int = 1024
    weak_rsa_bits: int = 2048
    l_policy: Literal["accept", "flag", "ignore-signature"] = "flag"
    clock_skew: int = 300
    allow_sha1: bool = False
    scores: dict[str, float] = option(default_factory=dict)


def check_scores(scores: dict[str, float], known: Sequence[str], where: str) -> dict[str, float]:
    """Defaults overlaid with ``scores``; an unknown symbol name is an OptionError."""
    for name in scores:
        if name not in known:
            raise OptionError(f"{where}.{name}", "unknown symbol", suggest(name, list(known)))
    return {**{k: DEFAULT_SCORES.get(k, 0.0) for k in known}, **scores}


class DkimVerify(Filter):
    """Verify DKIM signatures; publish ``dkim.results``; add ``dkim=`` results."""

    name = "dkim-verify"
    description = "Verify DKIM signatures (RSA, Ed25519) with per-signature results."
    stage = Stage.EOM
    Options = DkimVerifyOptions

    def __init__(self, options: DkimVerifyOptions) -> None:
        super().__init__(options)
        if options.max_signatures < 1:
            raise OptionError("max_signatures", "must be at least 1")
        if options.min_rsa_bits < 1024:
            raise OptionError("min_rsa_bits", "RFC 8301: keys below 1024 bits are never valid")
        self.scores = check_scores(options.scores, list(DEFAULT_SCORES), "scores")

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Verify (on the loop when the keys are known, else in a worker), map the results."""
        from . import _dkim_verifier as verifier
        from ._inline import SyncResolver, run_with_dns

        if mail.message is None:
            return FilterResult()
        opts: DkimVerifyOptions = self.options
        policy = verifier.VerifyPolicy(now=ctx.now(), min_rsa_bits=opts.min_rsa_bits,
                                      clock_skew=opts.clock_skew, allow_sha1=opts.allow_sha1)
        raw = mail.message.without_from_line()

        def verify(resolver: SyncResolver) -> tuple[list[SignatureResult], int]:
            def lookup(name: str) -> tuple[str, ...]:
                return resolver.query_sync(name, "TXT").records

            return verifier.verify_dkim(raw, lookup, policy, opts.max_signatures)

        results, found = await run_with_dns(ctx, verify, rounds=INLINE_ROUNDS, prefetch=True,
                                            inline=len(raw) <= INLINE_MAX_BYTES)
        return self.result(results, found)

    def result(self, results: Sequence[SignatureResult], found: int) -> FilterResult:
        """Symbols, auth results and facts for the per-signature results."""
        opts: DkimVerifyOptions = self.options
        results = [self._apply_l_policy(r) for r in results]
        symbols: list[Symbol] = []
        if not results:
            symbols.append(self._symbol("R_DKIM_NA", "no DKIM signature"))
            return FilterResult(symbols=symbols, auth=[AuthResult("dkim", "none")],
                                facts={"dkim.results": []})
        by_symbol: dict[str, list[str]] = {}
        for r in results:
            label = f"{r.domain or '?'}:{r.selector or '?'}"
            label += f" ({r.reason})" if r.reason else ""
            by_symbol.setdefault(_RESULT_SYMBOL.get(r.result, "R_DKIM_PERMFAIL"), []).append(label)
        symbols += [self._symbol(name, "; ".join(labels)) for name, labels in by_symbol.items()]
        unsigned = [r.domain for r in results if r.unsigned_body]
        if unsigned and opts.l_policy == "flag":
            symbols.append(self._symbol("DKIM_L_UNSIGNED_CONTENT",
                                        "l= leaves content unsigned: " + ", ".join(unsigned)))
        weak = [f"{r.domain} ({r.key_bits} bits)" for r in results
                if r.result == "pass" and r.algorithm.startswith("rsa")
                and 0 < r.key_bits < opts.weak_rsa_bits]
        if weak:
            symbols.append(self._symbol("DKIM_WEAK_KEY", "weak RSA key: " + ", ".join(weak)))
        if found > len(results):
            symbols.append(self._symbol("DKIM_TOO_MANY_SIGNATURES",
                                        f"{found} signatures, evaluated {len(results)}"))
        return FilterResult(symbols=symbols, auth=[auth_result(r) for r in results],
                            facts={"dkim.results": [r.fact() for r in results]})

    def _apply_l_policy(self, r: SignatureResult) -> SignatureResult:
        if not r.unsigned_body:
            return r
        if self.options.l_policy == "ignore-signature":
            return replace(r, result="policy", reason="l= leaves content unsigned",
                           unsigned_body=False)
        if self.options.l_policy == "flag":
            return replace(r, reason="l= leaves content unsigned")
        return r

    def _symbol(self, name: str, reason: str) -> Symbol:
        return Symbol(name, self.scores[name], reason)


def auth_result(r: SignatureResult) -> AuthResult:
    """``dkim=RESULT header.d= header.s= header.a= header.b=`` (RFC 8601 2.7.1, RFC 6008)."""
    props = [("header.d", r.domain), ("header.s", r.selector), ("header.a", r.algorithm),
             ("header.b", r.b)]
    if r.identity:
        props.insert(1, ("header.i", r.identity))
    return AuthResult("dkim", r.result, r.reason if r.result != "pass" else "",
                      [(k, v) for k, v in props if v])


FILTER = DkimVerify
