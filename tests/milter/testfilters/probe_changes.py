"""Test-only filter ``probe-changes``: returns the header changes listed in its options.

Each entry is ``op:name:index:value`` with op ``add``, ``insert`` or ``change`` (an empty
value with ``change`` deletes). Used to check on a real Postfix that header indexes mean the
same as in ``rohrpost.apply.apply_changes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rohrpost.changes import AddHeader, Change, ChangeHeader, InsertHeader
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.result import FilterResult


@dataclass(frozen=True)
class Options:
    change: list[str] = field(default_factory=list)


def parse(entry: str) -> Change:
    op, name, index, value = entry.split(":", 3)
    value = value.replace("\\n", "\n")
    if op == "add":
        return AddHeader(name, value)
    if op == "insert":
        return InsertHeader(int(index), name, value)
    return ChangeHeader(name, int(index), value or None)


class ProbeChanges(Filter):
    name = "probe-changes"
    description = "test-only: fixed header changes"
    stage = Stage.EOM
    Options = Options

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        return FilterResult(changes=[parse(e) for e in self.options.change])


FILTER = ProbeChanges
