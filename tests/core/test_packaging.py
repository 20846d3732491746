"""Packaging and documentation stay in step with the code."""

from __future__ import annotations

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


def test_option_reference_is_current_and_complete() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_options_doc.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert (ROOT / "docs" / "options.md").read_text() == gen.render(), (
        "docs/options.md is stale: run .venv/bin/python scripts/gen_options_doc.py")
    from rohrpost.options import describe_options

    for name in available():
        for option, _typ, _default, help_text in describe_options(load_filter_class(name).Options):
            assert help_text, f"{name}.{option} has no help text"


def test_every_filter_has_a_topic_page() -> None:
    topics = "\n".join(p.read_text() for p in (ROOT / "docs").glob("*.md")
                       if p.name != "options.md")
    assert [n for n in available() if f"`{n}`" not in topics] == []
