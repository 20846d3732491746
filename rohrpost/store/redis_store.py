"""Shared store: ``RedisStore``, for several filter hosts sharing state (Rspamd's model).

Owns the ``redis.asyncio`` client, the Lua scripts that make ``incr``, ``window_add`` and
``list_append`` atomic, and the mapping of every Redis failure onto ``StoreError``. It is the
only module of rohrpost that imports redis, and it is imported only when the Redis backend is
configured.

Every round trip runs under a deadline of ``timeout`` seconds on top of the socket timeouts,
because redis-py retries failed connections on its own (ten times by default): a dead or
silent server becomes ``StoreError`` within the timeout, never a hang and never "absent".
Expiry uses Redis's native TTLs and therefore the Redis server's clock; the injected clock of
the other backends has no effect here. Sliding windows are sorted sets scored by event time
whose members are unique (a random id) and carry the event's weight after the last colon.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from rohrpost.store.base import (
    StoreError,
    check_amount,
    check_ttl,
    check_value,
    check_window,
    window_cutoff,
)

__all__ = ["RedisStore"]

# KEYS[1] counter; ARGV: amount, ttl in ms (0: none). The ttl applies only on creation.
_INCR = """
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""

# KEYS[1] list; ARGV: value, ttl in ms (0: none). RPUSH returning 1 means the list is new.
_LIST_APPEND = """
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
if length == 1 and tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return length
"""

# KEYS[1] window; ARGV: now, cutoff, member, key ttl in ms. Returns the weight sum.
_WINDOW_ADD = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local total = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')) do
  total = total + tonumber(string.match(member, ':(%d+)$'))
end
return total
"""


def _millis(seconds: float) -> int:
    """Return ``seconds`` as whole milliseconds, at least 1 (Redis refuses a zero expiry)."""
    return max(1, math.ceil(seconds * 1000))


def _glob_escape(text: str) -> str:
    """Escape Redis glob specials so that a prefix matches only itself in SCAN MATCH."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _weight_of(member: bytes) -> int:
    return int(member.rsplit(b":", 1)[1])


class RedisStore:
    """A ``Store`` in Redis; two instances on the same server and prefix share all entries.

    :param url: ``redis://``, ``rediss://`` or ``unix://`` URL.
    :param prefix: prepended to every key.
    :param timeout: seconds for connecting, for each reply, and as the deadline of each call.
    :raises ValueError: if the URL cannot be parsed.
    """

    def __init__(self, url: str, *, prefix: str = "", timeout: float = 2.0) -> None:
        self._prefix = prefix
        self._timeout = timeout
        self._closed = False
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
            decode_responses=False,
        )
        self._incr = self._client.register_script(_INCR)
        self._list_append = self._client.register_script(_LIST_APPEND)
        self._window_add = self._client.register_script(_WINDOW_ADD)

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        """Await one Redis round trip under the deadline, mapping every failure to StoreError."""
        if self._closed:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise StoreError("store is closed")
        try:
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except TimeoutError as exc:
            raise StoreError(f"redis did not answer within {self._timeout} s") from exc
        except (RedisError, OSError) as exc:
            raise StoreError(f"redis error: {exc}") from exc

    async def get(self, key: str) -> bytes | None:
        """Return the value at ``key`` or None."""
        value = await self._call(self._client.get(self._prefix + key))
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing any entry."""
        data, ttl = check_value(value), check_ttl(ttl)
        px = None if ttl is None else _millis(ttl)
        await self._call(self._client.set(self._prefix + key, data, px=px))

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store ``value`` if ``key`` is absent (SET NX); return True if stored."""
        data, ttl = check_value(value), check_ttl(ttl)
        px = None if ttl is None else _millis(ttl)
        return bool(await self._call(self._client.set(self._prefix + key, data, px=px, nx=True)))

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        await self._call(self._client.delete(self._prefix + key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter at ``key``; ``ttl`` applies on creation."""
        check_amount(amount)
        ttl = check_ttl(ttl)
        px = 0 if ttl is None else _millis(ttl)
        return int(await self._call(self._incr(keys=[self._prefix + key], args=[amount, px])))

    async def window_add(self, key: str, now: float, window: float, weight: int = 1) -> int:
        """Record an event at ``now`` and return the weight sum inside the window."""
        check_window(now, window, weight)
        member = f"{uuid.uuid4().hex}:{weight}"
        cutoff = repr(window_cutoff(now, window))
        args: list[str | int] = [repr(float(now)), cutoff, member, _millis(window)]
        return int(await self._call(self._window_add(keys=[self._prefix + key], args=args)))

    async def window_count(self, key: str, now: float, window: float) -> int:
        """Return the weight sum of events inside the window ending at ``now``."""
        check_window(now, window)
        low = "(" + repr(window_cutoff(now, window))
        members = await self._call(self._client.zrangebyscore(self._prefix + key, low, "+inf"))
        return sum(_weight_of(bytes(m)) for m in members)

    async def list_append(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Append ``value`` to the list at ``key``; ``ttl`` applies on creation."""
        data, ttl = check_value(value), check_ttl(ttl)
        px = 0 if ttl is None else _millis(ttl)
        await self._call(self._list_append(keys=[self._prefix + key], args=[data, px]))

    async def list_get(self, key: str) -> list[bytes]:
        """Return the list at ``key`` (empty if absent)."""
        items = await self._call(self._client.lrange(self._prefix + key, 0, -1))
        return [bytes(item) for item in items]

    async def keys(self, prefix: str) -> list[str]:
        """Return the live keys starting with ``prefix`` via SCAN (never KEYS)."""
        match = _glob_escape(self._prefix + prefix) + "*"
        cut = len(self._prefix)
        found: set[str] = set()
        cursor = 0
        while True:  # each SCAN step gets its own deadline; SCAN may repeat keys
            cursor, batch = await self._call(self._client.scan(cursor, match=match, count=500))
            found.update(bytes(name).decode("utf-8")[cut:] for name in batch)
            if cursor == 0:
                return sorted(found)

    async def close(self) -> None:
        """Close the client and its pool; later calls raise ``StoreError``."""
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(self._timeout):
                await self._client.aclose()
        except (TimeoutError, RedisError, OSError) as exc:
            raise StoreError(f"redis close failed: {exc}") from exc
