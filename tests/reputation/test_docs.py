"""Every pipeline.toml example in docs/spam.md for the filters present loads and builds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rohrpost.config import parse_config
from rohrpost.pipeline import Pipeline
from rohrpost.registry import available

DOC = Path(__file__).resolve().parents[2] / "docs" / "spam.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", DOC.read_text(), re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_example_builds(block: str) -> None:
    used = re.findall(r'^use = "([^"]+)"', block, re.M)
    assert set(used) <= set(available()), f"docs/spam.md names unknown filters: {used}"
    Pipeline.build(parse_config(block, "docs/spam.md"))
