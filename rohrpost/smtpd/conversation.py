"""One SMTP/LMTP connection of ``rohrpost serve``: the pipeline driven command by command.

Owns ``Shared`` (what all connections of one server use) and ``Conversation``. The aiosmtpd
adapter calls ``hello``, ``xforward``, ``mail``, ``rcpt``, ``data``, ``reset`` and ``closed``
and pushes the reply lines they return; nothing here knows aiosmtpd.

Stages: for a client that may not send XFORWARD, CONNECT and HELO filters run at HELO/EHLO
and their results hold for the whole connection. A trusted client (a Postfix content_filter)
sends the original client's facts with XFORWARD after EHLO and before each MAIL, possibly for
a different client on every transaction of a cached connection; for it CONNECT and HELO run
at each MAIL with the forwarded facts. A reject from CONNECT/HELO is answered at MAIL (as
Postfix's smtpd_delay_reject does: some clients do not cope with a rejected HELO). MAIL and
RCPT filters run at their commands; a RCPT-stage reject refuses that recipient only. At DATA
the EOM filters run, ``policy.decide`` gives the verdict, the changes are applied, and the
client is answered only once the destination has accepted (or the quarantine has the copy).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Protocol

from rohrpost.apply import apply_changes
from rohrpost.config import Config
from rohrpost.deliver import Destination, deliver
from rohrpost.envelope import Envelope
from rohrpost.filter import Services, Stage
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline, Session, in_networks
from rohrpost.policy import Outcome, decide
from rohrpost.quarantine import Quarantine
from rohrpost.result import Action, Reply
from rohrpost.runner import log_outcome
from rohrpost.smtpd import replies
from rohrpost.smtpd.xforward import XForward, XForwardError, parse_xforward

log = logging.getLogger("rohrpost.smtpd")

_FAIL = (Action.REJECT, Action.TEMPFAIL)


class MetricsSink(Protocol):
    """The part of ``rohrpost.metrics.Metrics`` the server feeds."""

    def observe_message(self, action: str) -> None: ...  # noqa: D102
    def observe_filter(self, name: str, seconds: float, failed: bool) -> None: ...  # noqa: D102
    def connection(self, delta: int) -> None: ...  # noqa: D102


@dataclass
class Shared:
    """What every connection of one server uses; ``busy`` counts open mail transactions."""

    config: Config
    pipeline: Pipeline
    services: Services
    destination: Destination
    lmtp: bool
    executor: Executor
    max_rcpts: int = 100
    message_timeout: float = 300.0
    xforward_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    metrics: MetricsSink | None = None
    shutting_down: bool = False
    busy: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def mode(self) -> str:
        """The mode name in the log line."""
        return "lmtp" if self.lmtp else "serve"


class Conversation:
    """The pipeline state of one connection; every method returns the reply to send."""

    def __init__(self, shared: Shared, peer_ip: str, peer_port: int,
                 close: Callable[[], None]) -> None:
        self.shared = shared
        self.peer_ip = peer_ip.removeprefix("::ffff:") if "." in peer_ip else peer_ip
        self.peer_port = peer_port
        self.close_transport = close
        self.trusted = in_networks(self.peer_ip, shared.xforward_networks)
        self.helo = ""
        self.proto = "SMTP"
        self.xfwd = XForward()
        self.session: Session | None = None
        self.rcpts: list[str] = []
        self.in_transaction = False
        self.started = 0.0

    # -- connection level -------------------------------------------------------------------

    async def hello(self, name: str, proto: str) -> None:
        """HELO/EHLO/LHLO: start over; run CONNECT and HELO now unless XFORWARD may follow."""
        self._end_transaction()
        self.helo, self.proto, self.xfwd = name, proto, XForward()
        self.session = None
        if not self.trusted:
            self.session = await self._connect_session()

    def xforward(self, arg: str) -> str:
        """XFORWARD: accepted only from trusted networks, and not inside a transaction."""
        if not self.trusted:
            return replies.XFORWARD_DENIED
        if self.in_transaction:
            return replies.XFORWARD_IN_TRANSACTION
        try:
            self.xfwd = parse_xforward(arg, self.xfwd)
        except XForwardError as exc:
            return exc.reply
        return replies.XFORWARD_OK

    def reset(self) -> None:
        """RSET: forget the transaction and any forwarded attributes."""
        self._end_transaction()
        self.xfwd = XForward()

    def closed(self) -> None:
        """Forget the open transaction: the connection is gone."""
        self._end_transaction()

    def _base_envelope(self) -> Envelope:
        xf = self.xfwd
        sources = {"client_ip": "xforward" if xf.addr else "smtp",
                   "helo": "xforward" if xf.helo else "smtp"}
        macros = {"proto": xf.proto or self.proto, "client_port": xf.port or str(self.peer_port),
                  "source": xf.source, "smtp_peer": self.peer_ip}
        return Envelope(client_ip=xf.addr or self.peer_ip, client_name=xf.name,
                        helo=xf.helo or self.helo,
                        macros={k: v for k, v in macros.items() if v}, sources=sources)

    async def _connect_session(self) -> Session:
        session = Session(self.shared.pipeline, self.shared.services, self._base_envelope())
        if await session.run_stage(Stage.CONNECT) is None:
            await session.run_stage(Stage.HELO)
        return session

    # -- transaction ------------------------------------------------------------------------

    async def mail(self, address: str, params: list[str]) -> tuple[bool, str]:
        """MAIL FROM: (re)build the session, run the MAIL filters; True when accepted."""
        if self.shared.shutting_down:
            # close once the 421 is written (the adapter writes it before its next await)
            asyncio.get_running_loop().call_soon(self.close_transport)
            return False, replies.SHUTTING_DOWN
        if self.session is None or self.trusted:
            self.session = await self._connect_session()
        else:
            self.session.new_message()
        session = self.session
        sender = "" if address == "<>" else address
        queue_id = self.xfwd.ident or secrets.token_hex(5).upper()
        sources = {**session.envelope.sources, "mail_from": "smtp", "rcpts": "smtp",
                   "queue_id": "xforward" if self.xfwd.ident else "generated"}
        session.envelope = session.envelope.replace(mail_from=sender, mail_params=tuple(params),
                                                    rcpts=(), queue_id=queue_id,
                                                    sources=sources)
        verdict = await session.run_stage(Stage.MAIL)
        if verdict is not None and verdict.action in _FAIL:
            return False, str(verdict.reply)
        self.rcpts = []
        self._begin_transaction()
        return True, replies.MAIL_OK

    async def rcpt(self, address: str) -> tuple[bool, str]:
        """RCPT TO: run the RCPT filters for this recipient; True when accepted."""
        session = self.session
        if session is None or not self.in_transaction:
            return False, "503 5.5.1 Error: need MAIL command"
        if len(self.rcpts) >= self.shared.max_rcpts:
            return False, replies.TOO_MANY_RCPTS
        before = session.envelope
        session.envelope = before.replace(rcpts=(*before.rcpts, address))
        verdict = await session.run_stage(Stage.RCPT, rcpt=address)
        if verdict is not None and verdict.action in _FAIL:
            session.envelope = session.envelope.replace(rcpts=before.rcpts)
            return False, str(verdict.reply)
        self.rcpts.append(address)
        return True, replies.RCPT_OK

    async def data(self, raw: bytes) -> list[Reply]:
        """End of DATA: filter, decide, deliver or hold, and only then answer.

        Returns one reply (SMTP) or one per accepted recipient (LMTP). Any failure, including
        the message deadline, is ``451 4.3.0`` with a generic text; the log has the detail.
        """
        count = len(self.rcpts) if self.shared.lmtp else 1
        try:
            return await asyncio.wait_for(self._data(raw), self.shared.message_timeout)
        except Exception:  # the client must get a tempfail, never a bounce
            queue_id = self.session.envelope.queue_id if self.session else "-"
            log.exception("%s: internal error while processing the message; answered 451",
                          queue_id)
            return [replies.INTERNAL_ERROR] * count
        finally:
            self._end_transaction()
            self.xfwd = XForward()  # Postfix resets XFORWARD attributes with each transaction

    async def _data(self, raw: bytes) -> list[Reply]:
        session = self.session
        if session is None:
            raise RuntimeError("DATA without a session")
        start = time.perf_counter()
        message = Message(raw)
        await session.run_stage(Stage.EOM, message)
        outcome = decide(self.shared.config, session.runs, message, session.verdict,
                         session.envelope.rcpts)
        new_message, new_envelope = message, session.envelope
        if outcome.action not in _FAIL:
            new_message, new_envelope = apply_changes(message, session.envelope, outcome.changes)
        log_outcome(new_envelope, outcome, (time.perf_counter() - start) * 1000, self.shared.mode)
        self._observe(outcome)
        action = outcome.action
        if action in _FAIL:
            return self._same(outcome.verdict.reply)
        if action is Action.DISCARD:
            return self._same(replies.DISCARDED)
        loop = asyncio.get_running_loop()
        if action is Action.QUARANTINE:
            qid = await loop.run_in_executor(self.shared.executor, self._quarantine,
                                             new_message, new_envelope, outcome)
            log.info("%s: quarantined as %s", new_envelope.queue_id, qid)
            return self._same(Reply(250, "2.0.0", f"Ok: quarantined as {qid}"))
        report = await loop.run_in_executor(self.shared.executor, deliver,
                                            self.shared.destination, new_message.raw,
                                            new_envelope)
        if not report.ok:
            log.warning("%s: delivery to %s not completed: %s", new_envelope.queue_id,
                        self.shared.destination, report.summary)
        if self.shared.lmtp:
            return replies.lmtp_data_replies(self.rcpts, new_envelope.rcpts, report)
        return [replies.smtp_data_reply(report)]

    def _same(self, reply: Reply) -> list[Reply]:
        return [reply] * (len(self.rcpts) if self.shared.lmtp else 1)

    def _quarantine(self, message: Message, envelope: Envelope, outcome: Outcome) -> str:
        store = Quarantine(self.shared.config.quarantine_dir)
        return store.store(message.raw, envelope, reason=outcome.verdict.reason,
                           by=outcome.verdict.by, score=outcome.score,
                           symbols=[s.name for s in outcome.symbols],
                           subject=message.get("Subject"))

    def _observe(self, outcome: Outcome) -> None:
        metrics = self.shared.metrics
        if metrics is None:
            return
        metrics.observe_message(outcome.action.value)
        for run in outcome.runs:
            metrics.observe_filter(run.name, run.ms / 1000, bool(run.error))

    def _begin_transaction(self) -> None:
        if not self.in_transaction:
            self.in_transaction = True
            self.shared.busy += 1
            self.shared.idle.clear()

    def _end_transaction(self) -> None:
        if self.in_transaction:
            self.in_transaction = False
            self.shared.busy -= 1
            if self.shared.busy == 0:
                self.shared.idle.set()
        self.rcpts = []
