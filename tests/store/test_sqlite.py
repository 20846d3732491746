"""SQLite specifics: processes and threads on one file, file modes, durability, lock timeouts."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from rohrpost.store import StoreError, open_store
from rohrpost.store.sqlite import SqliteStore


def _increment_many(path: str, times: int, start: multiprocessing.synchronize.Event) -> None:
    """Child process: open its own store and increment one counter ``times`` times."""

    async def run() -> None:
        store = SqliteStore(path, timeout=10.0, synchronous="NORMAL")
        try:
            start.wait(10)
            for _ in range(times):
                await store.incr("shared")
        finally:
            await store.close()

    asyncio.run(run())


async def test_two_processes_increment_atomically(tmp_path: Path) -> None:
    path = str(tmp_path / "state.sqlite3")
    store = SqliteStore(path)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    workers = [ctx.Process(target=_increment_many, args=(path, 200, start)) for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert await store.get("shared") == b"400"
    await store.close()


def test_threads_share_one_store(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "state.sqlite3"), synchronous="NORMAL")
    wins: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        async def run() -> None:
            for _ in range(50):
                await store.incr("c")
            won = await store.add("once", b"x")
            with lock:
                wins.append(won)

        asyncio.run(run())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert wins.count(True) == 1
    assert asyncio.run(store.get("c")) == b"200"
    asyncio.run(store.close())


async def test_file_and_directory_modes(tmp_path: Path) -> None:
    store = open_store({}, base_dir=str(tmp_path / "var" / "rohrpost"))
    await store.set("k", b"v")
    db = tmp_path / "var" / "rohrpost" / "state.sqlite3"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    for extra in ("-wal", "-shm"):
        side = Path(str(db) + extra)
        if side.exists():
            assert stat.S_IMODE(side.stat().st_mode) & 0o077 == 0
    await store.close()


async def test_wal_mode_and_durable_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = SqliteStore(path)
    await store.set("fetch:uid:42", b"1")
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = SqliteStore(path)
    assert await again.get("fetch:uid:42") == b"1"
    await again.close()


async def test_expired_rows_are_purged(tmp_path: Path) -> None:
    now = [100.0]
    path = str(tmp_path / "s.sqlite3")
    store = SqliteStore(path, clock=lambda: now[0])
    await store.set("a", b"1", ttl=5)
    await store.list_append("l", b"1", ttl=5)
    await store.window_add("w", 100.0, 5)
    now[0] += 10
    await store.close()
    reopened = SqliteStore(path, clock=lambda: now[0])  # purges on open
    await reopened.close()
    with sqlite3.connect(path) as conn:
        for table in ("entries", "list_items", "window_events"):
            assert conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == 0


async def test_prefixes_isolate_stores_in_one_file(tmp_path: Path) -> None:
    a = open_store({"prefix": "a:"}, base_dir=str(tmp_path))
    b = open_store({"prefix": "b:"}, base_dir=str(tmp_path))
    await a.set("k", b"from a")
    assert await b.get("k") is None
    assert await b.keys("") == []
    assert await a.keys("") == ["k"]
    await a.close()
    await b.close()


async def test_lock_held_too_long_raises_store_error(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite3")
    store = SqliteStore(path, timeout=0.2)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            await store.incr("c")
        assert await store.get("c") is None  # readers are not blocked by a writer in WAL
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await store.incr("c") == 1
    await store.close()


def test_unopenable_path_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError):
        SqliteStore(str(blocker / "state.sqlite3"))
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(StoreError):
        SqliteStore(str(garbage))
