"""ratelimit with a fake clock: sliding windows, key kinds, buckets, recipients, stages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rohrpost import runner
from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.filter import Context
from rohrpost.message import Message
from rohrpost.options import OptionError
from rohrpost.pipeline import Pipeline
from rohrpost.result import Action, FilterResult
from rohrpost.services import make_services as services_from_config
from rohrpost.store.memory import MemoryStore
from tests.reputation.conftest import FakeClock, make_context, make_filter, make_services, run_check

ENV = Envelope(client_ip="192.0.2.10", mail_from="alice@example.org", auth_user="alice",
               rcpts=("bob@example.net",))
MSG = Message(b"From: alice@example.org\nSubject: hi\n\nhello\n")


class Rate:
    def __init__(self, clock: FakeClock, *buckets: dict[str, object], **options: object):
        self.clock = clock
        self.filter = make_filter("ratelimit", bucket=list(buckets), **options)
        self.ctx: Context = make_context(make_services(
            clock=clock, store=MemoryStore(clock=clock)))

    async def eom(self, **env: object) -> FilterResult:
        return await run_check(self.filter, self.ctx, ENV.replace(**env), message=MSG)

    async def rcpt(self, rcpt: str, **env: object) -> FilterResult:
        return await run_check(self.filter, self.ctx, ENV.replace(**env), rcpt=rcpt)


def action(result: FilterResult) -> str:
    return result.verdict.action.value if result.verdict else "pass"


async def test_sliding_window(clock: FakeClock) -> None:
    r = Rate(clock, {"key": "client_ip", "limit": 3, "window": 60}, stage="eom")
    for _ in range(3):
        assert action(await r.eom()) == "pass"
        clock.advance(10)  # events at t0, t0+10, t0+20
    refused = await r.eom()
    assert str(refused.verdict.reply) == "451 4.7.1 Rate limit exceeded, try again later"
    assert [s.name for s in refused.symbols] == ["RATELIMIT_CLIENT_IP"]
    clock.advance(29)  # t0+59: all three still inside
    assert action(await r.eom()) == "tempfail"
    clock.advance(1)  # t0+60: the first one left the window
    assert action(await r.eom()) == "pass"
    assert action(await r.eom()) == "tempfail"  # refused attempts were not counted


@pytest.mark.parametrize(("key", "same", "other"), [
    ("auth_user", {"auth_user": "ALICE"}, {"auth_user": "mallory"}),
    ("sender", {"mail_from": "<Alice@Example.ORG>"}, {"mail_from": "carol@example.org"}),
    ("client_ip", {"client_ip": "192.0.2.10"}, {"client_ip": "192.0.2.11"}),
    ("client_ip", {"client_ip": "2001:db8::1", "auth_user": ""},
     {"client_ip": "2001:db8:0:1::1"}),
])
async def test_key_kinds(clock: FakeClock, key: str, same: dict[str, object],
                         other: dict[str, object]) -> None:
    r = Rate(clock, {"key": key, "limit": 1}, stage="eom")
    first = {**same, "client_ip": "2001:db8::ffff"} if same.get("client_ip") == "2001:db8::1" \
        else same
    assert action(await r.eom(**first)) == "pass"
    assert action(await r.eom(**same)) == "tempfail"
    assert action(await r.eom(**other)) == "pass"


async def test_auth_user_bucket_ignores_unauthenticated(clock: FakeClock) -> None:
    r = Rate(clock, {"key": "auth_user", "limit": 0}, stage="eom")
    assert action(await r.eom(auth_user="")) == "pass"
    assert action(await r.eom()) == "tempfail"


async def test_recipient_domain_at_rcpt(clock: FakeClock) -> None:
    r = Rate(clock, {"key": "recipient_domain", "limit": 2, "count": "recipients",
                     "action": "reject"})
    rcpts = ("a@slow.example", "b@slow.example", "c@slow.example", "d@other.example")
    env = {"rcpts": rcpts}
    results = [action(await r.rcpt(x, **env)) for x in rcpts]
    assert results == ["pass", "pass", "reject", "pass"]


async def test_multiple_buckets_score_and_reject(clock: FakeClock) -> None:
    r = Rate(clock,
             {"key": "sender", "limit": 1, "action": "score", "score": 3.0,
              "symbol": "SENDER_BURST"},
             {"key": "client_ip", "limit": 2, "action": "reject",
              "message": "550 5.7.1 Too much mail from you"},
             stage="eom")
    assert action(await r.eom()) == "pass"
    second = await r.eom()
    assert action(second) == "pass" and [(s.name, s.score) for s in second.symbols] == [
        ("SENDER_BURST", 3.0)]
    third = await r.eom()
    assert str(third.verdict.reply) == "550 5.7.1 Too much mail from you"
    assert {s.name for s in third.symbols} == {"SENDER_BURST", "RATELIMIT_CLIENT_IP"}


async def test_refused_message_is_counted_in_no_bucket(clock: FakeClock) -> None:
    r = Rate(clock, {"key": "client_ip", "limit": 5}, {"key": "sender", "limit": 1},
             stage="eom")
    await r.eom()
    for _ in range(5):
        assert action(await r.eom()) == "tempfail"
    # the client_ip bucket saw only the one accepted message
    assert action(await r.eom(mail_from="other@example.org")) == "pass"


async def test_eom_counts_recipients_by_weight(clock: FakeClock) -> None:
    r = Rate(clock, {"key": "auth_user", "limit": 5, "count": "recipients"}, stage="eom")
    three = ("a@x.example", "b@x.example", "c@x.example")
    assert action(await r.eom(rcpts=three)) == "pass"
    assert action(await r.eom(rcpts=three)) == "tempfail"
    assert action(await r.eom(rcpts=three[:2])) == "pass"


async def test_rcpt_stage_counts_messages_once(clock: FakeClock) -> None:
    r = Rate(clock, {"key": "auth_user", "limit": 1, "count": "messages"})
    rcpts = ("a@x.example", "b@x.example")
    assert [action(await r.rcpt(x, rcpts=rcpts)) for x in rcpts] == ["pass", "pass"]
    assert action(await r.rcpt("a@x.example", rcpts=rcpts)) == "tempfail"


def test_options_are_checked() -> None:
    with pytest.raises(OptionError, match="bucket"):
        make_filter("ratelimit")
    with pytest.raises(OptionError, match="must be one of"):
        make_filter("ratelimit", bucket=[{"key": "helo", "limit": 1}])
    with pytest.raises(OptionError, match="5xx"):
        make_filter("ratelimit", bucket=[{"key": "sender", "limit": 1, "action": "reject",
                                          "message": "451 4.7.1 x"}])


def test_compromised_account_recipe(tmp_path: Path, clock: FakeClock) -> None:
    """docs/spam.md's recipe: 200 recipients per hour per authenticated user, per RCPT."""
    text = f"""
[pipeline]
hostname = "mx.example.net"
var_dir = "{tmp_path}"
[[filter]]
use = "ratelimit"
on_error = "skip"
[filter.when]
authenticated = true
[[filter.bucket]]
key = "auth_user"
limit = 200
window = 3600
count = "recipients"
"""
    cfg = parse_config(text, "pipeline.toml")
    pipeline, services = Pipeline.build(cfg), services_from_config(cfg, clock=clock)

    def send(n: int, user: str = "alice") -> runner.Processed:
        env = ENV.replace(auth_user=user, rcpts=tuple(f"r{i}@x.example" for i in range(n)))
        return asyncio.run(runner.process(pipeline, services, env, MSG))

    assert send(150).outcome.action is Action.ACCEPT
    partly = send(80)
    assert partly.outcome.action is Action.ACCEPT and len(partly.envelope.rcpts) == 50
    assert send(1).outcome.action is Action.TEMPFAIL
    assert send(10, user="bob").outcome.action is Action.ACCEPT
    assert send(5, user="").outcome.action is Action.ACCEPT  # not authenticated: no limit
    clock.advance(3601)
    assert send(200).outcome.action is Action.ACCEPT
