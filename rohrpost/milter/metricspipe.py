"""Metrics across pre-forked workers: children send events, the parent counts and serves them.

Owns ``PipeSink`` (a worker's ``MetricsSink`` that writes one short line per event into a
pipe shared by all workers; writes below PIPE_BUF are atomic, and the write end is
non-blocking so a slow parent can only cost metrics, never mail) and ``PipeReader`` (the
parent's thread that applies those lines to its ``rohrpost.metrics.Metrics``, and takes back
the open connections of a worker that died).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading

from rohrpost.metrics import Metrics

log = logging.getLogger("rohrpost.milter")
MAX_LINE = 1024


class PipeSink:
    """A worker's metrics sink writing ``pid kind args`` lines into ``fd``."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._pid = os.getpid()

    def _send(self, text: str) -> None:
        line = f"{self._pid}\t{text}"[: MAX_LINE - 1] + "\n"
        with contextlib.suppress(OSError):  # full pipe or parent gone: drop the event
            os.write(self._fd, line.encode("utf-8", "replace"))

    def observe_message(self, action: str) -> None:
        """Forward a finished message."""
        self._send(f"m\t{action}")

    def observe_filter(self, name: str, seconds: float, failed: bool) -> None:
        """Forward a filter run."""
        self._send(f"f\t{name}\t{seconds:.6f}\t{int(failed)}")

    def connection(self, delta: int) -> None:
        """Forward a change of open connections."""
        self._send(f"c\t{delta}")


class PipeReader:
    """The parent's side: read events from ``fd`` into ``metrics`` in a daemon thread."""

    def __init__(self, fd: int, metrics: Metrics) -> None:
        self._fd = fd
        self.metrics = metrics
        self._open: dict[int, int] = {}
        self._dead: set[int] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="rohrpost-metrics-pipe",
                                        daemon=True)

    def start(self) -> PipeReader:
        """Start reading."""
        self._thread.start()
        return self

    def _run(self) -> None:
        buf = b""
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self.apply(line.decode("utf-8", "replace"))

    def apply(self, line: str) -> None:
        """Apply one event line."""
        parts = line.split("\t")
        try:
            pid, kind = int(parts[0]), parts[1]
            if kind == "m":
                self.metrics.observe_message(parts[2])
            elif kind == "f":
                self.metrics.observe_filter(parts[2], float(parts[3]), parts[4] == "1")
            elif kind == "c":
                delta = int(parts[2])
                with self._lock:
                    if pid in self._dead:  # late line of a worker already accounted for
                        return
                    self._open[pid] = self._open.get(pid, 0) + delta
                self.metrics.connection(delta)
        except (IndexError, ValueError):
            log.debug("bad metrics line %r", line)

    def worker_gone(self, pid: int) -> None:
        """Close the connections of a worker that died."""
        with self._lock:
            count = self._open.pop(pid, 0)
            self._dead.add(pid)
        if count:
            self.metrics.connection(-count)
