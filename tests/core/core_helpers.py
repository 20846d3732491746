"""Test-only filters and a tiny pipeline builder for the core tests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rohrpost.config import Config, FilterSpec, parse_config
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.pipeline import Pipeline, Step
from rohrpost.result import FilterResult


@dataclass(frozen=True)
class NoOptions:
    pass


class Fixed(Filter):
    """Returns a fixed result at a chosen stage; records what it saw."""

    name = "fixed"
    description = "test"
    Options = NoOptions

    def __init__(self, result: FilterResult, stage: Stage = Stage.EOM) -> None:
        super().__init__(NoOptions())
        self.result = result
        self.stage = stage  # type: ignore[misc]
        self.seen: list[Mail] = []

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        self.seen.append(mail)
        return self.result


class Raises(Fixed):
    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        raise RuntimeError("backend exploded with secret detail")


class Sleeps(Fixed):
    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        await asyncio.sleep(30)
        return self.result


def make_pipeline(filters: Sequence[tuple[str, Filter]], toml: str = "",
                  *, on_error: str = "tempfail", timeout: float = 5.0,
                  when: Any = None) -> Pipeline:
    config: Config = parse_config(toml or '[pipeline]\nauthserv_id = "mx.test"\n', "test.toml")
    steps = []
    for i, (name, flt) in enumerate(filters):
        spec = FilterSpec(use="fixed", name=name, index=i, **({"when": when} if when else {}))
        steps.append(Step(spec, flt, timeout, on_error))
    return Pipeline(config, steps)
