"""``arc-verify``: validate the ARC chain of a message (RFC 8617).

Owns the ARC verify filter: the chain result as ``arc=`` in Authentication-Results, the facts
``arc.result`` ("pass", "fail", "none"; "temperror" when a key lookup timed out) and
``arc.sealers`` (the d= of every ARC-Seal, oldest first) that ``dmarc`` reads for its trusted
ARC sealer override, and the ARC_* symbols. dkimpy does the work through ``_dkim_verifier``,
on the event loop when the keys are known (``_inline.run_with_dns``, as ``dkim-verify``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.options import OptionError, suggest
from rohrpost.result import AuthResult, FilterResult, Symbol

DEFAULT_SCORES = {"ARC_ALLOW": -0.1, "ARC_REJECT": 1.0, "ARC_NA": 0.0, "ARC_DNSFAIL": 0.0}
_SYMBOL = {"pass": "ARC_ALLOW", "fail": "ARC_REJECT", "none": "ARC_NA",
           "temperror": "ARC_DNSFAIL"}


@dataclass(frozen=True)
class ArcVerifyOptions:
    """Options of ``arc-verify``.

    :param min_rsa_bits: smaller keys make a seal or message signature invalid.
    :param scores: symbol name to score, over the defaults (ARC_ALLOW, ARC_REJECT, ARC_NA,
        ARC_DNSFAIL).
    """

    min_rsa_bits: int = 1024
    scores: dict[str, float] = field(default_factory=dict)


class ArcVerify(Filter):
    """Validate the ARC chain; publish ``arc.result`` and ``arc.sealers``."""

    name = "arc-verify"
    description = "Validate ARC chains (RFC 8617); facts for DMARC's trusted-sealer override."
    stage = Stage.EOM
    Options = ArcVerifyOptions

    def __init__(self, options: ArcVerifyOptions) -> None:
        super().__init__(options)
        for name in options.scores:
            if name not in DEFAULT_SCORES:
                raise OptionError(f"scores.{name}", "unknown symbol",
                                  suggest(name, list(DEFAULT_SCORES)))
        self.scores = {**DEFAULT_SCORES, **options.scores}

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Validate (on the loop when the keys are known, else in a worker thread)."""
        from ._dkim_verifier import ArcResult, arc_verify
        from ._inline import SyncResolver, run_with_dns
        from .dkim_verify import INLINE_MAX_BYTES, INLINE_ROUNDS

        if mail.message is None:
            return FilterResult()
        raw = mail.message.without_from_line()
        min_rsa_bits = self.options.min_rsa_bits

        def validate(resolver: SyncResolver) -> ArcResult:
            def lookup(name: str) -> tuple[str, ...]:
                return resolver.query_sync(name, "TXT").records

            return arc_verify(raw, lookup, min_rsa_bits)

        res = await run_with_dns(ctx, validate, rounds=INLINE_ROUNDS, prefetch=True,
                                 inline=len(raw) <= INLINE_MAX_BYTES)
        symbol = _SYMBOL[res.cv]
        reason = res.reason if res.cv != "pass" else ""
        why = f"{res.cv}: {res.reason}" + (f" (sealers {', '.join(res.sealers)})"
                                          if res.sealers else "")
        return FilterResult(
            symbols=[Symbol(symbol, self.scores[symbol], why)],
            auth=[AuthResult("arc", res.cv, reason if res.cv != "none" else "")],
            facts={"arc.result": res.cv, "arc.sealers": list(res.sealers)},
        )


FILTER = ArcVerify
