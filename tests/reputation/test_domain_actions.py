"""Per-recipient-domain thresholds: [actions.domain."example.org"] over the global [actions]."""

from __future__ import annotations

import asyncio
import math

import pytest

from rohrpost import runner
from rohrpost.config import ConfigError, DomainActions, parse_config
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.policy import decide
from rohrpost.result import Action
from rohrpost.services import make_services

CONFIG = """
[pipeline]
hostname = "mx.example.net"
[actions]
add_header = 5.0
reject = 15.0
[actions.domain."strict.example"]
reject = 8.0
reject_message = "550 5.7.1 strict.example refuses spam"
[actions.domain."lenient.example"]
reject = inf
add_header = 10.0
[actions.domain.".sub.example"]
quarantine = 6.0
[actions.domain."deep.sub.example"]
quarantine = 7.0
"""


def actions_for(*rcpts: str):
    cfg = parse_config(CONFIG, "pipeline.toml")
    return cfg.actions.for_recipients(r.split("@")[1] for r in rcpts)


def test_parsed_tables() -> None:
    cfg = parse_config(CONFIG, "pipeline.toml")
    assert cfg.actions.domain["strict.example"] == DomainActions(
        reject=8.0, reject_message="550 5.7.1 strict.example refuses spam")
    assert cfg.actions.reject == 15.0


def test_typo_is_located() -> None:
    with pytest.raises(ConfigError, match=r"actions\.domain\.x\.example\.rejct.*reject"):
        parse_config('[actions.domain."x.example"]\nrejct = 3.0\n', "p.toml")


@pytest.mark.parametrize(("rcpts", "add_header", "reject", "quarantine"), [
    ((), 5.0, 15.0, None),
    (("a@other.example",), 5.0, 15.0, None),
    (("a@strict.example", "b@STRICT.example"), 5.0, 8.0, None),
    (("a@lenient.example",), 10.0, math.inf, None),
    (("a@x.sub.example",), 5.0, 15.0, 6.0),          # ".sub.example": subdomains
    (("a@sub.example",), 5.0, 15.0, None),           # ... not the domain itself
    (("a@deep.sub.example",), 5.0, 15.0, 7.0),       # exact key beats the suffix
    (("a@strict.example", "b@lenient.example"), 5.0, 8.0, None),   # mixed: strictest
    (("a@lenient.example", "b@other.example"), 5.0, 15.0, None),   # mixed with global
    (("a@x.sub.example", "b@deep.sub.example"), 5.0, 15.0, 6.0),
])
def test_effective_thresholds(rcpts: tuple[str, ...], add_header: float, reject: float,
                              quarantine: float | None) -> None:
    acts = actions_for(*rcpts)
    assert (acts.add_header, acts.reject, acts.quarantine) == (add_header, reject, quarantine)


def test_mixed_keeps_global_texts() -> None:
    acts = actions_for("a@strict.example", "b@other.example")
    assert acts.reject == 8.0 and acts.reject_message == "550 5.7.1 Message rejected as spam"
    assert actions_for("a@strict.example").reject_message.startswith("550 5.7.1 strict")


def scored_pipeline(score: float) -> str:
    return CONFIG + f"""
[[filter]]
use = "ratelimit"
[[filter.bucket]]
key = "client_ip"
limit = 0
action = "score"
score = {score}
"""


@pytest.mark.parametrize(("rcpts", "expected", "spam"), [
    (("a@other.example",), Action.ACCEPT, True),
    (("a@strict.example",), Action.REJECT, True),
    (("a@lenient.example",), Action.ACCEPT, False),
    (("a@lenient.example", "b@strict.example"), Action.REJECT, True),
])
def test_through_the_pipeline(tmp_path, rcpts: tuple[str, ...], expected: Action,
                              spam: bool) -> None:
    text = scored_pipeline(9.0).replace('hostname = "mx.example.net"',
                                        f'hostname = "mx.example.net"\nvar_dir = "{tmp_path}"')
    cfg = parse_config(text, "pipeline.toml")
    env = Envelope(client_ip="192.0.2.1", mail_from="s@example.org", rcpts=rcpts)
    done = asyncio.run(runner.process(Pipeline.build(cfg), make_services(cfg), env,
                                      Message(b"Subject: x\n\nhi\n")))
    assert done.outcome.score == 9.0
    assert done.outcome.action is expected
    assert done.outcome.is_spam is spam
    if expected is Action.REJECT and rcpts == ("a@strict.example",):
        assert str(done.outcome.verdict.reply) == "550 5.7.1 strict.example refuses spam"


def test_decide_without_rcpts_uses_global() -> None:
    cfg = parse_config(CONFIG, "pipeline.toml")
    out = decide(cfg, [], None, None)
    assert out.actions is not None and out.actions.reject == 15.0
