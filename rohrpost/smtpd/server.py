"""The ``rohrpost serve`` daemon: listen, bound the sessions, shut down gracefully.

Owns ``ServeOptions``, ``Server`` and ``run``. One asyncio loop serves every connection;
filters wait on DNS and sockets concurrently, and delivery, quarantine writes and other
blocking work go to a thread pool, so one slow next hop does not stall other sessions.

Shutdown (SIGTERM or SIGINT): stop accepting, answer a new MAIL with 421, wait up to
``shutdown_timeout`` for open mail transactions (MAIL to the answer after DATA) to finish,
then close the remaining (idle) connections. A client whose transaction is cut off has not
been answered, so it keeps the message and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rohrpost.config import Config
from rohrpost.deliver import Destination
from rohrpost.filter import Services
from rohrpost.pipeline import Pipeline
from rohrpost.smtpd.adapter import protocol_factory
from rohrpost.smtpd.conversation import Conversation, MetricsSink, Shared

log = logging.getLogger("rohrpost.smtpd")

READY_PREFIX = "rohrpost serve: listening on"
_CLOSE_WAIT = 5.0


def parse_hostport(text: str, what: str = "address") -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[IPV6]:PORT`` (port 0 lets the system choose).

    :raises ValueError: with what is wrong and an example.
    """
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            sep = ""
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{what} must be HOST:PORT or [IPV6]:PORT (e.g. 127.0.0.1:10025), "
                         f"got {text!r}")
    return host, int(port)


@dataclass(frozen=True)
class ServeOptions:
    """How the server listens, what it accepts and where it delivers.

    :param max_rcpts: recipients per message; more get ``452 4.5.3``.
    :param max_sessions: concurrent connections; more are greeted with 421 and closed.
    :param command_timeout: seconds a client may stay silent between commands.
    :param message_timeout: seconds for filtering and delivering one message; keep it below
        Postfix's smtp_data_done_timeout (600 s), or Postfix gives up before our answer.
    :param xforward_networks: clients that are offered XFORWARD (CIDR).
    """

    host: str
    port: int
    lmtp: bool
    destination: Destination
    max_size: int
    max_rcpts: int = 100
    max_sessions: int = 100
    command_timeout: float = 300.0
    message_timeout: float = 300.0
    shutdown_timeout: float = 30.0
    xforward_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    workers: int = 32


class Server:
    """A listening SMTP or LMTP server for one pipeline."""

    def __init__(self, config: Config, pipeline: Pipeline, services: Services,
                 options: ServeOptions, metrics: MetricsSink | None = None) -> None:
        self.options = options
        self.executor = ThreadPoolExecutor(max_workers=options.workers,
                                           thread_name_prefix="rohrpost-deliver")
        self.shared = Shared(config=config, pipeline=pipeline, services=services,
                             destination=options.destination, lmtp=options.lmtp,
                             executor=self.executor, max_rcpts=options.max_rcpts,
                             message_timeout=options.message_timeout,
                             xforward_networks=options.xforward_networks, metrics=metrics)
        self.conversations: set[Conversation] = set()
        self._all_closed = asyncio.Event()
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> tuple[str, int]:
        """Listen; return the address actually bound (the port may have been 0)."""
        opts = self.options
        factory = protocol_factory(lmtp=opts.lmtp, hostname=self.shared.config.hostname,
                                   max_size=opts.max_size, command_timeout=opts.command_timeout,
                                   message_timeout=opts.message_timeout, opener=self._open,
                                   releaser=self._release)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, opts.host, opts.port,
                                                reuse_address=True)
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    def _open(self, ip: str, port: int, close: Callable[[], None]) -> Conversation | None:
        if self.shared.shutting_down or len(self.conversations) >= self.options.max_sessions:
            log.warning("refusing connection from %s: %d sessions open", ip,
                        len(self.conversations))
            return None
        conv = Conversation(self.shared, ip, port, close)
        self.conversations.add(conv)
        self._all_closed.clear()
        if self.shared.metrics is not None:
            self.shared.metrics.connection(1)
        return conv

    def _release(self, conv: Conversation) -> None:
        if conv in self.conversations:
            self.conversations.discard(conv)
            if self.shared.metrics is not None:
                self.shared.metrics.connection(-1)
        if not self.conversations:
            self._all_closed.set()

    async def stop(self) -> None:
        """Stop accepting, let open transactions finish (bounded), close the rest."""
        self.shared.shutting_down = True
        if self._server is not None:
            self._server.close()
        try:
            await asyncio.wait_for(self.shared.idle.wait(), self.options.shutdown_timeout)
        except TimeoutError:
            log.warning("shutdown: %d transactions still open after %gs; closing them",
                        self.shared.busy, self.options.shutdown_timeout)
        for conv in list(self.conversations):
            conv.close_transport()
        if self.conversations:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), _CLOSE_WAIT)
        if self._server is not None:
            await self._server.wait_closed()
        self.executor.shutdown(wait=False, cancel_futures=True)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def serve(config: Config, pipeline: Pipeline, services: Services, *, options: ServeOptions,
                metrics_listen: str, ready: Callable[[str], None]) -> None:
    """Serve until SIGTERM/SIGINT; ``ready`` gets the "listening on" line once bound."""
    metrics: Any = None
    stop_metrics: Any = None
    if metrics_listen:
        # lazy: only with --metrics (PLC0415); the module comes from the milter branch
        from rohrpost.metrics import (  # type: ignore[import-not-found,unused-ignore]
            Metrics,
            serve_metrics,
        )

        mhost, mport = parse_hostport(metrics_listen, "--metrics")
        metrics = Metrics()
        stop_metrics = await _maybe_await(serve_metrics(metrics, mhost, mport))
    server = Server(config, pipeline, services, options, metrics)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        host, port = await server.start()
        shown = f"[{host}]" if ":" in host else host
        ready(f"{READY_PREFIX} {shown}:{port}")
        await stop.wait()
        log.info("shutting down")
        await server.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await pipeline.aclose()
        await services.aclose()
        if callable(stop_metrics):
            await _maybe_await(stop_metrics())
