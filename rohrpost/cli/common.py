"""What the subcommands share: the config option, envelope flags, stdin, error exits.

Owns ``config_option``, ``envelope_options``, ``envelope_args``, ``tempfail_on_crash`` and
``MtaCommand``; ``load_or_exit``, ``read_message``, ``fail`` and ``report_exit`` live in
``rohrpost.pipemode`` (click-free, for the fast ``rohrpost run``) and are re-exported here.
MTA-facing commands (run, filter, deliver) turn every problem that is not a verdict into exit
75 (EX_TEMPFAIL) with an enhanced status code first on stderr, because Postfix pipe(8) bounces
mail on any other non-zero status.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from rohrpost.envsource import EnvelopeArgs
from rohrpost.pipemode import (
    DEFAULT_CONFIGS,
    crash,
    default_config_path,
    fail,
    load_or_exit,
    read_message,
    report_exit,
)

__all__ = [
    "DEFAULT_CONFIGS",
    "MtaCommand",
    "config_option",
    "default_config_path",
    "envelope_args",
    "envelope_options",
    "fail",
    "load_or_exit",
    "read_message",
    "report_exit",
    "tempfail_on_crash",
]

F = TypeVar("F", bound=Callable[..., Any])


def config_option(fn: F) -> F:
    """``-c/--config FILE``."""
    return click.option("-c", "--config", "config_path", metavar="FILE",
                        type=click.Path(dir_okay=False),
                        help="pipeline.toml (default: $ROHRPOST_CONFIG, "
                             "/etc/rohrpost/pipeline.toml, ./pipeline.toml)")(fn)


def envelope_options(fn: F) -> F:
    """The envelope flags shared by run, filter, check and deliver."""
    opts = [
        click.option("--sender", "-f", metavar="ADDR", default=None,
                     help="MAIL FROM (Postfix pipe(8) ${sender}; '' is the null sender)"),
        click.option("--recipient", "-r", "recipients", metavar="ADDR", multiple=True,
                     help="RCPT TO, repeatable (${recipient})"),
        click.option("--client-ip", metavar="IP", default="", help="client address"),
        click.option("--helo", metavar="NAME", default="", help="client HELO name"),
        click.option("--auth-user", metavar="USER", default="",
                     help="mark the message as submitted by an authenticated user"),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def envelope_args(kwargs: dict[str, Any]) -> EnvelopeArgs:
    """Collect the envelope flags from a command's keyword arguments."""
    return EnvelopeArgs(sender=kwargs.pop("sender"), recipients=kwargs.pop("recipients"),
                        client_ip=kwargs.pop("client_ip"), helo=kwargs.pop("helo"),
                        auth_user=kwargs.pop("auth_user"))


def tempfail_on_crash(fn: F) -> F:
    """Decorator for MTA-facing commands: any unexpected exception exits 75, never 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SystemExit, click.exceptions.Exit, click.ClickException):
            raise
        except BaseException as exc:  # noqa: BLE001 - the MTA must keep the mail
            crash(exc)

    return wrapper  # type: ignore[return-value]


class MtaCommand(click.Command):
    """A command an MTA calls (run, filter, deliver): usage errors exit 75, not 64."""

    mta_facing = True
