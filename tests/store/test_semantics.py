"""Every store semantic, run against memory, SQLite and a real redis-server."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from rohrpost.store import Store, StoreError

if TYPE_CHECKING:
    from tests.store.conftest import Harness


async def test_implements_protocol(backend: Harness) -> None:
    async with backend.session() as store:
        assert isinstance(store, Store)


async def test_get_set_delete(backend: Harness) -> None:
    async with backend.session() as store:
        assert await store.get("k") is None
        await store.set("k", b"v1")
        assert await store.get("k") == b"v1"
        await store.set("k", b"\x00\xffbinary")
        assert await store.get("k") == b"\x00\xffbinary"
        await store.delete("k")
        assert await store.get("k") is None
        await store.delete("never-there")


async def test_add_only_if_absent(backend: Harness) -> None:
    async with backend.session() as store:
        assert await store.add("triplet", b"first") is True
        assert await store.add("triplet", b"second") is False
        assert await store.get("triplet") == b"first"


async def test_add_concurrent_exactly_one_wins(backend: Harness) -> None:
    async with backend.session() as store:
        results = await asyncio.gather(*(store.add("race", str(i).encode()) for i in range(50)))
        assert results.count(True) == 1
        winner = results.index(True)
        assert await store.get("race") == str(winner).encode()


async def test_ttl_expiry_makes_entries_invisible(backend: Harness) -> None:
    ttl = backend.ttl
    async with backend.session() as store:
        await store.set("greylist:a", b"1", ttl=ttl)
        assert await store.add("greylist:b", b"2", ttl=ttl) is True
        await store.set("forever", b"3")
        assert await store.get("greylist:a") == b"1"
        assert sorted(await store.keys("greylist:")) == ["greylist:a", "greylist:b"]

        async def gone() -> bool:
            return await store.get("greylist:a") is None and await store.get("greylist:b") is None

        await backend.expire(ttl, gone)
        assert await store.keys("greylist:") == []
        assert await store.add("greylist:b", b"again") is True  # an expired key is absent
        assert await store.get("forever") == b"3"


async def test_incr_counts_and_encodes_like_redis(backend: Harness) -> None:
    async with backend.session() as store:
        assert await store.incr("c") == 1
        assert await store.incr("c") == 2
        assert await store.incr("c", 5) == 7
        assert await store.incr("c", -10) == -3
        assert await store.get("c") == b"-3"
        await store.set("n", b"41")
        assert await store.incr("n") == 42
        await store.set("text", b"abc")
        with pytest.raises(StoreError):
            await store.incr("text")
        assert await store.get("text") == b"abc"


async def test_incr_ttl_applies_on_creation(backend: Harness) -> None:
    ttl = backend.ttl
    async with backend.session() as store:
        assert await store.incr("day", ttl=ttl) == 1
        assert await store.incr("day", ttl=ttl) == 2

        async def gone() -> bool:
            return await store.get("day") is None

        await backend.expire(ttl, gone)
        assert await store.incr("day", ttl=ttl) == 1  # a fresh counter after expiry


async def test_incr_ttl_is_not_extended(clocked_backend: Harness) -> None:
    backend = clocked_backend  # Redis: covered by test_redis_incr_keeps_pttl
    async with backend.session() as store:
        await store.incr("c", ttl=10)
        backend.clock.advance(6)
        assert await store.incr("c", ttl=10) == 2
        backend.clock.advance(5)
        assert await store.get("c") is None


async def test_sliding_window_counts_drop_as_events_age(backend: Harness) -> None:
    t = 5000.0
    async with backend.session() as store:
        assert await store.window_add("rate", t, 10) == 1
        assert await store.window_add("rate", t + 1, 10) == 2
        assert await store.window_add("rate", t + 2, 10, weight=3) == 5
        assert await store.window_count("rate", t + 5, 10) == 5
        assert await store.window_count("rate", t + 10, 10) == 4  # event at t is out (<= cutoff)
        assert await store.window_count("rate", t + 11.5, 10) == 3
        assert await store.window_add("rate", t + 20, 10) == 1  # all older ones dropped
        assert await store.window_count("rate", t + 40, 10) == 0
        assert await store.window_count("absent", t, 10) == 0


async def test_window_events_at_same_time_are_distinct(backend: Harness) -> None:
    async with backend.session() as store:
        counts = [await store.window_add("w", 100.0, 60) for _ in range(5)]
        assert counts == [1, 2, 3, 4, 5]
        results = await asyncio.gather(*(store.window_add("g", 100.0, 60) for _ in range(20)))
        assert sorted(results) == list(range(1, 21))


async def test_list_append_and_get(backend: Harness) -> None:
    ttl = backend.ttl
    async with backend.session() as store:
        assert await store.list_get("report") == []
        for record in (b"r1", b"r2", b"r3"):
            await store.list_append("report", record)
        assert await store.list_get("report") == [b"r1", b"r2", b"r3"]
        await store.list_append("short", b"x", ttl=ttl)
        await store.list_append("short", b"y", ttl=ttl)
        assert await store.list_get("short") == [b"x", b"y"]

        async def gone() -> bool:
            return await store.list_get("short") == []

        await backend.expire(ttl, gone)
        await store.delete("report")
        assert await store.list_get("report") == []


async def test_keys_by_prefix(backend: Harness) -> None:
    async with backend.session() as store:
        await store.set("dmarc:2024-01-01:a", b"1")
        await store.incr("dmarc:2024-01-01:b")
        await store.list_append("dmarc:2024-01-02:l", b"x")
        await store.window_add("dmarc:w", 1.0, 60)
        await store.set("other", b"1")
        await store.set("glob*[x]?", b"1")
        await store.set("globby", b"1")
        assert await store.keys("dmarc:2024-01-01:") == ["dmarc:2024-01-01:a", "dmarc:2024-01-01:b"]
        assert await store.keys("dmarc:") == [
            "dmarc:2024-01-01:a",
            "dmarc:2024-01-01:b",
            "dmarc:2024-01-02:l",
            "dmarc:w",
        ]
        assert await store.keys("glob*") == ["glob*[x]?"]  # specials are literal
        assert await store.keys("nothing") == []
        assert len(await store.keys("")) == 7


async def test_wrong_kind_raises_store_error(backend: Harness) -> None:
    async with backend.session() as store:
        await store.list_append("l", b"x")
        await store.set("v", b"x")
        await store.window_add("w", 1.0, 60)
        for call in (
            store.get("l"),
            store.incr("l"),
            store.list_append("v", b"y"),
            store.window_add("v", 1.0, 60),
            store.list_get("w"),
            store.window_count("l", 1.0, 60),
        ):
            with pytest.raises(StoreError):
                await call
        await store.set("l", b"now a value")  # set replaces any kind, as in Redis
        assert await store.get("l") == b"now a value"
        assert await store.add("w", b"x") is False


async def test_bad_arguments_raise_value_error(backend: Harness) -> None:
    async with backend.session() as store:
        for call in (
            store.set("k", b"v", ttl=0),
            store.add("k", b"v", ttl=-1),
            store.incr("k", ttl=float("nan")),
            store.window_add("k", 1.0, 0),
            store.window_add("k", 1.0, 60, weight=0),
            store.window_count("k", float("inf"), 60),
        ):
            with pytest.raises(ValueError):
                await call
        with pytest.raises(TypeError):
            await store.set("k", "text")  # type: ignore[arg-type]


async def test_closed_store_raises(backend: Harness) -> None:
    store = backend.open()
    await store.set("k", b"v")
    await store.close()
    with pytest.raises(StoreError):
        await store.get("k")
    await store.close()  # idempotent


async def test_two_instances_share_state(shared_backend: Harness) -> None:
    backend = shared_backend
    async with backend.session() as first:
        second = backend.open()
        assert await first.add("greylist:triplet", b"seen") is True
        assert await second.add("greylist:triplet", b"seen") is False
        assert await second.get("greylist:triplet") == b"seen"
        assert await first.incr("c") == 1
        assert await second.incr("c") == 2
        assert await second.window_add("w", 10.0, 60) == 1
        assert await first.window_add("w", 11.0, 60) == 2
        await second.list_append("l", b"a")
        assert await first.list_get("l") == [b"a"]
        await first.delete("greylist:triplet")
        assert await second.get("greylist:triplet") is None
