"""Test-only filter ``probe-rules``: a small stand-in with the ``rules`` filter's contract.

Lives under tests/ so it never ships; the milter tests put this folder on
``rohrpost.filters.__path__`` (see tests/milter/launch.py). Rules match a header against a
regex and then reject/tempfail/discard/quarantine, add a score, add a header or a recipient.
Two extra actions exist for fault tests: ``raise`` and ``sleep`` (seconds in ``message``).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

from rohrpost.changes import AddHeader, AddRecipient, Change
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.result import Action, AuthResult, FilterResult, Symbol, Verdict


@dataclass(frozen=True)
class Rule:
    name: str
    header: str
    regex: str
    action: str = ""
    message: str = ""
    score: float = 0.0
    add_header: dict[str, str] = field(default_factory=dict)
    add_recipient: str = ""


@dataclass(frozen=True)
class Options:
    rule: list[Rule] = field(default_factory=list)
    auth: str = ""  # "method=result" reported as an Authentication-Results entry
    dump: str = ""  # folder: write each message as seen by the filter (queue id as name)


class ProbeRules(Filter):
    name = "probe-rules"
    description = "test-only header rules (the rules filter's contract)"
    stage = Stage.EOM
    Options = Options

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        assert mail.message is not None
        symbols: list[Symbol] = []
        changes: list[Change] = []
        opts = self.options
        auth = [AuthResult(*opts.auth.split("=", 1), props=[("header.from", "example.org")])
                ] if opts.auth else []
        if opts.dump:
            name = mail.envelope.queue_id or "noqid"
            with open(f"{opts.dump}/{name}.eml", "wb") as fh:
                fh.write(mail.message.raw)
        for rule in self.options.rule:
            values = [h.value for h in mail.message.get_all(rule.header)]
            if not any(re.search(rule.regex, v) for v in values):
                continue
            symbols.append(Symbol(rule.name, rule.score, f"{rule.header} matches"))
            if rule.add_header:
                changes.append(AddHeader(rule.add_header["name"], rule.add_header["value"]))
            if rule.add_recipient:
                changes.append(AddRecipient(rule.add_recipient))
            if rule.action == "raise":
                raise RuntimeError("probe failure with secret detail")
            if rule.action == "sleep":
                await asyncio.sleep(float(rule.message))
            elif rule.action:
                verdict = Verdict.of(Action(rule.action), rule.message, rule.name, self.name)
                return FilterResult(verdict, symbols, changes, auth)
        return FilterResult(symbols=symbols, changes=changes, auth=auth)


FILTER = ProbeRules
