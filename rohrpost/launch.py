"""The ``rohrpost`` executable: a plain ``rohrpost run`` without click, everything else with it.

Owns ``main`` (the entry point of ``bin/rohrpost`` and of the installed script) and
``parse_run``. Importing click and letting it parse the arguments was a quarter of a
``rohrpost run`` start (docs/performance.md, findings 12 and 19), which procmail and Postfix
pipe(8) pay per message. ``parse_run`` accepts the argument lists an MTA writes (``run`` with
``-c/--config``, ``-f/--sender``, ``-r/--recipient``, ``--client-ip``, ``--helo``,
``--auth-user``, ``--deliver``, each followed by its value or written ``--name=value``) and
hands back ``None`` for anything else (``--help``, an unknown or repeated option, a missing
value, a value starting with ``-``, a ``-c`` path click would refuse, a shell-completion
request), which then goes through click (``rohrpost.cli``) exactly as before: the same
usage messages and exit codes. Both paths run ``rohrpost.pipemode.run_command``
(docs/decisions.md).
"""

from __future__ import annotations

import gc
import os
import stat
import sys

TYPE_CHECKING = False  # not typing's: importing typing is what main() does with the GC off
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import NoReturn

#: ``rohrpost run``'s options: every spelling click accepts, to the parameter it sets
RUN_OPTIONS = {
    "-c": "config_path", "--config": "config_path",
    "-f": "sender", "--sender": "sender",
    "-r": "recipients", "--recipient": "recipients",
    "--client-ip": "client_ip", "--helo": "helo", "--auth-user": "auth_user",
    "--deliver": "deliver",
}


class RunArgs:
    """``rohrpost run``'s parameters, as click would pass them to the command."""

    __slots__ = ("auth_user", "client_ip", "config_path", "deliver", "helo", "recipients",
                 "sender")

    def __init__(self, values: Mapping[str, str], recipients: Sequence[str]) -> None:
        self.config_path: str | None = values.get("config_path")
        self.deliver: str | None = values.get("deliver")
        self.sender: str | None = values.get("sender")
        self.recipients = tuple(recipients)
        self.client_ip = values.get("client_ip", "")
        self.helo = values.get("helo", "")
        self.auth_user = values.get("auth_user", "")


def parse_run(argv: Sequence[str], environ: Mapping[str, str]) -> RunArgs | None:
    """``run``'s parameters from ``argv`` (without the program name), or ``None``: use click."""
    if not argv or argv[0] != "run":
        return None
    if any(key.startswith("_") and key.endswith("_COMPLETE") and value
           for key, value in environ.items()):
        return None  # click's shell completion (_ROHRPOST_COMPLETE=...)
    values: dict[str, str] = {}
    recipients: list[str] = []
    rest = argv[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        name, eq, value = arg.partition("=")
        if eq and name.startswith("--") and name in RUN_OPTIONS:
            i += 1
        elif arg in RUN_OPTIONS and i + 1 < len(rest) and not rest[i + 1].startswith("-"):
            name, value = arg, rest[i + 1]
            i += 2
        else:
            return None
        key = RUN_OPTIONS[name]
        if key == "recipients":
            recipients.append(value)
        elif key in values:
            return None  # the same option twice: rare enough to leave to click
        else:
            values[key] = value
    config = values.get("config_path")
    if config is not None and not _click_accepts_path(config):
        return None
    return RunArgs(values, recipients)


def _click_accepts_path(path: str) -> bool:
    """What ``click.Path(dir_okay=False)`` checks: an existing path is a readable non-folder."""
    try:
        st = os.stat(path)
    except OSError:
        return True  # missing: click passes it on, loading the configuration reports it
    return not stat.S_ISDIR(st.st_mode) and os.access(path, os.R_OK)


def main(prog_name: str | None = None) -> None:
    """Run ``rohrpost`` with ``sys.argv`` and exit with its status."""
    # Starting triggers eight collections that free nothing (modules, classes and the
    # configuration live until exit): 2.5 M instructions, 1.3 % of a run. The collector is
    # back on before the message is read (rohrpost.pipemode.run_pipe), and for all of click.
    gc.disable()
    args = parse_run(sys.argv[1:], os.environ)
    if args is None:
        gc.enable()
        from rohrpost.cli import main as cli

        if prog_name is None:
            cli()
        else:
            cli(prog_name=prog_name)
        return
    try:
        from rohrpost.envsource import EnvelopeArgs
        from rohrpost.pipemode import crash, run_command

        envelope = EnvelopeArgs(sender=args.sender, recipients=args.recipients,
                                client_ip=args.client_ip, helo=args.helo,
                                auth_user=args.auth_user)
    except (EOFError, KeyboardInterrupt):
        _aborted()
    try:
        status = run_command(args.config_path, args.deliver, envelope)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - the MTA must keep the mail
        crash(exc)
    sys.exit(status)


def _aborted() -> NoReturn:
    """Interrupted before the command ran: what click prints then (a blank line, "Aborted!")."""
    if sys.stderr is not None:
        sys.stderr.write("\nAborted!\n")
        sys.stderr.flush()
    sys.exit(75)
