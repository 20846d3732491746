"""Test-only RCPT filter: refuses nobody@..., defers later@..."""

from __future__ import annotations

from dataclasses import dataclass

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.result import Action, FilterResult, Verdict


@dataclass(frozen=True)
class Options:
    pass


class ServeRcpt(Filter):
    name = "serve-rcpt"
    description = "test: per-recipient verdicts"
    stage = Stage.RCPT
    Options = Options

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        if mail.rcpt.startswith("nobody@"):
            return FilterResult(verdict=Verdict.of(Action.REJECT, "550 5.1.1 No such user"))
        if mail.rcpt.startswith("later@"):
            return FilterResult(verdict=Verdict.of(Action.TEMPFAIL, "450 4.2.0 Try later"))
        return FilterResult()


FILTER = ServeRcpt
