"""The store contract shared by every backend: ``Store``, ``StoreError`` and argument checks.

Owns the protocol the filters program against and the small pure helpers that keep the three
backends (memory, SQLite, Redis) in step: argument validation and the counter encoding. It must
not import a backend or any third-party library, so that importing the contract stays cheap in
pipe mode.

Semantics every backend implements (the shared test suite checks them against all three):

* A key holds one kind of entry: a value (``set``/``add``; ``incr`` stores a counter as a
  decimal ASCII value, so ``get`` on a counter returns e.g. ``b"3"``), a list or a sliding
  window. ``set`` replaces an entry of any kind; ``delete`` removes any kind. Using a key with
  an operation of another kind (``incr`` on a list, ``get`` on a window, ``incr`` on a value
  that is not an integer) raises ``StoreError``, as Redis does with ``WRONGTYPE``.
* Expired entries are invisible. ``ttl`` is in seconds and must be positive; ``incr`` and
  ``list_append`` apply it only when they create the key, ``set`` and ``add`` always.
* A window event recorded at ``now`` counts while ``now - window < t`` holds for the time
  ``t`` a count is asked for; ``window_add`` drops older events and keeps the window's key alive
  for ``window`` seconds after the last event.
* Failures of the backend (unreachable, timed out, locked, corrupt) raise ``StoreError``; they
  never look like an absent entry.
"""

from __future__ import annotations

import math
import re
from typing import Protocol, runtime_checkable

__all__ = ["COUNTER_MAX", "COUNTER_MIN", "Store", "StoreError"]

COUNTER_MIN = -(2**63)
COUNTER_MAX = 2**63 - 1
_COUNTER_RE = re.compile(rb"-?(?:0|[1-9][0-9]*)")


class StoreError(Exception):
    """The state backend is unreachable, too slow, broken, or was used with a wrong kind.

    Callers map this to their failure policy (usually tempfail): a failed lookup must never be
    taken for "no entry", or greylisting and duplicate suppression would pass what they should
    hold.
    """


@runtime_checkable
class Store(Protocol):
    """Key-value state shared by filters; see the module docstring for the exact semantics."""

    async def get(self, key: str) -> bytes | None:
        """Return the value stored at ``key``, or None when there is none (or it expired)."""
        ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing any entry, expiring after ``ttl`` seconds."""
        ...

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store ``value`` only if ``key`` is absent, atomically; return True if it was stored."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` of any kind; absent keys are fine."""
        ...

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter at ``key`` atomically and return the new value.

        A missing key starts at 0 and gets ``ttl``; an existing key keeps its expiry.
        """
        ...

    async def window_add(self, key: str, now: float, window: float, weight: int = 1) -> int:
        """Record an event of ``weight`` at ``now``; return the weight sum inside the window.

        Events at or before ``now - window`` are dropped. Atomic.
        """
        ...

    async def window_count(self, key: str, now: float, window: float) -> int:
        """Return the weight sum of events after ``now - window`` without recording one."""
        ...

    async def list_append(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Append ``value`` to the list at ``key``; ``ttl`` applies when the list is created."""
        ...

    async def list_get(self, key: str) -> list[bytes]:
        """Return the whole list at ``key`` in append order (empty if absent)."""
        ...

    async def keys(self, prefix: str) -> list[str]:
        """Return the live keys starting with ``prefix``, sorted, without the store prefix."""
        ...

    async def close(self) -> None:
        """Release connections and files; later calls raise ``StoreError``."""
        ...


def check_ttl(ttl: float | None) -> float | None:
    """Return ``ttl`` if it is None or a positive finite number, else raise ValueError.

    A zero or negative ttl is a caller bug (Redis rejects it too); refusing it early keeps the
    backends from disagreeing about what it would mean.
    """
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds, not {type(ttl).__name__}")
    if not math.isfinite(ttl) or ttl <= 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


def check_window(now: float, window: float, weight: int = 1) -> None:
    """Validate sliding-window arguments: finite ``now``, positive ``window``, ``weight`` >= 1."""
    if not math.isfinite(now):
        raise ValueError(f"now must be a finite time, got {now!r}")
    if not math.isfinite(window) or window <= 0:
        raise ValueError(f"window must be a positive number of seconds, got {window!r}")
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ValueError(f"weight must be an integer >= 1, got {weight!r}")


def check_amount(amount: int) -> None:
    """Validate an ``incr`` amount: a plain int within the 64-bit counter range."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError(f"amount must be an int, not {type(amount).__name__}")
    if not COUNTER_MIN <= amount <= COUNTER_MAX:
        raise ValueError(f"amount {amount} is outside the 64-bit counter range")


def check_value(value: bytes) -> bytes:
    """Return ``value`` as bytes, refusing str so that encodings are the caller's decision."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"value must be bytes, not {type(value).__name__}")
    return bytes(value)


def add_to_counter(current: bytes | None, amount: int) -> int:
    """Return ``current + amount`` for a counter stored as decimal ASCII, as Redis INCRBY does.

    :raises StoreError: if ``current`` is not a canonical 64-bit integer or the sum overflows.
    """
    if current is None:
        base = 0
    elif _COUNTER_RE.fullmatch(current) and current != b"-0":
        base = int(current)
        if not COUNTER_MIN <= base <= COUNTER_MAX:
            raise StoreError("value is not an integer or out of range")
    else:
        raise StoreError("value is not an integer or out of range")
    total = base + amount
    if not COUNTER_MIN <= total <= COUNTER_MAX:
        raise StoreError("increment or decrement would overflow")
    return total


def window_cutoff(now: float, window: float) -> float:
    """Return the time at or before which window events no longer count."""
    return now - window
