"""Pipe mode without the command line: what ``rohrpost run`` and ``rohrpost filter`` do.

Owns ``run_command`` (the body of ``rohrpost run``), ``run_pipe`` (the path shared with
``rohrpost filter``: read the message, build the envelope, run the filters, keep a quarantined
copy, then write the changed message or deliver it, and exit with the sysexits code that tells
the MTA what happened) and the MTA-facing exits (``fail``, ``load_or_exit``, ``read_message``,
``crash``, ``report_exit``). Nothing here imports click: ``rohrpost.launch`` runs a plain
``rohrpost run`` straight from ``sys.argv``, and the click commands in ``rohrpost.cli`` call
the same functions (docs/decisions.md). The message is written only once the verdict is final;
anything unexpected exits 75.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import TYPE_CHECKING, Any, NoReturn

from rohrpost.config import Config, ConfigError, load_config
from rohrpost.sysexits import EX_CONFIG, EX_TEMPFAIL

if TYPE_CHECKING:
    from rohrpost.envsource import EnvelopeArgs
    from rohrpost.message import Message
    from rohrpost.pipeline import Pipeline

DEFAULT_CONFIGS = ("/etc/rohrpost/pipeline.toml", "pipeline.toml")
ACTION_HEADER = "X-Rohrpost-Action"


def echo_err(text: str) -> None:
    """Write ``text`` and a newline to stderr exactly as ``click.echo(text, err=True)`` does.

    For ASCII text without escape sequences that is a write and a flush; anything else (ANSI
    codes click strips when stderr is not a terminal, text an ASCII-configured stderr cannot
    encode) goes through click itself, so the bytes are always click's.
    """
    if not text.isascii() or "\x1b" in text:
        import click

        click.echo(text, err=True)
        return
    stream = sys.stderr
    if stream is None:  # no stderr at all: click writes nothing either
        return
    stream.write(text + "\n")
    stream.flush()


def fail(code: int, status: str, text: str) -> NoReturn:
    """Print ``STATUS text`` on stderr (pipe(8) reads the enhanced code) and exit ``code``."""
    echo_err(f"{status} rohrpost: {text}" if status else f"rohrpost: {text}")
    sys.exit(code)


def crash(exc: BaseException) -> NoReturn:
    """An unexpected exception in an MTA-facing command: log the traceback, exit 75, never 1.

    Called in the ``except`` block that caught ``exc``.
    """
    import logging
    import traceback

    logging.getLogger("rohrpost").debug("%s", traceback.format_exc())
    fail(EX_TEMPFAIL, "4.3.0", f"internal error ({type(exc).__name__}): {exc}")


def default_config_path() -> str | None:
    """``$ROHRPOST_CONFIG``, else /etc/rohrpost/pipeline.toml, else ./pipeline.toml, else none."""
    env = os.environ.get("ROHRPOST_CONFIG")
    if env:
        return env
    for path in DEFAULT_CONFIGS:
        if os.path.isfile(path):
            return path
    return None


def load_or_exit(config_path: str | None, *, mta_facing: bool) -> Config:
    """Load the configuration or exit: 75 for MTA-facing commands, 78 for the others."""
    path = config_path if config_path is not None else default_config_path()
    try:
        return load_config(path)
    except ConfigError as exc:
        if mta_facing:
            fail(EX_TEMPFAIL, "4.3.5", f"configuration error: {exc}")
        fail(EX_CONFIG, "", f"configuration error: {exc}")


def read_message(limit: int) -> bytes:
    """Read the message from stdin; empty input or a read error is a tempfail."""
    try:
        data = sys.stdin.buffer.read(limit + 1)
    except OSError as exc:
        fail(EX_TEMPFAIL, "4.3.0", f"cannot read the message: {exc}")
    if not data.strip():
        fail(EX_TEMPFAIL, "4.3.0", "empty input: no message on stdin")
    return data


def report_exit(report: Any) -> int:
    """Print each failed recipient of a ``DeliveryReport`` on stderr; return its exit code."""
    for outcome in report.outcomes:
        if outcome.reply.code >= 400:
            echo_err(f"{outcome.reply.enhanced} {outcome.rcpt or '-'}: {outcome.reply.text}")
    return int(report.exit_code)


def run_command(config_path: str | None, deliver: str | None, args: EnvelopeArgs) -> int:
    """``rohrpost run``: load the configuration, build the pipeline, process stdin."""
    from rohrpost.pipeline import Pipeline

    config = load_or_exit(config_path, mta_facing=True)
    try:
        pipeline = Pipeline.build(config)
    except ConfigError as exc:
        fail(EX_TEMPFAIL, "4.3.5", f"configuration error: {exc}")
    return run_pipe(config, pipeline, args, deliver, "run")


def run_pipe(config: Config, pipeline: Pipeline, args: EnvelopeArgs, deliver: str | None,
             mode: str) -> int:
    """Process stdin through ``pipeline``; return the exit status."""
    from rohrpost.envsource import EnvelopeError, envelope_for_pipe
    from rohrpost.logsetup import release_held, setup_logging
    from rohrpost.message import Message
    from rohrpost.pipeline import run_loop_free

    # log lines wait until the status line is on stderr: pipe(8) reads the code from the start
    setup_logging(config.log.level, config.log.target, config.log.format, hold=True)
    gc.enable()  # rohrpost.launch starts with the collector off; the message is processed with it
    try:
        raw = read_message(config.pipeline.max_size)
        if len(raw) > config.pipeline.max_size:
            fail(69, "5.3.4", f"message larger than max_size {config.pipeline.max_size}")
        message = Message(raw)
        try:
            envelope = envelope_for_pipe(args, os.environ, message)
        except EnvelopeError as exc:
            fail(EX_TEMPFAIL, "4.3.5", str(exc))
        coro = _run_async(config, pipeline, envelope, message, deliver=deliver, mode=mode)
        if pipeline.loop_free and not (deliver and "deliver" in config.raw):
            # No filter awaits and there is no sorted (async) delivery: asyncio is not needed.
            status = run_loop_free(coro)
        else:
            import asyncio

            status = asyncio.run(coro)
    except SystemExit:
        release_held()
        raise
    # an unexpected exception: the caller's crash() prints the status, logging flushes at exit
    release_held()
    return status


async def _run_async(config: Config, pipeline: Pipeline, envelope: Any, message: Message,
                     *, deliver: str | None, mode: str) -> int:
    from rohrpost.result import Action
    from rohrpost.runner import log_outcome, process
    from rohrpost.services import make_services
    from rohrpost.sysexits import exit_code_for

    services = make_services(config)
    try:
        done = await process(pipeline, services, envelope, message)
    finally:
        await pipeline.aclose()
        await services.aclose()
    outcome = done.outcome
    log_outcome(done.envelope, outcome, done.ms, mode)
    verdict = outcome.verdict
    if verdict.action in (Action.REJECT, Action.TEMPFAIL):
        echo_err(f"{verdict.reply.enhanced} {verdict.reply.text}")
        return exit_code_for(verdict.reply)
    out = done.message
    sorting = None
    if deliver and "deliver" in config.raw:
        from rohrpost.cli.sortcmd import load_sorting

        sorting = load_sorting(config)
    to_junk = (verdict.action is Action.QUARANTINE and sorting is not None
               and sorting.quarantine_to_junk)
    if verdict.action is Action.QUARANTINE and not to_junk:
        qid = _quarantine(config, out.raw, done.envelope, outcome)
        echo_err(f"2.0.0 quarantined as {qid}: {verdict.reason}")
    if deliver and sorting is not None and verdict.action is not Action.DISCARD \
            and (verdict.action is not Action.QUARANTINE or to_junk):
        from rohrpost.cli.sortcmd import deliver_sorted_code

        return await deliver_sorted_code(config, sorting, deliver, out.raw, done.envelope,
                                         spam=outcome.is_spam or to_junk)
    if verdict.action in (Action.QUARANTINE, Action.DISCARD):
        if deliver:
            return 0
        from rohrpost.apply import apply_changes
        from rohrpost.changes import AddHeader

        out, _env = apply_changes(out, done.envelope,
                                  [AddHeader(ACTION_HEADER, verdict.action.value)])
    if deliver:
        return _deliver(deliver, out.raw, done.envelope)
    try:
        sys.stdout.buffer.write(out.raw)
        sys.stdout.buffer.flush()
    except OSError as exc:
        fail(EX_TEMPFAIL, "4.3.0", f"cannot write the message: {exc}")
    return 0


def _quarantine(config: Config, raw: bytes, envelope: Any, outcome: Any) -> str:
    from rohrpost.message import Message
    from rohrpost.quarantine import Quarantine

    q = Quarantine(config.quarantine_dir)
    msg = Message(raw)
    return q.store(raw, envelope, reason=outcome.verdict.reason, by=outcome.verdict.by,
                   score=outcome.score, symbols=[s.name for s in outcome.symbols],
                   subject=msg.get("Subject"))


def _deliver(spec: str, raw: bytes, envelope: Any) -> int:
    from rohrpost.deliver import DestinationError, deliver, parse_destination

    try:
        dest = parse_destination(spec)
    except DestinationError as exc:
        fail(EX_TEMPFAIL, "4.3.5", f"bad destination: {exc}")
    report = deliver(dest, raw, envelope)
    return report_exit(report)
