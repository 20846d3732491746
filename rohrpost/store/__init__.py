"""State store for filters: the ``Store`` protocol, ``StoreError`` and ``open_store``.

Owns the choice of backend from the ``[state]`` table of the configuration. Greylisting
(triplets with a ttl), rate limits (sliding windows), DMARC report aggregation (counters and
record lists), fetch (seen UIDs), duplicate suppression and the quarantine index all program
against ``Store``; see ``rohrpost.store.base`` for the exact semantics. Backends are imported
lazily so that pipe mode does not pay for redis-py unless it is configured.

Backends: ``sqlite`` (the embedded default, one WAL file shared by threads and processes),
``redis`` (several filter hosts sharing state), and ``memory`` (``rohrpost.store.memory``'s
``MemoryStore``: one process only, lost on exit, shared with no other worker or host; for tests
and dry runs).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping

from rohrpost.store.base import Store, StoreError

__all__ = ["Store", "StoreError", "open_store"]

_KNOWN_KEYS = frozenset({"backend", "path", "url", "prefix", "timeout", "synchronous"})
_DEFAULTS: Mapping[str, object] = {
    "backend": "sqlite",
    "path": "state.sqlite3",
    "url": "redis://127.0.0.1:6379/0",
    "prefix": "rohrpost:",
    "timeout": 2.0,
    "synchronous": "full",
}


def _text(config: Mapping[str, object], name: str) -> str:
    value = config.get(name, _DEFAULTS[name])
    if not isinstance(value, str):
        # ValueError, not TypeError: every bad [state] table is one config error for the CLI
        raise ValueError(f"[state] {name} must be a string, got {type(value).__name__}")  # noqa: TRY004
    return value


def _timeout(config: Mapping[str, object]) -> float:
    value = config.get("timeout", _DEFAULTS["timeout"])
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"[state] timeout must be a number of seconds, got {value!r}")  # noqa: TRY004
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"[state] timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def open_store(
    config: Mapping[str, object], *, base_dir: str, clock: Callable[[], float] = time.time
) -> Store:
    """Open the store described by the ``[state]`` table ``config``.

    Keys: ``backend`` (``"sqlite"``, the default, ``"redis"`` or ``"memory"``), ``path``
    (SQLite file, relative to ``base_dir``; default ``state.sqlite3``), ``url`` (Redis URL, default
    ``redis://127.0.0.1:6379/0``), ``prefix`` (prepended to every key, default ``rohrpost:``),
    ``timeout`` (seconds, default 2.0: Redis connect/read deadline, SQLite lock wait) and
    ``synchronous`` (SQLite ``"full"``, durable commits, the default, or ``"normal"``).

    :param base_dir: directory for relative SQLite paths.
    :param clock: time source for SQLite expiry; Redis uses its server's clock.
    :raises ValueError: for an unknown key, a wrong type or an unknown backend.
    :raises StoreError: if the SQLite file cannot be created or opened. Redis connects on
        first use, so an unreachable server shows up as ``StoreError`` from the first call.
    """
    unknown = sorted(set(config) - _KNOWN_KEYS)
    if unknown:
        raise ValueError(
            f"[state] has unknown key(s) {', '.join(unknown)};"
            f" known: {', '.join(sorted(_KNOWN_KEYS))}"
        )
    backend, prefix, timeout = _text(config, "backend"), _text(config, "prefix"), _timeout(config)
    if backend == "sqlite":
        from rohrpost.store.sqlite import SqliteStore

        synchronous = _text(config, "synchronous").upper()
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"[state] synchronous must be 'full' or 'normal', not {synchronous!r}")
        path = os.path.join(base_dir, os.path.expanduser(_text(config, "path")))
        return SqliteStore(
            path, clock=clock, prefix=prefix, timeout=timeout, synchronous=synchronous
        )
    if backend == "redis":
        url = _text(config, "url")
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"[state] url must be redis://, rediss:// or unix://, got {url!r}")
        from rohrpost.store.redis_store import RedisStore

        try:
            return RedisStore(url, prefix=prefix, timeout=timeout)
        except ValueError as exc:
            raise ValueError(f"[state] url {url!r} is invalid: {exc}") from exc
    if backend == "memory":  # accepted by [state] (config.StateSection): must open, not fail later
        from rohrpost.store.memory import MemoryStore

        return MemoryStore(clock=clock, prefix=prefix)
    raise ValueError(f"[state] backend must be 'sqlite', 'redis' or 'memory', got {backend!r}")
