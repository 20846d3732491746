"""``open_store`` configuration checks and a property test: memory and SQLite agree."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rohrpost.store
from rohrpost.store import Store, open_store
from rohrpost.store.memory import MemoryStore
from rohrpost.store.sqlite import SqliteStore
from tests.support.clock import FakeClock


def test_public_names() -> None:
    assert sorted(rohrpost.store.__all__) == ["Store", "StoreError", "open_store"]
    for name in rohrpost.store.__all__:
        assert hasattr(rohrpost.store, name)


async def test_default_is_sqlite_in_base_dir(tmp_path: Path) -> None:
    store = open_store({}, base_dir=str(tmp_path))
    assert isinstance(store, SqliteStore)
    await store.set("k", b"v")
    await store.close()
    assert (tmp_path / "state.sqlite3").is_file()


def test_redis_backend_does_not_connect_on_open() -> None:
    store = open_store({"backend": "redis", "url": "redis://127.0.0.1:1/0"}, base_dir="/x")
    asyncio.run(store.close())


async def test_memory_backend_from_the_configuration_opens(tmp_path: Path) -> None:
    # regression: [state] backend = "memory" passed config check (StateSection allows it) but
    # open_store raised, so `rohrpost run`/milter/serve tempfailed every greylisted message
    from rohrpost.config import parse_config
    from rohrpost.services import make_services

    config = parse_config(f'[pipeline]\nvar_dir = "{tmp_path}"\n[state]\nbackend = "memory"\n'
                          'prefix = "p:"\n', "pipeline.toml")
    services = make_services(config, clock=lambda: 100.0)
    assert isinstance(services.store, MemoryStore)
    assert await services.store.add("k", b"v", ttl=10)
    assert await services.store.get("k") == b"v"
    await services.aclose()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"backend": "mysql"}, "backend must be"),
        ({"backend": 1}, "backend must be a string"),
        ({"bakend": "sqlite"}, "unknown key"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"timeout": "2"}, "timeout must be a number"),
        ({"timeout": True}, "timeout must be a number"),
        ({"prefix": None}, "prefix must be a string"),
        ({"synchronous": "off"}, "synchronous must be"),
        ({"backend": "redis", "url": "http://127.0.0.1"}, "url must be"),
        ({"backend": "redis", "url": "redis://127.0.0.1:notaport/0"}, "invalid"),
    ],
)
def test_bad_config_raises_value_error(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(config, base_dir="/nonexistent")


_keys = st.sampled_from(["a", "b"])
_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("incr"),
            _keys,
            st.integers(-5, 5),
            st.sampled_from([None, 1.0, 5.0, 12.5]),
        ),
        st.tuples(
            st.just("window_add"),
            st.sampled_from(["w1", "w2"]),
            st.integers(0, 20).map(float),  # whole seconds, so that window edges are hit
            st.integers(1, 4),
        ),
        st.tuples(
            st.just("window_count"), st.sampled_from(["w1", "w2"]), st.integers(0, 20).map(float)
        ),
        st.tuples(st.just("tick"), st.sampled_from([1.0, 3.0, 7.0])),
        st.tuples(st.just("get"), _keys),
        st.tuples(st.just("delete"), st.sampled_from(["a", "w1"])),
    ),
    max_size=40,
)


async def _apply(store: Store, clock: FakeClock, ops: list[tuple[object, ...]]) -> list[object]:
    """Run ``ops`` on ``store``; ``now`` for windows is the fake clock plus an offset."""
    results: list[object] = []
    for op in ops:
        match op:
            case ("incr", str(key), int(amount), ttl):
                results.append(await store.incr(key, amount, ttl=ttl))  # type: ignore[arg-type]
            case ("window_add", str(key), float(offset), int(weight)):
                results.append(await store.window_add(key, clock.now + offset, 10, weight))
            case ("window_count", str(key), float(offset)):
                results.append(await store.window_count(key, clock.now + offset, 10))
            case ("tick", float(seconds)):
                clock.now += seconds
            case ("get", str(key)):
                results.append(await store.get(key))
            case ("delete", str(key)):
                await store.delete(key)
    results.append(sorted(await store.keys("")))
    return results


@settings(max_examples=150, deadline=None)
@given(_ops)
def test_memory_and_sqlite_agree(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:

        async def run() -> tuple[list[object], list[object]]:
            memory_clock, sqlite_clock = FakeClock(0.0), FakeClock(0.0)
            memory = MemoryStore(clock=memory_clock, prefix="p:")
            sqlite = SqliteStore(
                f"{tmp}/s.sqlite3", clock=sqlite_clock, prefix="p:", synchronous="NORMAL"
            )
            try:
                return (
                    await _apply(memory, memory_clock, ops),
                    await _apply(sqlite, sqlite_clock, ops),
                )
            finally:
                await memory.close()
                await sqlite.close()

        expected, actual = asyncio.run(run())
        assert actual == expected
