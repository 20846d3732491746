"""``make_services``: every ``[state] backend`` that the configuration accepts opens a store.

Regression: ``backend = "memory"`` passed ``config check`` (and docs/pipeline.md lists it), but
``open_store`` refuses it, so in milter mode every message that needed state (``dmarc``'s
report rows) was tempfailed with "backend must be 'sqlite' or 'redis'".
"""

from __future__ import annotations

import asyncio
import typing
from pathlib import Path

import pytest

from rohrpost.config import StateSection, parse_config
from rohrpost.services import make_services
from rohrpost.store.memory import MemoryStore


@pytest.mark.parametrize("backend", typing.get_args(typing.get_type_hints(StateSection)["backend"]))
def test_every_accepted_backend_opens(tmp_path: Path, backend: str,
                                      request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_server").url if backend == "redis" else ""
    config = parse_config(f'[pipeline]\nvar_dir = "{tmp_path}/var"\n[state]\n'
                          f'backend = "{backend}"\n' + (f'url = "{url}"\n' if url else ""),
                          str(tmp_path / "p.toml"))
    services = make_services(config, clock=lambda: 1000.0)

    async def roundtrip() -> bytes | None:
        await services.store.set("k", b"v", ttl=60)
        try:
            return await services.store.get("k")
        finally:
            await services.aclose()

    assert asyncio.run(roundtrip()) == b"v"


def test_memory_backend_is_the_memory_store(tmp_path: Path) -> None:
    config = parse_config(f'[pipeline]\nvar_dir = "{tmp_path}/var"\n[state]\n'
                          'backend = "memory"\n', str(tmp_path / "p.toml"))
    assert isinstance(make_services(config).store, MemoryStore)
    assert not (tmp_path / "var").exists()  # nothing written


@pytest.mark.parametrize(("setting", "pragma"), [("", 2), ('synchronous = "full"\n', 2),
                                                  ('synchronous = "normal"\n', 1)])
def test_sqlite_synchronous_reaches_the_store(tmp_path: Path, setting: str, pragma: int) -> None:
    # [state] synchronous goes from pipeline.toml through make_services to SQLite's PRAGMA
    config = parse_config(f'[pipeline]\nvar_dir = "{tmp_path}/var"\n[state]\n' + setting,
                          str(tmp_path / "p.toml"))
    assert config.state.synchronous == (setting.split('"')[1] if setting else "full")
    store = make_services(config).store
    try:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == pragma  # type: ignore[attr-defined]
    finally:
        asyncio.run(store.close())


def test_sqlite_synchronous_rejects_other_values(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="synchronous"):
        parse_config(f'[pipeline]\nvar_dir = "{tmp_path}/var"\n[state]\nsynchronous = "off"\n',
                     str(tmp_path / "p.toml"))
