"""``rohrpost run`` and ``rohrpost filter``: the pipeline (or one filter) on stdin → stdout.

Owns the two pipe commands as click commands. What they do is ``rohrpost.pipemode``'s
(``run_command``, ``run_pipe``), which ``rohrpost.launch`` also calls without click for a
plain ``rohrpost run``; the message is written only once the verdict is final and anything
unexpected exits 75.
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
    tempfail_on_crash,
)
from rohrpost.config import ConfigError, FilterSpec
from rohrpost.pipeline import Pipeline, make_step
from rohrpost.pipemode import run_command, run_pipe
from rohrpost.sysexits import EX_TEMPFAIL


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
    return run_command(config_path, deliver, envelope_args(kwargs))


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
