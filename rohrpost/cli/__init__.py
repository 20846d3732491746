"""The ``rohrpost`` command: a click group whose subcommands are imported on demand.

Owns ``main`` and ``LazyGroup``. Each subcommand lives in its own module and is imported only
when used, so ``rohrpost run`` in a procmail pipe does not pay for the milter, the SMTP server
or DNS libraries.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("rohrpost.cli.pipe:run_cmd", "Run the pipeline on stdin, write the result to stdout."),
    "filter": ("rohrpost.cli.pipe:filter_cmd", "Run one filter alone on stdin; --list lists them."),
    "check": ("rohrpost.cli.check:check_cmd", "Show what each filter finds in message files."),
    "deliver": ("rohrpost.cli.deliver:deliver_cmd",
                "Deliver stdin to maildir/mbox/lmtp/smtp/pipe."),
    "milter": ("rohrpost.cli.miltercmd:milter_cmd", "Serve the pipeline to Postfix as a milter."),
    "serve": ("rohrpost.cli.servecmd:serve_cmd", "SMTP/LMTP receiver (content_filter, LMTP)."),
    "config": ("rohrpost.cli.configcmd:config_group", "Validate pipeline.toml."),
    "dkim": ("rohrpost.cli.dkimcmd:dkim_group", "DKIM keys: keygen, check."),
    "dmarc": ("rohrpost.cli.dmarccmd:dmarc_group", "DMARC aggregate reports."),
    "fetch": ("rohrpost.cli.fetchcmd:fetch_cmd", "Fetch mail over POP3/IMAP into the pipeline."),
    "quarantine": ("rohrpost.cli.quarantinecmd:quarantine_group",
                   "List, show, release or delete quarantined mail."),
    "learn": ("rohrpost.cli.learncmd:learn_cmd",
              "Teach spamd's Bayes: --spam/--ham FILE|MAILDIR."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when the subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """All subcommand names, including lazy ones."""
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return ``cmd_name``."""
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = entry[0].split(":")
        command: Any = getattr(importlib.import_module(module_name), attr)
        return command  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List subcommands from the table, without importing them (fast ``--help``)."""
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run; exit statuses follow sysexits.h instead of click's 1 and 2.

        A usage error exits 64 (EX_USAGE), or 75 (EX_TEMPFAIL) for commands an MTA calls, so
        a typo in master.cf defers mail instead of bouncing it. An int returned by a command
        is its exit status.
        """
        kwargs["standalone_mode"] = False
        argv = list(kwargs.get("args") or (args[0] if args else sys.argv[1:]))
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(75)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            exc.show()
            if exc.ctx is not None and exc.ctx.command is not self:
                mta = bool(getattr(exc.ctx.command, "mta_facing", False))
            else:  # click raised it before a command's context existed (`run -c` at the end)
                mta = self._mta_facing(next((a for a in argv if not a.startswith("-")), ""))
            if mta:
                click.echo(f"4.3.5 rohrpost: bad arguments: {exc.format_message()}", err=True)
            sys.exit(75 if mta else 64)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        sys.exit(rv if isinstance(rv, int) else 0)

    def _mta_facing(self, name: str) -> bool:
        """True when subcommand ``name`` is one an MTA calls (usage errors then exit 75)."""
        if name not in COMMANDS:
            return False
        command = self.get_command(click.Context(self), name)
        return bool(getattr(command, "mta_facing", False))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=None, version=__import__("rohrpost").__version__,
                      prog_name="rohrpost")
def main() -> None:
    """rohrpost: composable mail filters for milter, pipe and SMTP/LMTP modes.

    One pipeline.toml drives every mode. Exit codes follow sysexits.h (docs/pipes.md).
    """
