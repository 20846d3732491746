"""The milter daemon: one listening socket, pre-forked workers, a supervising parent.

Owns ``SocketSpec`` (parsing ``inet:PORT@HOST``/``inet6:...``/``unix:PATH``), ``serve`` and
the workers' mains for both engines (``[milter] engine``). How the processes share the work:

* The parent opens the listening socket before forking, so all workers accept on the one
  socket Postfix knows (one ``smtpd_milters`` entry); the kernel hands each new connection to
  one of them. With the ``asyncio`` engine (the default) it is a plain socket; with
  ``libmilter`` the parent registers the callbacks and opens it with ``smfi_opensocket``, and
  ``smfi_main`` in each child reuses that descriptor.
* An ``asyncio`` worker runs one event loop that speaks the milter protocol itself
  (``rohrpost.milter.aioengine``) and runs every stage on it. A ``libmilter`` worker runs
  libmilter's main loop (one thread per connection) and one asyncio loop in a background
  thread to which each stage is handed. Either way slow DNS or scanners overlap.
* The parent only supervises: it restarts a worker that died, forwards SIGTERM/SIGINT/SIGHUP,
  kills workers that do not stop within ``STOP_GRACE`` seconds, and removes a Unix socket when
  it is done. It owns the metrics endpoint, fed by the workers through a pipe.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import re
import signal
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rohrpost.config import Config, ConfigError

if TYPE_CHECKING:  # the supervising parent imports the pipeline and the engines only if needed
    from rohrpost.milter.connection import MetricsSink, MilterApp
    from rohrpost.milter.metricspipe import PipeReader
    from rohrpost.pipeline import Pipeline

log = logging.getLogger("rohrpost.milter")

STOP_GRACE = 15.0
RESTART_PAUSE = 1.0
#: How long libmilter waits on a silent MTA connection (its own default): longer than an
#: SMTP client may idle between commands, so a slow client never loses the milter.
IDLE_TIMEOUT = 7210
ENGINES = ("asyncio", "libmilter")
_SOCKET_RE = re.compile(r"^(inet|inet6):(\d{1,5})(?:@(.+))?$")
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SocketError(ValueError):
    """A --socket value that libmilter cannot use."""


@dataclass(frozen=True)
class SocketSpec:
    """A parsed milter socket: ``inet:PORT@HOST``, ``inet6:PORT@HOST`` or ``unix:PATH``."""

    family: str
    port: int = 0
    host: str = ""
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> SocketSpec:
        """Parse and check ``text``; ``local:PATH`` and a bare ``/path`` mean ``unix:PATH``."""
        text = text.strip()
        if text.startswith("/"):
            text = "unix:" + text
        if text.startswith(("unix:", "local:")):
            path = text.split(":", 1)[1]
            if not os.path.isabs(path):
                raise SocketError(f"unix socket path must be absolute: {path!r}")
            return cls("unix", path=path)
        m = _SOCKET_RE.match(text)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise SocketError(f"bad milter socket {text!r}: use inet:PORT@HOST or unix:PATH")
        return cls(m.group(1), int(m.group(2)), m.group(3) or "")

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        return f"{self.family}:{self.port}" + (f"@{self.host}" if self.host else "")


def _check_unix_path(path: str) -> None:
    if os.path.lexists(path) and not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise SocketError(f"{path} exists and is not a socket; not removing it")


def open_libmilter_listener(spec: SocketSpec) -> None:
    """Open libmilter's listening socket in this (parent) process; Unix sockets get 0660.

    :raises SocketError: when libmilter cannot listen there.
    """
    from rohrpost.milter import adapter

    try:
        if spec.family != "unix":
            adapter.open_socket(str(spec), IDLE_TIMEOUT)
            return
        _check_unix_path(spec.path)
        old = os.umask(0o117)  # never world-writable, not even for a moment
        try:
            adapter.open_socket(str(spec), IDLE_TIMEOUT)  # removes a stale socket first
        finally:
            os.umask(old)
        os.chmod(spec.path, 0o660)
    except adapter.MilterError as exc:
        raise SocketError(f"cannot listen on {spec}: {exc}") from None


def open_listener(spec: SocketSpec, backlog: int = 128) -> socket.socket:
    """Open a listening socket for the asyncio engine; a Unix socket gets mode 0660.

    ``inet:PORT`` without a host listens on every IPv4 address, as libmilter does.

    :raises SocketError: when nothing can listen there.
    """
    try:
        if spec.family == "unix":
            _check_unix_path(spec.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spec.path)  # a stale socket of an earlier run
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o117)  # never world-writable, not even for a moment
            try:
                sock.bind(spec.path)
            finally:
                os.umask(old)
            os.chmod(spec.path, 0o660)
        else:
            family = socket.AF_INET6 if spec.family == "inet6" else socket.AF_INET
            host = spec.host or ("::" if family == socket.AF_INET6 else "0.0.0.0")  # noqa: S104
            info = socket.getaddrinfo(host, spec.port, family, socket.SOCK_STREAM)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(info[0][4])
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        raise SocketError(f"cannot listen on {spec}: {exc}") from None
    return sock


def aio_worker_main(config: Config, sock: socket.socket, sink: MetricsSink,
                    pipeline: Pipeline | None = None) -> int:
    """Run an asyncio-engine worker until SIGTERM: its services and loop, on ``sock``.

    ``pipeline`` is the one the parent built before forking (filters' keys, lists and the
    public suffix list already loaded, shared copy-on-write); ``None`` builds it here.
    """
    import asyncio

    from rohrpost.milter.aioengine import serve_forever
    from rohrpost.milter.connection import MilterApp
    from rohrpost.pipeline import Pipeline
    from rohrpost.services import make_services

    # a SIGTERM before the loop handles signals must still stop this worker cleanly
    early: list[int] = []
    for sig in _SIGNALS:
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    built = pipeline if pipeline is not None else Pipeline.build(config)

    async def main() -> None:
        services = make_services(config)
        app = MilterApp(built, services, None, config.milter.timeout, sink)
        try:
            await serve_forever(app, sock, idle_timeout=float(IDLE_TIMEOUT),
                                ready=lambda: log.info("milter worker %d ready", os.getpid()),
                                stop_requested=lambda: bool(early))
        finally:
            await built.aclose()
            await services.aclose()

    asyncio.run(main())
    log.info("milter worker %d stopped", os.getpid())
    return 0


def worker_main(config: Config, timeout: float, sink: MetricsSink,
                holder: list[MilterApp], pipeline: Pipeline | None = None) -> int:
    """Run a libmilter-engine worker: its own loop and services, then libmilter's main loop.

    ``pipeline`` is the one the parent built before forking (filters' keys, lists and the
    public suffix list already loaded, shared copy-on-write); ``None`` builds it here.
    """
    from rohrpost.milter import adapter
    from rohrpost.milter.connection import MilterApp
    from rohrpost.milter.loop import LoopThread
    from rohrpost.pipeline import Pipeline
    from rohrpost.services import make_services

    # libmilter's signal thread sigwait()s for these; every other thread must block them,
    # including the loop thread started below, or a SIGTERM could be swallowed.
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    for sig in _SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    loop = LoopThread().start()
    if pipeline is None:
        pipeline = Pipeline.build(config)
    services = make_services(config)
    holder.append(MilterApp(pipeline, services, loop, timeout, sink))
    log.info("milter worker %d ready", os.getpid())
    try:
        adapter.run_main()
    finally:

        async def close() -> None:
            await pipeline.aclose()
            await services.aclose()

        loop.stop(close())
    log.info("milter worker %d stopped", os.getpid())
    return 0


def serve(config: Config, socket_spec: str, workers: int, metrics_addr: str = "", *,
          name: str = "rohrpost", engine: str | None = None) -> int:
    """Run the milter until SIGTERM; ``workers`` = 0 runs it in this process without forking.

    ``engine`` is ``"asyncio"`` or ``"libmilter"`` (default: ``[milter] engine``).
    """
    spec = SocketSpec.parse(socket_spec)
    engine = engine or config.milter.engine
    if engine not in ENGINES:
        raise SocketError(f"unknown milter engine {engine!r}: use asyncio or libmilter")
    # Fail early on a bad configuration, before listening. Several workers share the
    # pipeline the parent builds (copy-on-write); a single worker builds its own and the
    # parent only checks it in a short-lived child, so the supervisor stays a small process
    # instead of a second copy of the filters' keys, lists and libraries.
    pipeline: Pipeline | None = None
    if workers == 1:
        check_in_child(config)
    else:
        from rohrpost.pipeline import Pipeline

        pipeline = Pipeline.build(config)
    run_worker = _libmilter_worker(config, spec, name, pipeline) if engine == "libmilter" \
        else _asyncio_worker(config, spec, pipeline)
    log.info("milter listening on %s with %d worker(s), %s engine", spec, workers, engine)
    stop_metrics: Callable[[], None] | None = None
    try:
        if workers <= 0:
            from rohrpost.milter.connection import NoMetrics

            sink: MetricsSink = NoMetrics()
            if metrics_addr:
                from rohrpost.metrics import Metrics, serve_metrics

                registry = Metrics()
                sink = registry
                stop_metrics = serve_metrics(registry, *_host_port(metrics_addr))
            return run_worker(sink)
        return _supervise(workers, metrics_addr, run_worker)
    finally:
        if stop_metrics is not None:
            stop_metrics()
        if spec.family == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spec.path)


def check_in_child(config: Config) -> None:
    """Build the pipeline in a forked child, raise its ``ConfigError`` here, keep nothing.

    :raises ConfigError: what ``Pipeline.build`` raised in the child.
    :raises RuntimeError: when the child failed otherwise.
    """
    import json

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build, report, exit without running any cleanup of the parent
        code, report = 0, b""
        try:
            os.close(read_fd)
            from rohrpost.pipeline import Pipeline

            Pipeline.build(config)
        except ConfigError as exc:
            code, report = 78, json.dumps([exc.file, exc.line, exc.key, exc.message,
                                           exc.suggestion]).encode()
        except BaseException as exc:  # noqa: BLE001  # reported to the parent, which raises it
            code, report = 70, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")
        finally:
            with contextlib.suppress(OSError):
                os.write(write_fd, report[:60000])
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        report = pipe.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 78:
        raise ConfigError(*json.loads(report))
    if code != 0:
        text = report.decode("utf-8", "replace") or f"status {code}"
        raise RuntimeError(f"the pipeline could not be built: {text}")


def _libmilter_worker(config: Config, spec: SocketSpec, name: str,
                      pipeline: Pipeline | None) -> Callable[[MetricsSink], int]:
    from rohrpost.milter import adapter
    from rohrpost.milter.connection import MilterConnection

    holder: list[MilterApp] = []
    adapter.register(name, lambda actions: MilterConnection(actions, holder[-1]))
    open_libmilter_listener(spec)
    return lambda sink: worker_main(config, config.milter.timeout, sink, holder, pipeline)


def _asyncio_worker(config: Config, spec: SocketSpec,
                    pipeline: Pipeline | None) -> Callable[[MetricsSink], int]:
    sock = open_listener(spec)
    return lambda sink: aio_worker_main(config, sock, sink, pipeline)


def _host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not port.isdigit():
        raise SocketError(f"bad metrics address {addr!r}: use HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _supervise(workers: int, metrics_addr: str,
               run_worker: Callable[[MetricsSink], int]) -> int:
    read_fd = write_fd = -1
    if metrics_addr:
        read_fd, write_fd = os.pipe()
    # Everything loaded so far (modules, the pipeline) moves to the collector's permanent
    # generation: the workers' collections never write to those objects, so their pages
    # stay shared with the parent instead of being copied into every worker.
    gc.freeze()

    def spawn(slot: int) -> int:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                if read_fd >= 0:
                    os.close(read_fd)
                from rohrpost.milter.connection import NoMetrics
                from rohrpost.milter.metricspipe import PipeSink

                sink = PipeSink(write_fd) if write_fd >= 0 else NoMetrics()
                code = run_worker(sink)
            except BaseException:
                log.exception("milter worker %d (slot %d) crashed", os.getpid(), slot)
            finally:
                logging.shutdown()
                os._exit(code)
        log.info("started milter worker %d (slot %d)", pid, slot)
        return pid

    children: dict[int, tuple[int, float]] = {}
    stopping: list[float] = []
    parent = os.getpid()

    def on_signal(signum: int, frame: object) -> None:
        del frame
        if os.getpid() != parent:  # a worker signalled before it set up its own handling
            os._exit(0)
        if not stopping:
            log.info("signal %d: stopping %d worker(s)", signum, len(children))
            stopping.append(time.monotonic())
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    # handlers first: a SIGTERM at any moment after the workers exist must reach them
    for sig in _SIGNALS:
        signal.signal(sig, on_signal)
    for slot in range(workers):
        if not stopping:
            children[spawn(slot)] = (slot, time.monotonic())
    reader: PipeReader | None = None
    stop_metrics: Callable[[], None] | None = None
    if metrics_addr:
        from rohrpost.metrics import Metrics, serve_metrics

        # the parent keeps write_fd open: workers forked later (restarts) inherit it
        from rohrpost.milter.metricspipe import PipeReader

        reader = PipeReader(read_fd, Metrics()).start()
        stop_metrics = serve_metrics(reader.metrics, *_host_port(metrics_addr))
    try:
        _reap(children, stopping, spawn, reader)
    finally:
        if stop_metrics is not None:
            stop_metrics()
    return 0


def _reap(children: dict[int, tuple[int, float]], stopping: list[float],
          spawn: Callable[[int], int], reader: PipeReader | None) -> None:
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if stopping and time.monotonic() - stopping[0] > STOP_GRACE:
                for left in children:
                    log.warning("milter worker %d did not stop: killing it", left)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(left, signal.SIGKILL)
                stopping[0] = time.monotonic()
            time.sleep(0.1)
            continue
        if pid not in children:
            continue
        slot, started = children.pop(pid)
        if reader is not None:
            reader.worker_gone(pid)
        if stopping:
            continue
        log.error("milter worker %d (slot %d) exited (%s); restarting", pid, slot,
                  _describe(status))
        if time.monotonic() - started < RESTART_PAUSE:
            time.sleep(RESTART_PAUSE)  # a worker that dies at once must not fork-loop
        if not stopping:
            children[spawn(slot)] = (slot, time.monotonic())


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"status {os.waitstatus_to_exitcode(status)}"
