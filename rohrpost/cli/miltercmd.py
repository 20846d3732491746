"""``rohrpost milter``: serve the pipeline to Postfix (``smtpd_milters``) over the milter protocol.

Owns the click command only: option defaults come from ``[milter]`` in pipeline.toml, the
daemon itself is ``rohrpost.milter.server``. A bad configuration exits 78 (EX_CONFIG) before
anything listens; Postfix's ``milter_default_action = tempfail`` keeps mail while the milter
is down.
"""

from __future__ import annotations

import click

from rohrpost.cli.common import config_option, fail, load_or_exit
from rohrpost.config import ConfigError
from rohrpost.sysexits import EX_CONFIG


@click.command("milter")
@config_option
@click.option("--socket", "socket_spec", metavar="SPEC", default=None,
              help="inet:PORT@HOST or unix:PATH (default: [milter] socket)")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="pre-forked worker processes sharing the socket; 0 = no fork "
                   "(default: [milter] workers)")
@click.option("--engine", type=click.Choice(["asyncio", "libmilter"]), default=None,
              help="asyncio: rohrpost speaks the milter protocol itself, one event loop per "
                   "worker; libmilter: through pymilter, a thread per connection "
                   "(default: [milter] engine)")
@click.option("--metrics", "metrics_addr", metavar="HOST:PORT", default=None,
              help="serve Prometheus metrics at http://HOST:PORT/metrics (default: [milter] "
                   "metrics, empty = off)")
def milter_cmd(config_path: str | None, socket_spec: str | None, workers: int | None,
               engine: str | None, metrics_addr: str | None) -> int:
    """Serve the pipeline to Postfix as a milter (smtpd_milters = inet:PORT@HOST)."""
    # imported here so that other subcommands never load pymilter (lazy CLI, see cli/__init__)
    from rohrpost.logsetup import setup_logging
    from rohrpost.milter.server import SocketError, SocketSpec, serve

    config = load_or_exit(config_path, mta_facing=False)
    setup_logging(config.log.level, config.log.target, config.log.format)
    milter_cfg = config.milter
    spec = socket_spec if socket_spec is not None else milter_cfg.socket
    try:
        SocketSpec.parse(spec)
    except SocketError as exc:
        raise click.BadParameter(str(exc), param_hint="--socket") from None
    try:
        return serve(config, spec,
                     workers if workers is not None else milter_cfg.workers,
                     metrics_addr if metrics_addr is not None else milter_cfg.metrics,
                     engine=engine)
    except ConfigError as exc:
        fail(EX_CONFIG, "", f"configuration error: {exc}")
    except (SocketError, OSError) as exc:
        fail(EX_CONFIG, "", f"cannot listen: {exc}")
