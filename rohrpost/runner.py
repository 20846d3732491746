"""Run a whole message through the pipeline in one go (pipe, check, SMTP/LMTP modes).

Owns ``process`` (all stages in SMTP order on a complete message), ``process_with_timeout``
and ``log_outcome`` (the one INFO line per message). The milter adapter instead drives a
``Session`` stage by stage from libmilter's callbacks.
"""

from __future__ import annotations

import logging
import time

from rohrpost.apply import apply_changes
from rohrpost.envelope import Envelope
from rohrpost.filter import Services, Stage
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline, Session
from rohrpost.policy import Outcome, decide
from rohrpost.record import Record
from rohrpost.result import Action, Verdict

log = logging.getLogger("rohrpost")


class Processed(Record):
    """The outcome and the message and envelope with every change applied."""

    _fields = ("outcome", "message", "envelope", "ms")
    outcome: Outcome
    message: Message
    envelope: Envelope
    ms: float

    def __init__(self, outcome: Outcome, message: Message, envelope: Envelope,
                 ms: float) -> None:
        self.outcome = outcome
        self.message = message
        self.envelope = envelope
        self.ms = ms


async def process(pipeline: Pipeline, services: Services, envelope: Envelope,
                  message: Message, *, run_all: bool = False) -> Processed:
    """Run every stage in SMTP order, decide, and apply the changes.

    ``run_all``: run every filter even after a final verdict (``rohrpost check --all``).
    """
    start = time.perf_counter()
    session = Session(pipeline, services, envelope, run_all=run_all)
    verdict: Verdict | None = None
    for stage in (Stage.CONNECT, Stage.HELO, Stage.MAIL):
        verdict = await session.run_stage(stage)
        if verdict is not None and not run_all:
            break
    if (verdict is None or run_all) and Stage.RCPT in pipeline.stages():
        verdict = await _rcpt_stage(session)
    if verdict is None or run_all:
        await session.run_stage(Stage.EOM, message)
    outcome = decide(pipeline.config, session.runs, message, session.verdict,
                     session.envelope.rcpts)
    if outcome.action in (Action.ACCEPT, Action.QUARANTINE, Action.DISCARD):
        new_message, new_envelope = apply_changes(message, session.envelope, outcome.changes)
    else:
        new_message, new_envelope = message, session.envelope
    ms = (time.perf_counter() - start) * 1000
    return Processed(outcome, new_message, new_envelope, ms)


async def _rcpt_stage(session: Session) -> Verdict | None:
    rcpts = session.envelope.rcpts or ("",)
    for rcpt in rcpts:
        verdict = await session.run_stage(Stage.RCPT, rcpt=rcpt)
        if session.verdict is not None and not session.run_all:
            return session.verdict
        del verdict
    if not session.rcpt_verdicts:
        return session.verdict
    left = tuple(r for r in session.envelope.rcpts if r not in session.rcpt_verdicts)
    session.envelope = session.envelope.replace(rcpts=left)
    if left:
        return session.verdict
    verdicts = list(session.rcpt_verdicts.values())
    temp = [v for v in verdicts if v.action is Action.TEMPFAIL]
    if session.verdict is None:
        session.verdict = temp[0] if temp else verdicts[0]
    return session.verdict


async def process_with_timeout(pipeline: Pipeline, services: Services, envelope: Envelope,
                               message: Message, timeout: float) -> Processed:
    """``process`` bounded by an overall deadline; on timeout raises ``TimeoutError``."""
    import asyncio

    return await asyncio.wait_for(process(pipeline, services, envelope, message), timeout)


def log_outcome(envelope: Envelope, outcome: Outcome, ms: float, mode: str) -> None:
    """The one INFO line per message: queue id, envelope, verdict, score, symbols, timings."""
    per_filter = ",".join(f"{r.name}:{r.ms:.1f}" for r in outcome.runs)
    symbols = ",".join(f"{s.name}({s.score:g})" for s in outcome.symbols)
    sources = ",".join(f"{k}={v}" for k, v in sorted(envelope.sources.items()))
    log.info(
        "%s mode=%s from=<%s> rcpts=%s client=%s action=%s reply=%s score=%g symbols=%s "
        "ms=%.1f filters=%s%s",
        envelope.queue_id or "-", mode, envelope.mail_from,
        "[" + ", ".join(map(json_string, envelope.rcpts)) + "]",
        envelope.client_ip or "-", outcome.action.value, json_string(str(outcome.verdict.reply)),
        outcome.score, symbols or "-", ms, per_filter or "-",
        f" sources={sources}" if sources else "",
    )


def json_string(text: str) -> str:
    r"""``json.dumps(text)``; without importing json for plain text (every pipe-mode run).

    Printable ASCII other than ``"`` and ``\`` is what json writes unchanged; anything else
    goes to json itself.
    """
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'
    import json

    return json.dumps(text)
