"""The pipeline: filters in order, run stage by stage, with timeouts, failure policy, conditions.

Owns ``Pipeline`` (built once from a ``Config``) and ``Session`` (one SMTP connection or one
piped message: runs the filters of each stage, keeps their results, stops at a final verdict).
Turning the results into the final verdict and header changes is ``rohrpost.policy``'s job.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from rohrpost.config import Config, FilterSpec, When
from rohrpost.envelope import Envelope, domain_of
from rohrpost.filter import Context, Filter, Mail, Services, Stage
from rohrpost.message import Message
from rohrpost.options import OptionError, build_options
from rohrpost.record import FrozenRecord, Record
from rohrpost.registry import UnknownFilterError, load_filter_class
from rohrpost.result import Action, FilterResult, Symbol, Verdict

log = logging.getLogger("rohrpost.pipeline")
T = TypeVar("T")
_set = object.__setattr__

FAILURE_REPLIES = {
    "tempfail": "451 4.7.1 Temporary local problem, please try again later",
    "reject": "550 5.7.1 Message rejected: local filter failure",
}


class Step(FrozenRecord):
    """One configured filter instance with its pipeline settings."""

    _fields = ("spec", "filter", "timeout", "on_error")
    spec: FilterSpec
    filter: Filter
    timeout: float
    on_error: str

    def __init__(self, spec: FilterSpec, filter: Filter, timeout: float,
                 on_error: str) -> None:
        _set(self, "spec", spec)
        _set(self, "filter", filter)
        _set(self, "timeout", timeout)
        _set(self, "on_error", on_error)

    @property
    def name(self) -> str:
        """The instance name (``name =`` or the filter's name)."""
        return self.spec.name

    @property
    def stage(self) -> Stage:
        """The stage this filter runs at."""
        return self.filter.stage


class Pipeline:
    """The configured filters and the settings that govern them."""

    def __init__(self, config: Config, steps: Sequence[Step]) -> None:
        self.config = config
        self.steps = tuple(steps)

    @classmethod
    def build(cls, config: Config, only: Sequence[Step] | None = None) -> Pipeline:
        """Instantiate every ``[[filter]]`` with validated options.

        :raises ConfigError: for an unknown filter or a bad option, located in the file.
        """
        if only is not None:
            return cls(config, only)
        steps = []
        for spec in config.filters:
            steps.append(make_step(config, spec, spec.options, from_text=False))
        return cls(config, steps)

    @property
    def loop_free(self) -> bool:
        """True when no filter's ``check`` ever awaits (see ``Filter.loop_free``)."""
        return all(step.filter.loop_free for step in self.steps)

    def stages(self) -> set[Stage]:
        """The stages at which some filter runs."""
        return {s.stage for s in self.steps}

    async def aclose(self) -> None:
        """Let filters release connections."""
        for step in self.steps:
            await step.filter.aclose()


def make_step(config: Config, spec: FilterSpec, options: object, *, from_text: bool) -> Step:
    """Build one ``Step``; errors are ``ConfigError`` located at the filter's keys."""
    where = f"filter[{spec.index}]"
    try:
        cls = load_filter_class(spec.use)
    except UnknownFilterError as exc:
        raise config.error(f"{where}.use", str(exc)) from None
    try:
        opts = build_options(cls.Options, options, where, from_text=from_text)  # type: ignore[arg-type]
        instance = cls(opts)
    except OptionError as exc:
        # build_options' paths start with ``where``; a filter's own __init__ names its option
        # relative to its table ("key[0].key"), which alone cannot be located in the file
        path = exc.path or where
        if path != where and not path.startswith(where + "."):
            path = f"{where}.{path}"
        raise config.error(path, exc.message, exc.suggestion) from None
    timeout = spec.timeout if spec.timeout is not None else config.pipeline.timeout
    on_error = spec.on_error or config.pipeline.on_error
    return Step(spec, instance, timeout, on_error)


class LoopRequired(BaseException):
    """A coroutine driven by ``run_loop_free`` needed an event loop.

    A ``BaseException`` so that no ``on_error`` policy turns it into skip or accept: the pipe
    command exits 75 (tempfail) and the mail is retried, never passed unchecked.
    """


def run_loop_free(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion without an event loop (and without importing asyncio).

    For a pipeline whose filters never await (``Pipeline.loop_free``): pipe mode then does not
    import asyncio (ssl, socket, concurrent.futures...: a sixth of a ``rohrpost run`` start).
    A bare ``yield`` (``sleep(0)``) is resumed at once, as a task would; waiting on anything
    else raises ``LoopRequired``.
    """
    try:
        while True:
            if coro.send(None) is not None:
                raise LoopRequired("a filter awaited I/O outside an event loop")
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        coro.close()


def _loop_running() -> bool:
    aio = sys.modules.get("asyncio")  # never imported: certainly no loop running
    return aio is not None and aio._get_running_loop() is not None


def applies(when: When, envelope: Envelope, message: Message | None) -> bool:
    """True when every condition in ``when`` holds for this mail."""
    if when.authenticated is not None and when.authenticated != envelope.authenticated:
        return False
    if when.client_networks and not in_networks(envelope.client_ip, when.client_networks):
        return False
    if when.not_client_networks and in_networks(envelope.client_ip, when.not_client_networks):
        return False
    if when.sender_domains and not domain_matches(envelope.sender_domain, when.sender_domains):
        return False
    if when.recipient_domains and not any(
        domain_matches(domain_of(r), when.recipient_domains) for r in envelope.rcpts
    ):
        return False
    return not (when.max_size is not None and message is not None and message.size > when.max_size)


def in_networks(ip: str, networks: Sequence[str]) -> bool:
    """True when ``ip`` lies in one of ``networks`` (CIDR strings); False for no/bad IP."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return False
    for net in networks:
        try:
            if addr in ipaddress.ip_network(net, strict=False):
                return True
        except ValueError:
            continue
    return False


def domain_matches(domain: str, patterns: Sequence[str]) -> bool:
    """True when ``domain`` equals a pattern or is below a ``.suffix`` pattern."""
    domain = domain.lower()
    for pattern in patterns:
        pat = pattern.lower()
        if domain == pat.lstrip(".") or (pat.startswith(".") and domain.endswith(pat)):
            return True
    return False


class StepRun(Record):
    """The result of one filter on one message, with its wall time."""

    _fields = ("name", "stage", "result", "ms", "error", "rcpt")
    name: str
    stage: Stage
    result: FilterResult
    ms: float
    error: str
    rcpt: str

    def __init__(self, name: str, stage: Stage, result: FilterResult, ms: float,  # noqa: PLR0917
                 error: str = "", rcpt: str = "") -> None:
        self.name = name
        self.stage = stage
        self.result = result
        self.ms = ms
        self.error = error
        self.rcpt = rcpt


class Session(Record):
    """One connection (milter, SMTP) or one piped message going through the pipeline.

    Connection-level results (CONNECT, HELO) survive ``new_message``; the rest is per message.
    ``run_all`` (``rohrpost check --all``) runs every filter even after a final verdict, so an
    admin sees what each filter says; the verdict is still the first one.
    """

    _fields = ("pipeline", "services", "envelope", "runs", "verdict", "rcpt_verdicts",
               "run_all")
    pipeline: Pipeline
    services: Services
    envelope: Envelope
    runs: list[StepRun]
    verdict: Verdict | None
    rcpt_verdicts: dict[str, Verdict]
    run_all: bool

    def __init__(self, pipeline: Pipeline, services: Services,  # noqa: PLR0917
                 envelope: Envelope | None = None, runs: list[StepRun] | None = None,
                 verdict: Verdict | None = None, rcpt_verdicts: dict[str, Verdict] | None = None,
                 run_all: bool = False) -> None:
        self.pipeline = pipeline
        self.services = services
        self.envelope = Envelope() if envelope is None else envelope
        self.runs = [] if runs is None else runs
        self.verdict = verdict
        self.rcpt_verdicts = {} if rcpt_verdicts is None else rcpt_verdicts
        self.run_all = run_all

    def new_message(self) -> None:
        """Forget message-level results; keep what CONNECT and HELO found."""
        self.runs = [r for r in self.runs if r.stage <= Stage.HELO]
        kept = any(r.result.verdict is self.verdict for r in self.runs)
        if self.verdict is not None and not kept:
            self.verdict = None
        self.rcpt_verdicts = {}

    def context(self) -> Context:
        """The filter context for this session (logger tagged with the queue id)."""
        cfg = self.pipeline.config
        adapter = logging.LoggerAdapter(log, {"queue_id": self.envelope.queue_id or "-"})
        return Context(self.services, adapter, cfg.authserv_id, cfg.hostname,
                       {"trusted_networks": cfg.pipeline.trusted_networks})

    async def run_stage(self, stage: Stage, message: Message | None = None,
                        rcpt: str = "") -> Verdict | None:
        """Run the filters of ``stage``; return the verdict that stops the pipeline, if any.

        At the RCPT stage a reject or tempfail applies to ``rcpt`` only and is recorded in
        ``rcpt_verdicts``; it is returned but does not end the message.
        """
        if self.verdict is not None and not self.run_all:
            return self.verdict
        ctx: Context | None = None  # made once a filter runs (most stages have none)
        for step in self.pipeline.steps:
            if step.stage != stage or not applies(step.spec.when, self.envelope, message):
                continue
            if ctx is None:
                ctx = self.context()
            mail = Mail(self.envelope, message, [(r.name, r.result) for r in self.runs], rcpt)
            run = await self._run_one(step, ctx, mail)
            run.rcpt = rcpt
            self.runs.append(run)
            verdict = run.result.verdict
            if verdict is None:
                continue
            if stage == Stage.RCPT and verdict.action in (Action.REJECT, Action.TEMPFAIL):
                self.rcpt_verdicts.setdefault(rcpt, verdict)
                if self.run_all:
                    continue
                return verdict
            if self.verdict is None:
                self.verdict = verdict
            if not self.run_all:
                return verdict
        return self.verdict if self.run_all else None

    async def _run_one(self, step: Step, ctx: Context, mail: Mail) -> StepRun:
        start = time.perf_counter()
        try:
            if _loop_running():
                import asyncio

                # asyncio.timeout, not wait_for: the check runs in this task instead of a new
                # one, so a filter that does not wait costs no extra loop iterations.
                async with asyncio.timeout(step.timeout):
                    result = await step.filter.check(ctx, mail)
            else:  # run_loop_free: the check cannot be suspended, so no timer can fire
                result = await step.filter.check(ctx, mail)
        except Exception as exc:  # any failure goes through the failure policy
            if isinstance(exc, RuntimeError) and "event loop" in str(exc) \
                    and not _loop_running():
                raise LoopRequired(f"filter {step.name} needs an event loop") from exc
            ms = (time.perf_counter() - start) * 1000
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            ctx.log.warning("filter %s failed (%s: %s); on_error=%s", step.name, kind, exc,
                            step.on_error)
            return StepRun(step.name, step.stage, failure_result(step, kind), ms, f"{kind}: {exc}")
        return StepRun(step.name, step.stage, result, (time.perf_counter() - start) * 1000)


def failure_result(step: Step, kind: str) -> FilterResult:
    """What a failed filter contributes, by its ``on_error`` policy."""
    symbol = Symbol(f"{step.name.upper().replace('-', '_')}_FAILED", 0.0, f"filter failed: {kind}")
    if step.on_error == "skip":
        return FilterResult(symbols=[symbol])
    if step.on_error == "accept":
        return FilterResult(verdict=Verdict.of(Action.ACCEPT, by=step.name,
                                               reason=f"{step.name} failed, on_error=accept"),
                            symbols=[symbol])
    reply = FAILURE_REPLIES.get(step.on_error, FAILURE_REPLIES["tempfail"])
    action = Action.REJECT if step.on_error == "reject" else Action.TEMPFAIL
    return FilterResult(verdict=Verdict.of(action, reply, f"{step.name} failed: {kind}", step.name),
                        symbols=[symbol])
