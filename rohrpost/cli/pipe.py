"""``rohrpost run`` and ``rohrpost filter``: the pipeline (or one filter) on stdin → stdout.

Owns the two pipe commands and ``run_pipe``, the shared path: read the message, build the
envelope, run the filters, keep a quarantined copy, then write the changed message (or deliver
it with ``--deliver``) and exit with the sysexits code that tells the MTA what happened. The
message is written only once the verdict is final; anything unexpected exits 75.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from rohrpost.cli.common import (
    MtaCommand,
    config_option,
    envelope_args,
    envelope_options,
    fail,
    load_or_exit,
    read_message,
    report_exit,
    tempfail_on_crash,
)
from rohrpost.config import Config, ConfigError, FilterSpec
from rohrpost.envsource import EnvelopeArgs, EnvelopeError, envelope_for_pipe
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline, make_step, run_loop_free
from rohrpost.result import Action
from rohrpost.sysexits import EX_TEMPFAIL, exit_code_for

ACTION_HEADER = "X-Rohrpost-Action"


def run_pipe(config: Config, pipeline: Pipeline, args: EnvelopeArgs, deliver: str | None,
             mode: str) -> int:
    """Process stdin through ``pipeline``; return the exit status."""
    from rohrpost.logsetup import release_held, setup_logging

    # log lines wait until the status line is on stderr: pipe(8) reads the code from the start
    setup_logging(config.log.level, config.log.target, config.log.format, hold=True)
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
    # an unexpected exception: tempfail_on_crash prints the status, logging flushes at exit
    release_held()
    return status


async def _run_async(config: Config, pipeline: Pipeline, envelope: Any, message: Message,
                     *, deliver: str | None, mode: str) -> int:
    from rohrpost.runner import log_outcome, process
    from rohrpost.services import make_services

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
        click.echo(f"{verdict.reply.enhanced} {verdict.reply.text}", err=True)
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
        click.echo(f"2.0.0 quarantined as {qid}: {verdict.reason}", err=True)
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


@click.command("run", cls=MtaCommand)
@config_option
@envelope_options
@click.option("--deliver", "deliver", metavar="DEST", default=None,
              help="deliver to DEST (maildir:PATH, mbox:PATH, lmtp:..., smtp:..., pipe:...) "
                   "instead of writing the message to stdout")
@tempfail_on_crash
def run_cmd(config_path: str | None, deliver: str | None, **kwargs: Any) -> int:
    """Run the whole pipeline on the message on stdin; write the result to stdout.

    Without envelope flags the envelope comes from Postfix's environment or from the message
    (Return-Path or an mbox From_ line; Delivered-To/X-Original-To).
    """
    args = envelope_args(kwargs)
    config = load_or_exit(config_path, mta_facing=True)
    try:
        pipeline = Pipeline.build(config)
    except ConfigError as exc:
        fail(EX_TEMPFAIL, "4.3.5", f"configuration error: {exc}")
    return run_pipe(config, pipeline, args, deliver, "run")


@click.command("filter", cls=MtaCommand,
               context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("name", required=False)
@click.option("--list", "list_filters", is_flag=True, help="list filters and their options")
@config_option
@envelope_options
@click.pass_context
@tempfail_on_crash
def filter_cmd(ctx: click.Context, /, name: str | None, list_filters: bool,
               config_path: str | None, **kwargs: Any) -> int:
    """Run one filter alone on stdin → stdout: rohrpost filter NAME [--option VALUE]...

    Options not given on the command line come from the first [[filter]] with the same name
    in the configuration, if any.
    """
    if list_filters:
        _print_list()
        return 0
    if not name:
        raise click.UsageError("name a filter (rohrpost filter --list shows them)")
    args = envelope_args(kwargs)
    config = load_or_exit(config_path, mta_facing=True)
    cli_opts = parse_extra_options(ctx.args)
    base = next((s for s in config.filters if s.use == name), None)
    spec = base or FilterSpec(use=name, name=name, index=0)
    try:
        options = {**(dict(base.options) if base else {}), **cli_opts}
        step = make_step(config, spec, options, from_text=True)
    except ConfigError as exc:
        fail(EX_TEMPFAIL, "4.3.5", str(exc))
    return run_pipe(config, Pipeline.build(config, only=[step]), args, None, f"filter:{name}")


def parse_extra_options(extra: list[str]) -> dict[str, str | list[str]]:
    """``--key VALUE``/``--key=VALUE`` pairs (repeat a key to make a list); bad forms → usage."""
    out: dict[str, str | list[str]] = {}
    i = 0
    while i < len(extra):
        item = extra[i]
        if not item.startswith("--") or item == "--":
            raise click.UsageError(f"unexpected argument {item!r}; options look like --name VALUE")
        key, eq, value = item[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                raise click.UsageError(f"option --{key} needs a value")
            value = extra[i + 1]
            i += 1
        key = key.replace("-", "_")
        prev = out.get(key)
        if prev is None:
            out[key] = value
        else:
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        i += 1
    return out


def _print_list() -> None:
    from rohrpost.options import describe_options
    from rohrpost.registry import available, load_filter_class

    try:
        for fname in available():
            cls = load_filter_class(fname)
            click.echo(f"{fname}  [{cls.stage.name.lower()}]  {cls.description}")
            for opt, typ, default, help_text in describe_options(cls.Options):
                line = f"    --{opt.replace('_', '-')} {typ} (default {default})"
                click.echo(line + (f": {help_text}" if help_text else ""))
    except BrokenPipeError:  # `rohrpost filter --list | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
