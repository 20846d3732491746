"""One milter connection: the MTA's commands turned into pipeline stages and verdicts.

Owns ``MilterApp`` (what all connections of a worker process share: pipeline, services, the
event loop, metrics, quarantine) and ``MilterConnection`` (one SMTP connection). The commands
that run filters are coroutines (``a_connect`` ... ``a_eom``): the asyncio engine
(``rohrpost.milter.aioengine``) awaits them on its loop; for libmilter's threads
(``rohrpost.milter.adapter``) the ``on_*`` methods drive them in the calling thread, and a
stage that runs filters is handed to the worker's loop thread and waited for. Either way each
stage has a deadline and every failure becomes a generic tempfail, never an accept and never
exception text for the client. The envelope is rebuilt at every MAIL FROM; what CONNECT and
HELO found is kept for the whole connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from rohrpost.apply import apply_changes
from rohrpost.envelope import Envelope, strip_brackets
from rohrpost.filter import Services, Stage
from rohrpost.message import Message
from rohrpost.milter.actions import GENERIC_TEMPFAIL, MilterActions, Rc
from rohrpost.milter.loop import LoopThread, StageTimeoutError
from rohrpost.milter.mchanges import apply_via_milter
from rohrpost.pipeline import LoopRequired, Pipeline, Session, run_loop_free
from rohrpost.policy import Outcome, decide
from rohrpost.quarantine import Quarantine
from rohrpost.result import Action, Reply, Verdict
from rohrpost.runner import log_outcome

log = logging.getLogger("rohrpost.milter")

MACROS = ("j", "{daemon_name}", "{daemon_addr}", "{auth_type}", "{cipher_bits}",
          "{cert_subject}", "{cert_issuer}")
TOO_BIG = "552 5.3.4 Message too big"


class MetricsSink(Protocol):
    """Where a connection reports (``rohrpost.metrics.Metrics`` or a forwarder to it)."""

    def observe_message(self, action: str) -> None:
        """Count one finished message."""

    def observe_filter(self, name: str, seconds: float, failed: bool) -> None:
        """Record one filter run."""

    def connection(self, delta: int) -> None:
        """Change the open connections."""


class NoMetrics:
    """A sink that drops everything (no ``--metrics``)."""

    def observe_message(self, action: str) -> None:
        """Drop."""

    def observe_filter(self, name: str, seconds: float, failed: bool) -> None:
        """Drop."""

    def connection(self, delta: int) -> None:
        """Drop."""


@dataclass
class MilterApp:
    """What every connection of one worker process shares."""

    pipeline: Pipeline
    services: Services
    loop: LoopThread | None  # libmilter's threads hand stages to it; None: asyncio engine
    timeout: float
    metrics: MetricsSink = field(default_factory=NoMetrics)
    stages: frozenset[Stage] = field(init=False)  # where filters run; the pipeline is fixed

    def __post_init__(self) -> None:
        self.stages = frozenset(self.pipeline.stages())

    @property
    def quarantine(self) -> Quarantine:
        """Return rohrpost's own quarantine folder."""
        return Quarantine(self.pipeline.config.quarantine_dir)


def _generic_tempfail() -> Verdict:
    code, enhanced, text = GENERIC_TEMPFAIL
    return Verdict(Action.TEMPFAIL, Reply(int(code), enhanced, text), "internal error", "milter")


INTERNAL_ERROR = _generic_tempfail()
"""The verdict for internal errors and stage timeouts: 451 4.7.1 with a generic text."""


class MilterConnection:
    """The ``Handler`` for one SMTP connection (one instance per connection thread)."""

    def __init__(self, actions: MilterActions, app: MilterApp) -> None:
        self.actions = actions
        self.app = app
        self.session = Session(app.pipeline, app.services)
        self._headers: list[bytes] = []
        self._body = bytearray()
        self._size = 0
        self._started = 0.0
        self._pending = False  # a message began (MAIL) and has not been logged yet
        self._reported = 0  # how many of session.runs went to the metrics
        self._counted = False
        self._hidden = 0  # headers the MTA adds above what it shows us (Postfix: Received)

    # -- helpers
    @property
    def config(self) -> Any:
        """Return the configuration."""
        return self.app.pipeline.config

    async def _stage(self, stage: Stage,
                     coro: Coroutine[Any, Any, Verdict | None]) -> Verdict | None:
        """Run one stage with the [milter] deadline; failures become tempfail.

        A stage at which no filter runs only returns the session's verdict so far: it is
        driven right here, never scheduled (with libmilter: no thread round trip to the
        loop, four per message saved when every filter runs at end of message). With
        libmilter a stage that runs filters goes to the loop thread and this thread blocks
        on it; with the asyncio engine it is awaited in the connection's task.
        """
        try:
            if stage not in self.app.stages:
                return run_loop_free(coro)
            if self.app.loop is not None:
                return self.app.loop.run(coro, self.app.timeout)
            async with asyncio.timeout(self.app.timeout):
                return await coro
        except LoopRequired:  # cannot happen without filters; never let it reach the MTA
            log.exception("%s stage failed: tempfail", self.session.envelope.queue_id or "-")
        except (StageTimeoutError, TimeoutError):
            log.warning("%s stage timed out after %gs: tempfail",
                        self.session.envelope.queue_id or "-", self.app.timeout)
        except Exception:
            log.exception("%s stage failed: tempfail", self.session.envelope.queue_id or "-")
        finally:
            self._report_runs()
        return INTERNAL_ERROR

    def _report_runs(self) -> None:
        runs = self.session.runs
        self._reported = min(self._reported, len(runs))
        for run in runs[self._reported :]:
            self.app.metrics.observe_filter(run.name, run.ms / 1000, bool(run.error))
        self._reported = len(runs)

    def _refuse(self, verdict: Verdict) -> Rc:
        reply = verdict.reply
        self.actions.setreply(str(reply.code), reply.enhanced, reply.text)
        return Rc.REJECT if verdict.action is Action.REJECT else Rc.TEMPFAIL

    def _early(self, verdict: Verdict | None) -> Rc:
        """Before end of message only reject and tempfail act; the rest waits for EOM."""
        if verdict is not None and verdict.action in (Action.REJECT, Action.TEMPFAIL):
            self._log(decide(self.config, self.session.runs, None, verdict))
            return self._refuse(verdict)
        return Rc.CONTINUE

    def _log(self, outcome: Outcome) -> None:
        ms = (time.perf_counter() - self._started) * 1000 if self._started else 0.0
        log_outcome(self.session.envelope, outcome, ms, "milter")
        self.app.metrics.observe_message(outcome.action.value)
        self._pending = False

    # -- libmilter's callbacks (its threads): the coroutines below, driven right here
    def on_connect(self, hostname: str, address: str) -> Rc:
        """Remember the client; run CONNECT filters."""
        return run_loop_free(self.a_connect(hostname, address))

    def on_helo(self, name: str) -> Rc:
        """Remember HELO; run HELO filters."""
        return run_loop_free(self.a_helo(name))

    def on_mail(self, sender: str, params: list[str]) -> Rc:
        """Start a new message; run MAIL filters."""
        return run_loop_free(self.a_mail(sender, params))

    def on_rcpt(self, rcpt: str, params: list[str]) -> Rc:
        """Run RCPT filters for this recipient."""
        return run_loop_free(self.a_rcpt(rcpt, params))

    def on_eom(self) -> Rc:
        """Run EOM filters, decide, answer."""
        return run_loop_free(self.a_eom())

    # -- the commands that run filters
    async def a_connect(self, hostname: str, address: str) -> Rc:
        """Remember the client; run CONNECT filters."""
        self.app.metrics.connection(+1)
        self._counted = True
        if self.actions.getsymval("v").startswith("Postfix"):
            self._hidden = 1
        self.session.envelope = Envelope(client_ip=address, client_name=hostname,
                                         sources={"client": "milter"})
        return self._early(
            await self._stage(Stage.CONNECT, self.session.run_stage(Stage.CONNECT)))

    async def a_helo(self, name: str) -> Rc:
        """Remember HELO; run HELO filters."""
        self.session.envelope = self.session.envelope.replace(helo=name)
        return self._early(await self._stage(Stage.HELO, self.session.run_stage(Stage.HELO)))

    async def a_mail(self, sender: str, params: list[str]) -> Rc:
        """Start a new message: fresh envelope (connection facts kept); run MAIL filters."""
        self._finish_pending()
        self.session.new_message()
        self._reset_message()
        self._started = time.perf_counter()
        self._pending = True
        get = self.actions.getsymval
        tls = {k: v for k, v in (("version", get("{tls_version}")), ("cipher", get("{cipher}")))
               if v}
        macros = {m: v for m in MACROS if (v := get(m))}
        self.session.envelope = self.session.envelope.replace(
            mail_from=strip_brackets(sender), mail_params=tuple(params), rcpts=(),
            auth_user=get("{auth_authen}"), tls=tls, queue_id=get("i"), macros=macros)
        return self._early(await self._stage(Stage.MAIL, self.session.run_stage(Stage.MAIL)))

    async def a_rcpt(self, rcpt: str, params: list[str]) -> Rc:
        """Run RCPT filters for this recipient; a reject or tempfail refuses it alone."""
        del params
        address = strip_brackets(rcpt)
        verdict = await self._stage(Stage.RCPT,
                                    self.session.run_stage(Stage.RCPT, rcpt=address))
        if verdict is not None and verdict.action in (Action.REJECT, Action.TEMPFAIL):
            self.session.rcpt_verdicts[address] = verdict
            return self._refuse(verdict)
        env = self.session.envelope
        self.session.envelope = env.replace(rcpts=(*env.rcpts, address))
        return Rc.CONTINUE

    def on_header(self, name: str, value: bytes) -> Rc:
        """Collect one header exactly as received (CRLF line ends, folding kept)."""
        if not self.actions.leading_space:
            value = b" " + value
        line = name.encode("utf-8", "surrogateescape") + b":" + value
        line = line.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"
        self._size += len(line)
        if self._size <= self.config.pipeline.max_size:
            self._headers.append(line)
        return Rc.CONTINUE

    def on_eoh(self) -> Rc:
        """Nothing to do: the header block ends with the blank line added at EOM."""
        return Rc.CONTINUE

    def on_body(self, chunk: bytes) -> Rc:
        """Collect a body chunk (up to [pipeline] max_size)."""
        self._size += len(chunk)
        if self._size <= self.config.pipeline.max_size:
            self._body += chunk
        return Rc.CONTINUE

    async def a_eom(self) -> Rc:
        """Run EOM filters, decide, and answer with the verdict and the changes."""
        env = self.session.envelope
        if not env.queue_id and (qid := self.actions.getsymval("i")):
            self.session.envelope = env = env.replace(queue_id=qid)
        if self._size > self.config.pipeline.max_size:
            verdict = Verdict.of(Action.REJECT, TOO_BIG, "message too big", "milter")
            self._log(decide(self.config, self.session.runs, None, verdict))
            return self._refuse(verdict)
        message = Message(b"".join(self._headers) + b"\r\n" + bytes(self._body))
        result = await self._stage(Stage.EOM, self.session.run_stage(Stage.EOM, message))
        if result is INTERNAL_ERROR:  # a crash or the stage deadline
            self.session.verdict = result
        outcome = decide(self.config, self.session.runs, message, self.session.verdict,
                         self.session.envelope.rcpts)
        rc = self._finish(outcome, message)
        self._log(outcome)
        self._reset_message()
        return rc

    def _finish(self, outcome: Outcome, message: Message) -> Rc:
        action = outcome.action
        env = self.session.envelope
        if action in (Action.REJECT, Action.TEMPFAIL):
            return self._refuse(outcome.verdict)
        if action is Action.DISCARD:
            return Rc.DISCARD
        if action is Action.QUARANTINE:
            reason = outcome.verdict.reason or "quarantined"
            if self.config.quarantine.use_mta_hold and self.actions.can("QUARANTINE"):
                apply_via_milter(self.actions, env.rcpts, outcome.changes,
                                 hidden_headers=self._hidden,
                                 header_names=[h.name for h in message.headers])
                self.actions.quarantine(reason)
                return Rc.ACCEPT
            held, held_env = apply_changes(message, env, outcome.changes)
            qid = self.app.quarantine.store(
                held.raw, held_env, reason=reason, by=outcome.verdict.by, score=outcome.score,
                symbols=[s.name for s in outcome.symbols], subject=held.get("Subject"))
            log.info("%s quarantined as %s", env.queue_id or "-", qid)
            return Rc.DISCARD
        apply_via_milter(self.actions, env.rcpts, outcome.changes, hidden_headers=self._hidden,
                         header_names=[h.name for h in message.headers])
        return Rc.CONTINUE

    def _finish_pending(self) -> None:
        """Log a message that ended before EOM because every recipient was refused."""
        if self._pending and self.session.rcpt_verdicts:
            verdicts = list(self.session.rcpt_verdicts.values())
            temp = [v for v in verdicts if v.action is Action.TEMPFAIL]
            self._log(decide(self.config, self.session.runs, None, (temp or verdicts)[0]))
        self._pending = False

    def _reset_message(self) -> None:
        self._headers = []
        self._body = bytearray()
        self._size = 0

    def on_abort(self) -> None:
        """Forget a transaction that ended without EOM (RSET, QUIT, lost client)."""
        self._finish_pending()
        self._reset_message()

    def on_close(self) -> None:
        """Clean up when the connection ended."""
        self._finish_pending()
        if self._counted:
            self.app.metrics.connection(-1)
            self._counted = False
