"""``rohrpost fetch``: pull mail from POP3/IMAP accounts through the pipeline into delivery.

Owns the command line: which accounts (``--account NAME`` or ``--all``), once or
``--daemon``, ``--ca FILE``, the progress bar (stderr, when it is a terminal or with
``--progress``) and the printed summary. Exit status: 0 all done; 75 something was left for the
next run (tempfail, delivery problem, too large); 69 a job failed (server, TLS, protocol); 78
configuration or password-file problem.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from rohrpost.cli.common import config_option, load_or_exit
from rohrpost.config import Config, ConfigError
from rohrpost.sysexits import EX_CONFIG, EX_TEMPFAIL, EX_UNAVAILABLE

if TYPE_CHECKING:
    from rohrpost.deliver.sorting import DeliverSection
    from rohrpost.fetch.accounts import Account


def _select(config: Config, names: tuple[str, ...],
            all_accounts: bool) -> tuple[list[Account], DeliverSection]:
    """The accounts to run and the [deliver] settings; exit 78 on any configuration error."""
    from rohrpost.deliver.sorting import load_deliver_section
    from rohrpost.fetch.accounts import FetchError, find_account, load_accounts

    if not names and not all_accounts:
        raise click.UsageError("name an account with --account NAME, or use --all")
    try:
        accounts = load_accounts(config)
        sorting = load_deliver_section(config)
        chosen = accounts if all_accounts else [find_account(accounts, n) for n in names]
    except (ConfigError, FetchError) as exc:
        click.echo(f"rohrpost fetch: configuration error: {exc}", err=True)
        sys.exit(EX_CONFIG)
    if not chosen:
        click.echo("rohrpost fetch: no [[fetch]] accounts configured", err=True)
        sys.exit(EX_CONFIG)
    return chosen, sorting


class _Progress:
    """A click progress bar on stderr, or plain lines when stderr is not a terminal."""

    def __init__(self, tty: bool) -> None:
        self.tty = tty
        self.bar: Any = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            if self.bar is None:
                self.bar = click.progressbar(length=total, label="fetching", file=sys.stderr,
                                             show_pos=True)
                self.bar.__enter__()
            self.bar.update(done - self.shown)
            self.shown = done
            if done >= total:
                self.close()
        elif done == total or done % max(1, total // 10) == 0:
            click.echo(f"fetching: {done}/{total}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
            self.shown = 0


@click.command("fetch")
@config_option
@click.option("--account", "names", metavar="NAME", multiple=True,
              help="the [[fetch]] account to run (repeatable)")
@click.option("--all", "all_accounts", is_flag=True, help="run every [[fetch]] account")
@click.option("--daemon", is_flag=True,
              help="keep running: every interval (± jitter), or at once on IMAP IDLE")
@click.option("--ca", "ca_file", metavar="FILE", default=None,
              type=click.Path(dir_okay=False, exists=True),
              help="trust this CA file (private certificates) instead of the system's")
@click.option("--progress/--no-progress", default=None,
              help="progress on stderr (default: when stderr is a terminal)")
def fetch_cmd(*, config_path: str | None, names: tuple[str, ...], all_accounts: bool,
               daemon: bool, ca_file: str | None, progress: bool | None) -> int:
    """Fetch mail over POP3/IMAP into the pipeline and deliver it (docs/fetch.md)."""
    from rohrpost.fetch.accounts import PasswordError
    from rohrpost.logsetup import setup_logging

    ca_file = ca_file or ""
    config = load_or_exit(config_path, mta_facing=False)
    setup_logging(config.log.level, config.log.target, config.log.format)
    chosen, sorting = _select(config, names, all_accounts)
    result = {"failed": False, "later": False, "setup": False}

    def report(acct: Any, stats: Any, error: BaseException | None) -> None:
        if stats is not None:
            click.echo(f"{acct.name}: {stats.summary()}")
            for problem in stats.problems:
                click.echo(f"{acct.name}: {problem}", err=True)
            result["later"] = result["later"] or stats.left_for_later > 0
        if error is not None:
            click.echo(f"{acct.name}: fetch failed: {error}", err=True)
            result["failed"] = True
            result["setup"] = result["setup"] or isinstance(error, PasswordError)
        sys.stdout.flush()

    if daemon:
        from rohrpost.fetch.daemon import run_daemon

        run_daemon(config, chosen, sorting, ca_file=ca_file, report=report)
        return 0
    from rohrpost.fetch.daemon import run_accounts

    show = progress if progress is not None else sys.stderr.isatty()
    bar = _Progress(sys.stderr.isatty()) if show else None
    try:
        asyncio.run(run_accounts(config, chosen, sorting, ca_file=ca_file, report=report,
                                 progress=bar, stop=threading.Event()))
    finally:
        if bar is not None:
            bar.close()
    if result["setup"]:
        return EX_CONFIG
    if result["failed"]:
        return EX_UNAVAILABLE
    return EX_TEMPFAIL if result["later"] else 0
