"""Every filter's options are documented (``rohrpost filter --list``) and defaults build."""

from __future__ import annotations

import pytest
from rohrpost.filters.rules import Rule, RuleSpec

from rohrpost.filter import Filter
from rohrpost.options import build_options, describe_options, option_fields
from rohrpost.registry import available, load_filter_class

OURS = ("headers", "received", "rules", "size")


def test_filters_are_registered() -> None:
    assert set(OURS) <= set(available())
    assert "-ruleparts" not in available() and "_ruleparts" not in available()


@pytest.mark.parametrize("name", OURS)
def test_options_documented_and_defaults_build(name: str) -> None:
    cls = load_filter_class(name)
    assert issubclass(cls, Filter) and cls.name == name and cls.description
    rows = describe_options(cls.Options)
    assert rows and all(help_text for _n, _t, _d, help_text in rows), rows
    cls(build_options(cls.Options, {}))  # every option has a usable default


def test_rule_keys_documented() -> None:
    public = [f for f in option_fields(Rule) if f.init]
    assert all(f.metadata.get("help") for f in public), [f.name for f in public
                                                          if not f.metadata.get("help")]
    assert "not" in {f.name for f in option_fields(RuleSpec)}
