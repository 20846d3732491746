"""Fixtures for the store tests: a real redis-server, a fake clock, one harness per backend.

``async def`` tests run through ``asyncio.run`` (see ``pytest_pyfunc_call``), one fresh loop per
test, so that redis.asyncio clients never outlive their loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from rohrpost.store import Store, open_store
from rohrpost.store.memory import MemoryStore
from tests.support.clock import FakeClock

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run coroutine test functions on a fresh event loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process on a loopback port in its own temp dir."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_redis(directory: Path) -> RedisServer:
    """Start redis-server and wait (with a deadline) until it answers PING."""
    for _attempt in range(3):  # a free port may be taken between probing and binding
        port = free_port()
        process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(port, process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if ping(port):
                return server
            time.sleep(0.02)
        server.stop()
    raise RuntimeError("redis-server did not start")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()



@dataclass
class Harness:
    """One backend under test; ``open`` returns a store on the shared state."""

    name: str
    factory: Callable[[], Store]
    clock: FakeClock
    ttl: float  # a ttl short enough to watch expire on this backend
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = self.factory()
        self.opened.append(store)
        return store

    @property
    def shared(self) -> bool:
        return self.name != "memory"

    async def expire(self, ttl: float, gone: Callable[[], Awaitable[bool]]) -> None:
        """Let ``ttl`` pass and assert that ``gone()`` becomes true.

        Fake clocks jump; Redis uses its own clock, so poll with a deadline instead of sleeping
        a fixed time.
        """
        if self.name != "redis":
            self.clock.advance(ttl + 0.001)
            assert await gone()
            return
        deadline = time.monotonic() + ttl + 2.0
        while not await gone():
            assert time.monotonic() < deadline, "entry did not expire"
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Store]:
        """Open a store and close every store opened meanwhile on exit."""
        try:
            yield self.open()
        finally:
            for store in self.opened:
                await store.close()
            self.opened.clear()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    yield from _harness(request, tmp_path, request.param)


@pytest.fixture(params=["memory", "sqlite"])
def clocked_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Backends whose expiry follows the injected clock (Redis uses its own)."""
    yield from _harness(request, tmp_path, request.param)


@pytest.fixture(params=["sqlite", "redis"])
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Backends that two store instances share (a MemoryStore is private)."""
    yield from _harness(request, tmp_path, request.param)


def _harness(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Iterator[Harness]:
    clock = FakeClock(1_000_000.0)
    if kind == "memory":
        memory = MemoryStore(clock=clock, prefix="rohrpost:")
        harness = Harness("memory", lambda: memory, clock, ttl=10.0)
    elif kind == "sqlite":
        config = {"backend": "sqlite", "path": "state/db.sqlite3", "synchronous": "normal"}
        harness = Harness(
            "sqlite", lambda: open_store(config, base_dir=str(tmp_path), clock=clock), clock, 10.0
        )
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        config = {
            "backend": "redis",
            "url": server.url,
            "prefix": f"t{uuid.uuid4().hex}:",  # isolates tests sharing the server
            "timeout": 2.0,
        }
        harness = Harness("redis", lambda: open_store(config, base_dir=str(tmp_path)), clock, 0.4)
    yield harness
