from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import Milter
import pytest

from rohrpost.config import FilterSpec, parse_config
from rohrpost.filter import Context, Filter, Mail, Services, Stage
from rohrpost.metrics import Metrics
from rohrpost.milter.connection import MilterApp, MilterConnection
from rohrpost.milter.loop import LoopThread
from rohrpost.pipeline import Pipeline, Step
from rohrpost.result import FilterResult
from tests.milter.harness import ExactCtx, bridge_factory


@dataclass(frozen=True)
class _NoOptions:
    pass


class FnFilter(Filter):
    """A test filter whose check is a plain async function; records every call."""

    name = "fn"
    description = "test"
    Options = _NoOptions

    def __init__(self, stage: Stage, fn: Callable[[Mail], Awaitable[FilterResult]]) -> None:
        super().__init__(_NoOptions())
        self.stage = stage  # type: ignore[misc]
        self.fn = fn
        self.calls: list[Mail] = []

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        self.calls.append(mail)
        return await self.fn(mail)


def const(result: FilterResult) -> Callable[[Mail], Awaitable[FilterResult]]:
    async def fn(mail: Mail) -> FilterResult:
        return result

    return fn


BASE_TOML = """
[pipeline]
var_dir = "{var}"
hostname = "mx.test"
authserv_id = "mx.test"
status_header = {status}
spam_headers = "{spam}"
[quarantine]
use_mta_hold = {hold}
"""


@pytest.fixture(scope="session")
def loop_thread():
    loop = LoopThread().start()
    yield loop
    loop.stop()


@dataclass
class MilterRig:
    """Build a pipeline from FnFilters and replay messages through TestCtx."""

    tmp: str
    loop: LoopThread
    monkeypatch: pytest.MonkeyPatch
    timeout: float = 5.0
    status: bool = False
    spam: str = "never"
    hold: bool = False
    extra: str = ""

    def app(self, *steps: tuple[str, Filter] | tuple[str, Filter, float, str]) -> MilterApp:
        text = BASE_TOML.format(var=self.tmp, status=str(self.status).lower(), spam=self.spam,
                                hold=str(self.hold).lower()) + self.extra
        config = parse_config(text, f"{self.tmp}/pipeline.toml")
        built = []
        for i, step in enumerate(steps):
            name, flt = step[0], step[1]
            timeout = step[2] if len(step) > 2 else 5.0
            on_error = step[3] if len(step) > 3 else "tempfail"
            built.append(Step(FilterSpec(use="fn", name=name, index=i), flt, timeout, on_error))
        self.metrics = Metrics()
        return MilterApp(Pipeline(config, built), Services(), self.loop, self.timeout,
                         self.metrics)

    def ctx(self, app: MilterApp, postfix: bool = False) -> ExactCtx:
        self.monkeypatch.setattr(Milter, "factory",
                                 bridge_factory(lambda actions: MilterConnection(actions, app)))
        return ExactCtx(postfix)


@pytest.fixture
def rig(tmp_path, loop_thread, monkeypatch) -> MilterRig:
    return MilterRig(str(tmp_path), loop_thread, monkeypatch)
