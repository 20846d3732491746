"""Test-only CONNECT filter: rejects clients in ``block``."""

from __future__ import annotations

from dataclasses import dataclass, field

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.result import Action, FilterResult, Verdict


@dataclass(frozen=True)
class Options:
    block: list[str] = field(default_factory=list)


class ServeConnect(Filter):
    name = "serve-connect"
    description = "test: connect-stage block list"
    stage = Stage.CONNECT
    Options = Options

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        if mail.envelope.client_ip in self.options.block:
            return FilterResult(verdict=Verdict.of(Action.REJECT, "554 5.7.1 Client blocked"))
        return FilterResult()


FILTER = ServeConnect
