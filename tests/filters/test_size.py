"""The ``size`` filter: declared and real size against the limit, the soft score."""

from __future__ import annotations

from typing import Any

import pytest

from rohrpost.config import ConfigError
from rohrpost.envelope import Envelope
from rohrpost.result import Action

from .helpers import make_filter, message, run_filter, run_pipeline

BIG = message("From: a@example.org", "Subject: big", body="x" * 5000 + "\n")
SMALL = message("From: a@example.org", "Subject: small")


@pytest.mark.parametrize(("options", "msg", "params", "action", "reply", "symbols"), [
    ({"max_size": 4000}, BIG, (), Action.REJECT, "552 5.3.4 Message size exceeds fixed limit",
     ["SIZE_EXCEEDED"]),
    ({"max_size": 4000, "action": "tempfail"}, BIG, (), Action.TEMPFAIL,
     "452 4.3.4 Message size exceeds fixed limit", ["SIZE_EXCEEDED"]),
    ({"max_size": 4000, "message": "552 5.3.4 Too big for us"}, BIG, (), Action.REJECT,
     "552 5.3.4 Too big for us", ["SIZE_EXCEEDED"]),
    ({"max_size": 4000}, SMALL, ("BODY=8BITMIME", "size=9000"), Action.REJECT,
     "552 5.3.4 Message size exceeds fixed limit", ["SIZE_EXCEEDED"]),  # declared SIZE=
    ({"max_size": 4000}, BIG, ("SIZE=100",), Action.REJECT,
     "552 5.3.4 Message size exceeds fixed limit", ["SIZE_EXCEEDED"]),  # a lying client
    ({"max_size": 40000}, BIG, ("SIZE=5100",), None, "", []),
    ({"max_size": 40000, "score_over": 1000}, BIG, (), None, "", ["SIZE_LARGE"]),
    ({"max_size": 40000, "score_over": 10000}, BIG, (), None, "", []),
    ({}, BIG, ("SIZE=junk",), None, "", []),
])
def test_size(options: dict[str, Any], msg: Any, params: tuple[str, ...],
              action: Action | None, reply: str, symbols: list[str]) -> None:
    res = run_filter(make_filter("size", **options), msg, Envelope(mail_params=params))
    assert (res.verdict.action if res.verdict else None) is action
    if res.verdict is not None:
        assert str(res.verdict.reply) == reply
    assert [s.name for s in res.symbols] == symbols


def test_soft_score_in_pipeline() -> None:
    out = run_pipeline('[[filter]]\nuse = "size"\nscore_over = 1000\nscore = 2.0\n', BIG).outcome
    assert out.action is Action.ACCEPT
    assert [(s.name, s.score) for s in out.symbols] == [("SIZE_LARGE", 2.0)]


def test_reject_in_pipeline() -> None:
    out = run_pipeline('[[filter]]\nuse = "size"\nmax_size = 100\n', BIG).outcome
    assert out.action is Action.REJECT
    assert str(out.verdict.reply) == "552 5.3.4 Message size exceeds fixed limit"


@pytest.mark.parametrize(("toml", "key", "words"), [
    ('max_size = 100\nmessage = "452 4.3.4 later"\n', "filter[0]", "needs a 5xx"),
    ('action = "tempfail"\nmessage = "552 5.3.4 no"\n', "filter[0]", "needs a 4xx"),
    ('action = "discard"\n', "filter[0].action", "must be one of"),
    ('max_size = 0\n', "filter[0]", "positive"),
    ('max_sise = 10\n', "filter[0].max_sise", "did you mean 'max_size'"),
])
def test_config_errors(toml: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_pipeline('[[filter]]\nuse = "size"\n' + toml, SMALL)
    assert info.value.key == key
    assert info.value.line >= 5
    assert words in str(info.value)
