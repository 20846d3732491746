"""``rohrpost serve``: run the pipeline as an SMTP (content_filter) or LMTP server.

Owns the serve command: options with defaults from ``[serve]``, start-up checks (the
configuration, every filter, the destination and the listen address are validated before the
port is opened, so a broken setup fails at start and not on the first message), logging, and
the "rohrpost serve: listening on HOST:PORT" line on stderr once the socket is bound (the
ready signal that scripts and tests wait for).
"""

from __future__ import annotations

import asyncio
import sys

import click

from rohrpost.cli.common import config_option, fail, load_or_exit
from rohrpost.config import ConfigError
from rohrpost.sysexits import EX_CONFIG, EX_OSERR, EX_USAGE


@click.command("serve")
@config_option
@click.option("--listen", metavar="HOST:PORT", default=None,
              help="address to listen on (default [serve] listen, 127.0.0.1:10025; "
                   "port 0 picks a free port)")
@click.option("--lmtp/--smtp", "lmtp", default=None,
              help="speak LMTP (final delivery, one reply per recipient) or SMTP "
                   "(content_filter); default [serve] lmtp")
@click.option("--deliver", "deliver", metavar="DEST", default=None,
              help="where accepted mail goes: smtp:127.0.0.1:10026 (reinjection), "
                   "maildir:PATH, lmtp:..., mbox:PATH, pipe:... (default [serve] deliver)")
@click.option("--metrics", metavar="HOST:PORT", default=None,
              help="serve Prometheus metrics here (default [serve] metrics; empty = off)")
@click.option("--max-size", type=click.IntRange(min=1), default=None,
              help="largest message in bytes, advertised as SIZE (default [serve] max_size)")
@click.option("--max-recipients", type=click.IntRange(min=1), default=100, show_default=True,
              help="recipients per message")
@click.option("--max-sessions", type=click.IntRange(min=1), default=100, show_default=True,
              help="concurrent connections")
@click.option("--timeout", "command_timeout", type=click.FloatRange(min=1), default=300.0,
              show_default=True, help="seconds a client may stay silent")
@click.option("--message-timeout", type=click.FloatRange(min=1), default=300.0,
              show_default=True,
              help="seconds to filter and deliver one message (keep below Postfix's "
                   "smtp_data_done_timeout)")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=30.0,
              show_default=True, help="seconds open transactions get on SIGTERM")
@click.option("--xforward-from", "xforward_from", metavar="CIDR", multiple=True,
              help="clients offered XFORWARD, repeatable (default [pipeline] "
                   "trusted_networks: 127.0.0.0/8, ::1)")
def serve_cmd(*, config_path: str | None, listen: str | None, lmtp: bool | None,
              deliver: str | None, metrics: str | None, max_size: int | None,
              max_recipients: int, max_sessions: int, command_timeout: float,
              message_timeout: float, shutdown_timeout: float,
              xforward_from: tuple[str, ...]) -> int:
    """Receive mail over SMTP or LMTP, run the pipeline, deliver, then answer.

    SMTP mode is Postfix's after-queue content_filter: mail comes in from Postfix and goes
    back through --deliver smtp:127.0.0.1:10026; with smtp_send_xforward_command=yes the
    filters see the original client. LMTP mode (--lmtp) delivers finally and answers each
    recipient. The client gets 250 only after the destination accepted the message.
    """
    # imported here, not at the top: ``rohrpost --help`` must not pay for them (PLC0415)
    from rohrpost.deliver import DestinationError, parse_destination
    from rohrpost.logsetup import setup_logging
    from rohrpost.pipeline import Pipeline
    from rohrpost.services import make_services
    from rohrpost.smtpd import ServeOptions, parse_hostport, serve

    config = load_or_exit(config_path, mta_facing=False)
    section = config.serve
    setup_logging(config.log.level, config.log.target, config.log.format)
    # a destination from the file is relative to the file's folder, one from the command line
    # to the working directory
    spec = deliver if deliver is not None else config.resolve_destination(section.deliver)
    if not spec:
        fail(EX_USAGE, "", "serve needs --deliver DEST (or [serve] deliver)")
    try:
        destination = parse_destination(spec)
        host, port = parse_hostport(listen if listen is not None else section.listen, "--listen")
        pipeline = Pipeline.build(config)
    except (DestinationError, ConfigError, ValueError) as exc:
        fail(EX_CONFIG, "", f"configuration error: {exc}")
    metrics_listen = metrics if metrics is not None else section.metrics
    if metrics_listen:
        try:
            import rohrpost.metrics  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
        except ImportError:
            fail(EX_CONFIG, "", "--metrics: this installation has no rohrpost.metrics module")
    options = ServeOptions(
        host=host, port=port, lmtp=section.lmtp if lmtp is None else lmtp,
        destination=destination,
        max_size=max_size if max_size is not None else section.max_size,
        max_rcpts=max_recipients, max_sessions=max_sessions, command_timeout=command_timeout,
        message_timeout=message_timeout, shutdown_timeout=shutdown_timeout,
        xforward_networks=tuple(xforward_from or config.pipeline.trusted_networks))

    def ready(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        asyncio.run(serve(config, pipeline, make_services(config), options=options,
                          metrics_listen=metrics_listen, ready=ready))
    except OSError as exc:
        fail(EX_OSERR, "", f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    return 0
