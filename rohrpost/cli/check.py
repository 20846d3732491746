"""``rohrpost check``: what every filter says about message files, changing nothing.

Owns the check command and its table/JSON rendering. State is kept in memory for the run so
that a check never records greylist triplets or rate counters, and nothing is delivered or
quarantined.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import click

from rohrpost.cli.common import config_option, envelope_args, envelope_options, load_or_exit
from rohrpost.config import Config, ConfigError
from rohrpost.envsource import EnvelopeArgs, EnvelopeError, envelope_for_pipe
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.sysexits import EX_CONFIG, EX_DATAERR, EX_NOINPUT


def describe_change(change: object) -> str:
    """One line for a change, e.g. ``add header X-Newsletter: yes``."""
    kind = type(change).__name__
    fields = getattr(change, "_fields", ())  # rohrpost.record.Record
    parts = []
    for name in fields:
        value = getattr(change, name)
        if isinstance(value, bytes):
            value = f"<{len(value)} bytes>"
        parts.append(f"{name}={value!r}")
    return f"{kind}({', '.join(parts)})"


def outcome_dict(path: str, done: Any) -> dict[str, Any]:
    """The JSON form of one message's outcome."""
    out = done.outcome
    return {
        "file": path,
        "envelope": {"mail_from": done.envelope.mail_from, "rcpts": list(done.envelope.rcpts),
                     "client_ip": done.envelope.client_ip, "helo": done.envelope.helo,
                     "auth_user": done.envelope.auth_user},
        "action": out.action.value,
        "reply": str(out.verdict.reply),
        "reason": out.verdict.reason,
        "by": out.verdict.by,
        "score": out.score,
        "filters": [
            {"name": r.name, "stage": r.stage.name.lower(), "ms": round(r.ms, 3),
             "error": r.error, "rcpt": r.rcpt,
             "verdict": None if r.result.verdict is None else {
                 "action": r.result.verdict.action.value, "reply": str(r.result.verdict.reply)},
             "score": r.result.score,
             "symbols": [{"name": s.name, "score": s.score, "reason": s.reason}
                         for s in r.result.symbols],
             "auth": [a.render() for a in r.result.auth],
             "changes": [describe_change(c) for c in r.result.changes]}
            for r in out.runs
        ],
        "changes": [describe_change(c) for c in out.changes],
    }


def render_table(data: dict[str, Any]) -> str:
    """A readable report of one message."""
    lines = [f"== {data['file']}",
             f"   envelope: from=<{data['envelope']['mail_from']}> "
             f"rcpts={','.join(data['envelope']['rcpts']) or '-'} "
             f"client={data['envelope']['client_ip'] or '-'}"]
    lines.append(f"   {'filter':<16} {'stage':<8} {'ms':>7} {'score':>6}  findings")
    for f in data["filters"]:
        findings = [f"{s['name']}({s['score']:g}): {s['reason']}" for s in f["symbols"]]
        findings += [f"auth {a}" for a in f["auth"]]
        if f["verdict"]:
            findings.append(f"VERDICT {f['verdict']['action']} {f['verdict']['reply']}")
        findings += [f"change {c}" for c in f["changes"]]
        if f["error"]:
            findings.append(f"ERROR {f['error']}")
        first, *rest = findings or ["-"]
        lines.append(f"   {f['name']:<16} {f['stage']:<8} {f['ms']:>7.2f} "
                     f"{f['score']:>6.2f}  {first}")
        lines.extend(f"   {'':<16} {'':<8} {'':>7} {'':>6}  {more}" for more in rest)
    lines.append(f"   => {data['action'].upper()} score={data['score']:g} reply: {data['reply']}"
                 + (f" ({data['reason']})" if data["reason"] and data["action"] != "accept"
                    else ""))
    lines.extend(f"   applied: {c}" for c in data["changes"])
    return "\n".join(lines)


async def _check_all(config: Config, pipeline: Pipeline, files: tuple[str, ...],
                     args: EnvelopeArgs, run_all: bool) -> list[dict[str, Any]]:
    from rohrpost.filter import Services
    from rohrpost.runner import process
    from rohrpost.services import make_services
    from rohrpost.store.memory import MemoryStore

    real = make_services(config)
    services = Services(resolver_factory=lambda: real.resolver, store_factory=MemoryStore)
    results = []
    try:
        for path in files:
            with open(path, "rb") as fh:
                message = Message(fh.read())
            envelope = envelope_for_pipe(args, {}, message)
            done = await process(pipeline, services, envelope, message, run_all=run_all)
            results.append(outcome_dict(path, done))
    finally:
        await pipeline.aclose()
        await services.aclose()
    return results


@click.command("check")
@config_option
@envelope_options
@click.option("--json", "as_json", is_flag=True, help="print JSON (a list, one object per file)")
@click.option("--all", "run_all", is_flag=True,
              help="run every filter even after a final verdict (the final action stays the "
                   "first verdict): see what each filter says, e.g. past greylisting")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def check_cmd(config_path: str | None, as_json: bool, run_all: bool, files: tuple[str, ...],
              **kwargs: Any) -> int:
    """Show what each filter finds in each FILE (symbols, scores, changes, final action).

    Changes nothing and delivers nothing; greylist and rate state are kept in memory only.
    """
    args = envelope_args(kwargs)
    config = load_or_exit(config_path, mta_facing=False)
    for path in files:
        if not os.path.isfile(path):
            click.echo(f"rohrpost check: no such file: {path}", err=True)
            return EX_NOINPUT
    try:
        pipeline = Pipeline.build(config)
        results = asyncio.run(_check_all(config, pipeline, files, args, run_all))
    except ConfigError as exc:
        click.echo(f"rohrpost check: configuration error: {exc}", err=True)
        return EX_CONFIG
    except EnvelopeError as exc:
        click.echo(f"rohrpost check: {exc}", err=True)
        return EX_DATAERR
    if as_json:
        json.dump(results, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        click.echo("\n\n".join(render_table(r) for r in results))
    return 0
