"""What the subcommands share: the config option, envelope flags, stdin, error exits.

Owns ``config_option``, ``envelope_options``, ``load_or_exit``, ``read_message`` and
``fail``. MTA-facing commands (run, filter, deliver) turn every problem that is not a verdict
into exit 75 (EX_TEMPFAIL) with an enhanced status code first on stderr, because Postfix
pipe(8) bounces mail on any other non-zero status.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

from rohrpost.config import Config, ConfigError, load_config
from rohrpost.envsource import EnvelopeArgs
from rohrpost.sysexits import EX_CONFIG, EX_TEMPFAIL

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_CONFIGS = ("/etc/rohrpost/pipeline.toml", "pipeline.toml")


def default_config_path() -> str | None:
    """``$ROHRPOST_CONFIG``, else /etc/rohrpost/pipeline.toml, else ./pipeline.toml, else none."""
    env = os.environ.get("ROHRPOST_CONFIG")
    if env:
        return env
    for path in DEFAULT_CONFIGS:
        if os.path.isfile(path):
            return path
    return None


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


def fail(code: int, status: str, text: str) -> NoReturn:
    """Print ``STATUS text`` on stderr (pipe(8) reads the enhanced code) and exit ``code``."""
    click.echo(f"{status} rohrpost: {text}" if status else f"rohrpost: {text}", err=True)
    sys.exit(code)


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


def tempfail_on_crash(fn: F) -> F:
    """Decorator for MTA-facing commands: any unexpected exception exits 75, never 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SystemExit, click.exceptions.Exit, click.ClickException):
            raise
        except BaseException as exc:  # noqa: BLE001 - the MTA must keep the mail
            import logging
            import traceback

            logging.getLogger("rohrpost").debug("%s", traceback.format_exc())
            fail(EX_TEMPFAIL, "4.3.0", f"internal error ({type(exc).__name__}): {exc}")

    return wrapper  # type: ignore[return-value]


class MtaCommand(click.Command):
    """A command an MTA calls (run, filter, deliver): usage errors exit 75, not 64."""

    mta_facing = True


def report_exit(report: Any) -> int:
    """Print each failed recipient of a ``DeliveryReport`` on stderr; return its exit code."""
    for outcome in report.outcomes:
        if outcome.reply.code >= 400:
            click.echo(f"{outcome.reply.enhanced} {outcome.rcpt or '-'}: {outcome.reply.text}",
                       err=True)
    return int(report.exit_code)
