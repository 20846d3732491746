"""Packaging and documentation stay in step with the code."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from rohrpost.registry import available, load_filter_class

ROOT = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "rohrpost").rglob("__init__.py")}
    assert found - listed == set()
    assert "rohrpost.filters" in listed


def test_every_filter_option_is_documented() -> None:
    docs = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md"))
    missing = []
    for name in available():
        cls = load_filter_class(name)
        if f"`{name}`" not in docs:
            missing.append(name)
        for field in dataclasses.fields(cls.Options):
            if f"`{field.name}`" not in docs:
                missing.append(f"{name}.{field.name}")
    assert missing == []
