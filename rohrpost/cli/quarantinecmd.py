"""``rohrpost quarantine list|show|release|delete``: the admin's view of held mail.

Owns the quarantine command group. Release re-delivers with the original envelope through
``[quarantine] release_to`` (or ``--to DEST``) and removes the message only after the
destination accepted it for every recipient.
"""

from __future__ import annotations

import json
import sys
import time

import click

from rohrpost.cli.common import config_option, load_or_exit
from rohrpost.quarantine import Quarantine, QuarantineError
from rohrpost.sysexits import EX_NOINPUT, EX_USAGE


def _open(config_path: str | None) -> Quarantine:
    config = load_or_exit(config_path, mta_facing=False)
    return Quarantine(config.quarantine_dir)


@click.group("quarantine")
def quarantine_group() -> None:
    """List, show, release or delete quarantined messages."""


@quarantine_group.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="JSON output")
def list_cmd(config_path: str | None, as_json: bool) -> int:
    """List held messages, oldest first."""
    entries = _open(config_path).list()
    if as_json:
        json.dump([e.__dict__ for e in entries], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.time))
        click.echo(f"{e.id}  {when}  from=<{e.mail_from}> to={','.join(e.rcpts)} "
                   f"score={e.score:g} reason=\"{e.reason}\" subject=\"{e.subject}\"")
    if not entries:
        click.echo("quarantine is empty")
    return 0


@quarantine_group.command("show")
@config_option
@click.argument("qid")
@click.option("--raw", is_flag=True, help="print the message itself")
def show_cmd(config_path: str | None, qid: str, raw: bool) -> int:
    """Show one held message's envelope and reason (or the message with --raw)."""
    q = _open(config_path)
    try:
        if raw:
            sys.stdout.buffer.write(q.raw(qid))
            return 0
        click.echo(json.dumps(q.entry(qid).__dict__, indent=2))
    except QuarantineError as exc:
        click.echo(f"rohrpost quarantine: {exc}", err=True)
        return EX_NOINPUT
    return 0


@quarantine_group.command("delete")
@config_option
@click.argument("qids", nargs=-1, required=True)
def delete_cmd(config_path: str | None, qids: tuple[str, ...]) -> int:
    """Delete held messages for good."""
    q = _open(config_path)
    for qid in qids:
        try:
            q.delete(qid)
        except QuarantineError as exc:
            click.echo(f"rohrpost quarantine: {exc}", err=True)
            return EX_NOINPUT
        click.echo(f"deleted {qid}")
    return 0


@quarantine_group.command("release")
@config_option
@click.argument("qids", nargs=-1, required=True)
@click.option("--to", "dest", metavar="DEST", default=None,
              help="deliver here instead of [quarantine] release_to")
def release_cmd(config_path: str | None, qids: tuple[str, ...], dest: str | None) -> int:
    """Re-deliver held messages with their original envelope, then delete them."""
    from rohrpost.deliver import DestinationError, deliver, parse_destination

    config = load_or_exit(config_path, mta_facing=False)
    q = Quarantine(config.quarantine_dir)
    spec = dest or config.resolve_destination(config.quarantine.release_to)
    if not spec:
        click.echo("rohrpost quarantine: no destination: set [quarantine] release_to or --to",
                   err=True)
        return EX_USAGE
    try:
        destination = parse_destination(spec)
    except DestinationError as exc:
        click.echo(f"rohrpost quarantine: bad destination: {exc}", err=True)
        return EX_USAGE
    status = 0
    for qid in qids:
        try:
            entry, raw = q.entry(qid), q.raw(qid)
        except QuarantineError as exc:
            click.echo(f"rohrpost quarantine: {exc}", err=True)
            status = EX_NOINPUT
            continue
        report = deliver(destination, raw, entry.envelope())
        if report.ok:
            q.delete(qid)
            click.echo(f"released {qid} to {spec}")
        else:
            click.echo(f"rohrpost quarantine: {qid} not released: {report.detail}", err=True)
            status = int(report.exit_code)
    return status
