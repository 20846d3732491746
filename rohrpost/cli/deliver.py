"""``rohrpost deliver DEST``: the delivery agents at the end of a shell pipe.

Owns the deliver command: read stdin, build the envelope like the pipe commands do, deliver,
and exit with the sysexits code of the delivery report (0, 75, 67, 69, 73, 77).
"""

from __future__ import annotations

import os
from typing import Any

import click

from rohrpost.cli.common import (
    MtaCommand,
    envelope_args,
    envelope_options,
    fail,
    read_message,
    report_exit,
    tempfail_on_crash,
)
from rohrpost.envsource import EnvelopeError, envelope_for_pipe
from rohrpost.message import Message
from rohrpost.sysexits import EX_TEMPFAIL

MAX_DELIVER_SIZE = 1 << 31


@click.command("deliver", cls=MtaCommand)
@click.argument("dest", metavar="DEST")
@click.option("-c", "--config", "config_path", metavar="FILE", default=None,
              type=click.Path(dir_okay=False),
              help="pipeline.toml whose [deliver] table sorts (junk, rules, dedup, quota)")
@envelope_options
@tempfail_on_crash
def deliver_cmd(dest: str, config_path: str | None, **kwargs: Any) -> int:
    """Deliver the message on stdin to DEST.

    DEST: maildir:PATH, mbox:PATH, lmtp:HOST:PORT, lmtp:unix:PATH, smtp:HOST:PORT,
    pipe:COMMAND ARG... (no shell). With -c and a [deliver] table the message is sorted
    (docs/delivery.md); spam is recognised by X-Spam-Flag/X-Spam-Status from earlier stages.
    """
    from rohrpost.deliver import DestinationError, deliver, parse_destination

    args = envelope_args(kwargs)
    try:
        destination = parse_destination(dest)
    except DestinationError as exc:
        raise click.UsageError(f"bad destination: {exc}") from None
    raw = read_message(MAX_DELIVER_SIZE)
    try:
        envelope = envelope_for_pipe(args, os.environ, Message(raw))
    except EnvelopeError as exc:
        fail(EX_TEMPFAIL, "4.3.5", str(exc))
    if config_path is not None:
        import asyncio

        from rohrpost.cli.common import load_or_exit
        from rohrpost.cli.sortcmd import deliver_sorted_code, load_sorting

        config = load_or_exit(config_path, mta_facing=True)
        section = load_sorting(config) if "deliver" in config.raw else None
        if section is not None:
            return asyncio.run(deliver_sorted_code(config, section, dest, raw, envelope,
                                                   spam=None))
    report = deliver(destination, raw, envelope)
    return report_exit(report)
