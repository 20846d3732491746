"""In-process store: ``MemoryStore``, for unit tests of other modules and ``rohrpost check``.

Owns a dictionary of entries with the same semantics as the SQLite and Redis backends (the
shared suite runs against all three). Expiry uses the injected ``clock`` so tests can fake time.
It shares nothing between processes and keeps nothing across restarts; it must not be used
where state has to survive (fetch's seen UIDs) or be shared between filter hosts.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rohrpost.store.base import (
    StoreError,
    add_to_counter,
    check_amount,
    check_ttl,
    check_value,
    check_window,
    window_cutoff,
)

__all__ = ["MemoryStore"]


class _Kind(enum.Enum):
    VALUE = "value"
    LIST = "list"
    WINDOW = "window"


@dataclass
class _Entry:
    """One key's entry; only the field of its kind is used."""

    kind: _Kind
    expires: float | None
    value: bytes = b""
    items: list[bytes] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)


class MemoryStore:
    """A ``Store`` kept in a dict; atomic because no operation awaits while it holds state.

    A lock still guards the dict so that the store is also safe if a test drives it from
    several threads.

    :param clock: time source for expiry (``time.time`` by default; tests pass a fake).
    :param prefix: prepended to every key, as the other backends do.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, prefix: str = "") -> None:
        self._clock = clock
        self._prefix = prefix
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._closed = False

    def _live(self, key: str) -> _Entry | None:
        """Return the unexpired entry at ``key`` (full key), dropping it if it expired."""
        if self._closed:
            raise StoreError("store is closed")
        entry = self._entries.get(key)
        if entry is not None and entry.expires is not None and entry.expires <= self._clock():
            del self._entries[key]
            return None
        return entry

    def _of_kind(self, key: str, kind: _Kind) -> _Entry | None:
        entry = self._live(key)
        if entry is not None and entry.kind is not kind:
            raise StoreError(f"key {key!r} holds a {entry.kind.value}, not a {kind.value}")
        return entry

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    async def get(self, key: str) -> bytes | None:
        """Return the value at ``key`` or None."""
        with self._lock:
            entry = self._of_kind(self._prefix + key, _Kind.VALUE)
            return None if entry is None else entry.value

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing any entry."""
        data, ttl = check_value(value), check_ttl(ttl)
        with self._lock:
            self._live(self._prefix + key)
            self._entries[self._prefix + key] = _Entry(_Kind.VALUE, self._expiry(ttl), data)

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store ``value`` if ``key`` is absent; return True if stored."""
        data, ttl = check_value(value), check_ttl(ttl)
        with self._lock:
            if self._live(self._prefix + key) is not None:
                return False
            self._entries[self._prefix + key] = _Entry(_Kind.VALUE, self._expiry(ttl), data)
            return True

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        with self._lock:
            self._live(self._prefix + key)
            self._entries.pop(self._prefix + key, None)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter at ``key``; ``ttl`` applies on creation."""
        check_amount(amount)
        ttl = check_ttl(ttl)
        with self._lock:
            entry = self._of_kind(self._prefix + key, _Kind.VALUE)
            total = add_to_counter(None if entry is None else entry.value, amount)
            if entry is None:
                entry = _Entry(_Kind.VALUE, self._expiry(ttl))
                self._entries[self._prefix + key] = entry
            entry.value = str(total).encode("ascii")
            return total

    async def window_add(self, key: str, now: float, window: float, weight: int = 1) -> int:
        """Record an event at ``now`` and return the weight sum inside the window."""
        check_window(now, window, weight)
        with self._lock:
            entry = self._of_kind(self._prefix + key, _Kind.WINDOW)
            if entry is None:
                entry = _Entry(_Kind.WINDOW, None)
                self._entries[self._prefix + key] = entry
            cutoff = window_cutoff(now, window)
            entry.events = [ev for ev in entry.events if ev[0] > cutoff]
            entry.events.append((now, weight))
            entry.expires = self._clock() + window
            return sum(w for _, w in entry.events)

    async def window_count(self, key: str, now: float, window: float) -> int:
        """Return the weight sum of events inside the window ending at ``now``."""
        check_window(now, window)
        with self._lock:
            entry = self._of_kind(self._prefix + key, _Kind.WINDOW)
            if entry is None:
                return 0
            cutoff = window_cutoff(now, window)
            return sum(w for t, w in entry.events if t > cutoff)

    async def list_append(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Append ``value`` to the list at ``key``; ``ttl`` applies on creation."""
        data, ttl = check_value(value), check_ttl(ttl)
        with self._lock:
            entry = self._of_kind(self._prefix + key, _Kind.LIST)
            if entry is None:
                entry = _Entry(_Kind.LIST, self._expiry(ttl))
                self._entries[self._prefix + key] = entry
            entry.items.append(data)

    async def list_get(self, key: str) -> list[bytes]:
        """Return the list at ``key`` (empty if absent)."""
        with self._lock:
            entry = self._of_kind(self._prefix + key, _Kind.LIST)
            return [] if entry is None else list(entry.items)

    async def keys(self, prefix: str) -> list[str]:
        """Return the live keys starting with ``prefix``, without the store prefix."""
        with self._lock:
            full = self._prefix + prefix
            names = [k for k in self._entries if k.startswith(full)]
            cut = len(self._prefix)
            return sorted(k[cut:] for k in names if self._live(k) is not None)

    async def close(self) -> None:
        """Drop all entries; later calls raise ``StoreError``."""
        with self._lock:
            self._entries.clear()
            self._closed = True
