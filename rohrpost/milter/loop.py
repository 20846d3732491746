"""One asyncio event loop in a background thread, shared by all connections of a process.

Owns ``LoopThread``. libmilter calls each connection's callbacks in that connection's own
thread; each callback hands its stage to this loop with ``run`` and waits (with a deadline),
so DNS, spamd and clamd waits of many connections overlap on one loop instead of blocking one
thread each.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("rohrpost.milter")


class StageTimeoutError(TimeoutError):
    """A stage did not finish within its deadline (it has been cancelled)."""


class LoopThread:
    """An event loop running forever in a daemon thread until ``stop``."""

    def __init__(self, name: str = "rohrpost-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()

    def start(self) -> LoopThread:
        """Start the thread; return when the loop runs."""
        self._thread.start()
        self._ready.wait(10)
        return self

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for its result.

        :raises StageTimeoutError: when the deadline passes (the coroutine is cancelled).
        """
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise StageTimeoutError(f"stage did not finish within {timeout:g} s") from None

    def stop(self, final: Coroutine[Any, Any, object] | None = None) -> None:
        """Run ``final`` (cleanup) if given, then stop the loop and join the thread."""
        if not self._thread.is_alive():
            return
        if final is not None:
            try:
                self.run(final, 10)
            except Exception:  # shutting down anyway; a leak is all that is lost
                log.debug("cleanup at loop stop failed", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
