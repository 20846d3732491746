"""Redis specifics: failures become StoreError quickly, native TTLs, prefixes, sharing."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from rohrpost.store import StoreError, open_store
from tests.store.conftest import RedisServer, free_port, start_redis


def _config(url: str, timeout: float = 2.0) -> dict[str, object]:
    return {"backend": "redis", "url": url, "prefix": f"t{uuid.uuid4().hex}:", "timeout": timeout}


async def _assert_every_call_fails_fast(config: dict[str, object], limit: float) -> None:
    store = open_store(config, base_dir="/nonexistent")
    calls = (
        lambda: store.get("k"),
        lambda: store.set("k", b"v"),
        lambda: store.add("k", b"v"),
        lambda: store.incr("k", ttl=5),
        lambda: store.window_add("w", 1.0, 60),
        lambda: store.list_get("l"),
        lambda: store.keys(""),
    )
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreError):
            await call()
        assert time.monotonic() - started < limit
    await store.close()


async def test_closed_port_raises_store_error_not_none() -> None:
    port = free_port()  # nothing listens there any more
    await _assert_every_call_fails_fast(_config(f"redis://127.0.0.1:{port}/0", 1.0), 1.5)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    listener.close()


async def test_silent_server_times_out_with_store_error(silent_server: int) -> None:
    url = f"redis://127.0.0.1:{silent_server}/0"
    await _assert_every_call_fails_fast(_config(url, 0.3), 1.0)


async def test_server_stopped_mid_use(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    try:
        store = open_store(_config(server.url, 1.0), base_dir=str(tmp_path))
        await store.set("greylist:x", b"1")
        assert await store.get("greylist:x") == b"1"
        server.stop()
        started = time.monotonic()
        with pytest.raises(StoreError):
            await store.get("greylist:x")
        assert time.monotonic() - started < 1.5
        await store.close()
    finally:
        server.stop()


async def test_native_ttls_and_incr_keeps_pttl(redis_server: RedisServer) -> None:
    config = _config(redis_server.url)
    store = open_store(config, base_dir="/nonexistent")
    prefix = str(config["prefix"])
    raw = redis.Redis(port=redis_server.port, socket_timeout=2)
    try:
        await store.incr("c", ttl=100)
        first = raw.pttl(prefix + "c")
        assert 99_000 < first <= 100_000
        await store.incr("c", ttl=1000)  # an existing counter keeps its expiry
        assert raw.pttl(prefix + "c") <= first
        await store.list_append("l", b"x", ttl=50)
        await store.list_append("l", b"y", ttl=500)
        assert raw.pttl(prefix + "l") <= 50_000
        await store.set("plain", b"v")
        assert raw.pttl(prefix + "plain") == -1
        await store.window_add("w", 1.0, 30)
        assert 29_000 < raw.pttl(prefix + "w") <= 30_000
    finally:
        raw.close()
        await store.close()


async def test_prefix_is_applied_and_isolates(redis_server: RedisServer) -> None:
    a = open_store(_config(redis_server.url), base_dir="/nonexistent")
    b = open_store(_config(redis_server.url), base_dir="/nonexistent")
    raw = redis.Redis(port=redis_server.port, socket_timeout=2)
    try:
        await a.set("k", b"v")
        assert await b.get("k") is None
        assert await b.keys("") == []
        assert raw.get("k") is None
    finally:
        raw.close()
        await a.close()
        await b.close()
