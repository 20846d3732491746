"""greylist with a fake clock: delay, retry window, networks, AWL, exemptions, EOM form, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from rohrpost.filters._greykeys import normalize_sender

from rohrpost import runner
from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.filter import Context
from rohrpost.message import Message
from rohrpost.options import OptionError
from rohrpost.pipeline import Pipeline
from rohrpost.result import Action, AuthResult, FilterResult
from rohrpost.services import make_services as services_from_config
from rohrpost.store import StoreError
from rohrpost.store.memory import MemoryStore
from tests.reputation.conftest import FakeClock, make_context, make_filter, make_services, run_check

RCPT = "bob@example.net"
ENV = Envelope(client_ip="192.0.2.10", helo="mx.sender.example", mail_from="alice@example.org",
               rcpts=(RCPT,))
MSG = Message(b"From: alice@example.org\nSubject: hi\n\nhello\n")


class Grey:
    """One greylist filter, store and clock: ``await g.attempt(...)`` is one RCPT."""

    def __init__(self, clock: FakeClock, store: MemoryStore | None = None, **options: object):
        self.clock = clock
        self.filter = make_filter("greylist", **options)
        self.store = store or MemoryStore(clock=clock, prefix="rohrpost:")
        self.ctx: Context = make_context(make_services(clock=clock, store=self.store),
                                         trusted=["127.0.0.0/8"])

    async def attempt(self, rcpt: str = RCPT, prior: tuple[tuple[str, FilterResult], ...] = (),
                      **env: object) -> FilterResult:
        envelope = ENV.replace(**env) if env else ENV
        if self.filter.stage.name == "EOM":
            return await run_check(self.filter, self.ctx, envelope, message=MSG, prior=prior)
        return await run_check(self.filter, self.ctx, envelope, rcpt=rcpt, prior=prior)


def reply(result: FilterResult) -> str:
    assert result.verdict is not None, result
    assert result.verdict.action is Action.TEMPFAIL
    return str(result.verdict.reply)


async def test_first_attempt_retry_too_early_then_pass(clock: FakeClock) -> None:
    g = Grey(clock)
    assert reply(await g.attempt()) == "451 4.7.1 Greylisted, please try again in 300 seconds"
    clock.advance(100)
    assert reply(await g.attempt()) == "451 4.7.1 Greylisted, please try again in 200 seconds"
    clock.advance(200)
    result = await g.attempt()
    assert result.verdict is None and result.facts["greylist.state"] == "passed"
    clock.advance(20 * 86400)  # a known triplet keeps passing
    assert (await g.attempt()).verdict is None
    keys = await g.store.keys("grey:")
    assert any(k.startswith("grey:t:") for k in keys)


async def test_retry_after_window_starts_over(clock: FakeClock) -> None:
    g = Grey(clock, delay=60, window=600)
    assert (await g.attempt()).verdict is not None
    clock.advance(601)
    assert reply(await g.attempt()).endswith("try again in 60 seconds")
    clock.advance(61)
    assert (await g.attempt()).verdict is None


async def test_passed_triplet_forgotten_after_pass_days(clock: FakeClock) -> None:
    g = Grey(clock, delay=60, pass_days=2, awl_count=0)
    await g.attempt()
    clock.advance(61)
    assert (await g.attempt()).verdict is None
    clock.advance(2 * 86400 + 1)
    assert (await g.attempt()).verdict is not None


async def test_triplet_parts(clock: FakeClock) -> None:
    g = Grey(clock, delay=60, awl_count=0)
    await g.attempt()
    clock.advance(61)
    assert (await g.attempt(client_ip="192.0.2.200")).verdict is None  # same /24
    assert (await g.attempt(client_ip="198.51.100.10")).verdict is not None
    assert (await g.attempt(rcpt="carol@example.net")).verdict is not None
    assert (await g.attempt(mail_from="mallory@example.org")).verdict is not None
    assert (await g.attempt(rcpt="BOB@Example.NET")).verdict is None  # case-insensitive


async def test_ipv6_slash_64(clock: FakeClock) -> None:
    g = Grey(clock, delay=60, awl_count=0)
    await g.attempt(client_ip="2001:db8:1:2::10")
    clock.advance(61)
    assert (await g.attempt(client_ip="2001:db8:1:2:ffff::1")).verdict is None
    assert (await g.attempt(client_ip="2001:db8:1:3::10")).verdict is not None


@pytest.mark.parametrize("variant", [
    "prvs=0123abcdef=alice@example.org",
    "SRS0=HhHh=TT=example.org=alice@forwarder.example",
    "SRS1=HhHh=fwd.example==HhHh=TT=example.org=alice@forwarder2.example",
    "<Alice@EXAMPLE.org>",
])
async def test_sender_normalization(clock: FakeClock, variant: str) -> None:
    assert normalize_sender(variant) == "alice@example.org"
    g = Grey(clock, delay=60, awl_count=0)
    await g.attempt()
    clock.advance(61)
    assert (await g.attempt(mail_from=variant)).verdict is None


async def test_verp_senders_fold_to_one() -> None:
    assert normalize_sender("list-bounces-1234@lists.example") == normalize_sender(
        "list-bounces-98765@lists.example")
    assert normalize_sender("") == "<>"
    assert normalize_sender("list-1@x.example", fold_digits=False) == "list-1@x.example"


async def test_auto_whitelist_and_its_expiry(clock: FakeClock) -> None:
    g = Grey(clock, delay=60, awl_count=2, awl_days=3)
    for rcpt in ("r1@example.net", "r2@example.net"):
        await g.attempt(rcpt=rcpt)
    clock.advance(61)
    for rcpt in ("r1@example.net", "r2@example.net"):
        assert (await g.attempt(rcpt=rcpt)).verdict is None
    fresh = await g.attempt(rcpt="new@example.net", client_ip="192.0.2.99")
    assert fresh.verdict is None and fresh.facts["greylist.reason"] == "auto-whitelisted network"
    assert (await g.attempt(rcpt="x@example.net", client_ip="198.51.100.1")).verdict is not None
    clock.advance(2 * 86400)  # use keeps the whitelist alive ...
    assert (await g.attempt(rcpt="new2@example.net")).verdict is None
    clock.advance(3 * 86400 + 1)  # ... idleness ends it
    assert (await g.attempt(rcpt="new3@example.net")).verdict is not None


SPF_PASS = ("spf", FilterResult(facts={"spf.result": "pass", "spf.domain": "bank.example"}))
SPF_FAIL = ("spf", FilterResult(facts={"spf.result": "fail", "spf.domain": "bank.example"}))
SPF_AR = ("spf", FilterResult(auth=[AuthResult("spf", "pass", "",
                                               (("smtp.mailfrom", "x@mail.bank.example"),))]))


@pytest.mark.parametrize(("options", "env", "prior", "reason"), [
    ({}, {"auth_user": "alice"}, (), "authenticated"),
    ({}, {"client_ip": "127.0.0.1"}, (), "trusted network"),
    ({"exempt_networks": ["192.0.2.0/28"]}, {}, (), "exempt_networks"),
    ({"exempt_senders": ["@example.org"]}, {}, (), "exempt_senders"),
    ({"exempt_senders": ["alice@"]}, {}, (), "exempt_senders"),
    ({"spf_pass_domains": ["bank.example"]}, {}, (SPF_PASS,), "SPF pass"),
    ({"spf_pass_domains": [".bank.example"]}, {}, (SPF_AR,), "SPF pass"),
    ({}, {"client_ip": ""}, (), "no client IP"),
])
async def test_exemptions(clock: FakeClock, options: dict[str, object], env: dict[str, object],
                          prior: tuple[tuple[str, FilterResult], ...], reason: str) -> None:
    g = Grey(clock, **options)
    result = await g.attempt(prior=prior, **env)
    assert result.verdict is None and result.facts["greylist.reason"] == reason
    assert await g.store.keys("grey:t:") == []


async def test_no_exemption_without_pass(clock: FakeClock) -> None:
    g = Grey(clock, spf_pass_domains=["bank.example"], exempt_authenticated=False,
             exempt_trusted=False)
    assert (await g.attempt(prior=(SPF_FAIL,))).verdict is not None
    assert (await g.attempt(client_ip="127.0.0.1", rcpt="z@example.net")).verdict is not None
    assert (await g.attempt(auth_user="alice", rcpt="y@example.net")).verdict is not None


async def test_exempt_recipients(clock: FakeClock) -> None:
    g = Grey(clock, exempt_recipients=["postmaster@", "abuse@example.net", "@open.example"])
    for rcpt in ("postmaster@example.net", "Abuse@example.net", "any@open.example"):
        assert (await g.attempt(rcpt=rcpt)).verdict is None
    assert (await g.attempt(rcpt="abuse@other.example")).verdict is not None


def test_dkim_needs_eom_and_bad_options() -> None:
    with pytest.raises(OptionError, match="stage"):
        make_filter("greylist", dkim_pass_domains=["bank.example"])
    with pytest.raises(OptionError, match="delay < window"):
        make_filter("greylist", delay=600, window=300)
    with pytest.raises(OptionError, match="4xx"):
        make_filter("greylist", message="550 5.7.1 go away")


async def test_eom_form_greylists_all_recipients_and_knows_dkim(clock: FakeClock) -> None:
    g = Grey(clock, stage="eom", delay=60, dkim_pass_domains=["bank.example"], awl_count=0)
    assert g.filter.stage.name == "EOM"
    env = {"rcpts": ("a@example.net", "postmaster@example.net")}
    assert reply(await g.attempt(**env)).endswith("60 seconds")
    assert len(await g.store.keys("grey:t:")) == 2
    clock.advance(61)
    assert (await g.attempt(**env)).verdict is None
    dkim = ("dkim", FilterResult(facts={"dkim.pass_domains": ["bank.example"]}))
    other = {"rcpts": ("c@example.net",), "client_ip": "198.51.100.7"}
    result = await g.attempt(prior=(dkim,), **other)
    assert result.verdict is None and result.facts["greylist.reason"] == "DKIM pass"
    dkim_ar = ("dkim", FilterResult(auth=[AuthResult("dkim", "pass", "",
                                                     (("header.d", "bank.example"),))]))
    assert (await g.attempt(prior=(dkim_ar,), **other)).verdict is None
    assert (await g.attempt(**other)).verdict is not None


async def test_store_error_raises(clock: FakeClock) -> None:
    g = Grey(clock)
    await g.store.close()
    with pytest.raises(StoreError):
        await g.attempt()


def pipeline_toml(tmp_path: Path, extra: str = "", state: str = "") -> str:
    return f"""
[pipeline]
hostname = "mx.example.net"
var_dir = "{tmp_path}"
{state}
[[filter]]
use = "greylist"
delay = 120
exempt_recipients = ["postmaster@"]
{extra}
"""


def run(cfg_text: str, services, envelope: Envelope = ENV) -> runner.Processed:
    cfg = parse_config(cfg_text, "pipeline.toml")
    return asyncio.run(runner.process(Pipeline.build(cfg), services, envelope, MSG))


def test_pipeline_rcpt_stage_per_recipient(tmp_path: Path, clock: FakeClock) -> None:
    text = pipeline_toml(tmp_path)
    cfg = parse_config(text, "pipeline.toml")
    services = services_from_config(cfg, clock=clock)
    env = ENV.replace(rcpts=("bob@example.net", "postmaster@example.net"))
    done = run(text, services, env)
    assert done.outcome.action is Action.ACCEPT  # postmaster is exempt, bob is refused
    assert done.envelope.rcpts == ("postmaster@example.net",)
    done = run(text, services, ENV)
    assert done.outcome.action is Action.TEMPFAIL
    assert str(done.outcome.verdict.reply).startswith("451 4.7.1 Greylisted")
    clock.advance(121)
    done = run(text, services, env)
    assert done.outcome.action is Action.ACCEPT and done.envelope.rcpts == env.rcpts
    asyncio.run(services.aclose())


def test_pipeline_store_down_on_error_policies(tmp_path: Path, clock: FakeClock) -> None:
    broken = '[state]\nbackend = "redis"\nurl = "redis://127.0.0.1:1/0"\ntimeout = 0.5\n'
    for on_error, action in (("", Action.TEMPFAIL), ('on_error = "skip"', Action.ACCEPT)):
        text = pipeline_toml(tmp_path, on_error, broken)
        services = services_from_config(parse_config(text, "pipeline.toml"), clock=clock)
        done = run(text, services)
        assert done.outcome.action is action
        assert "GREYLIST_FAILED" in [s.name for s in done.outcome.symbols]
