"""dnsbl against the loopback TestDnsServer: hits, codes, IPv6, errors, timeouts, concurrency."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from rohrpost.filters._dnslists import reverse_ip

from rohrpost import runner
from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.options import OptionError
from rohrpost.pipeline import Pipeline
from rohrpost.result import Action
from rohrpost.services import make_services as services_from_config
from tests.reputation.conftest import make_context, make_filter, make_services, run_check
from tests.support.dnsserver import TestDnsServer

ZEN = {
    "zone": "zen.test",
    "codes": {
        "127.0.0.2": {"symbol": "RBL_SBL", "score": 4.0},
        "127.0.0.4": {"symbol": "RBL_XBL", "score": 3.0},
        "127.0.0.10": {"symbol": "RBL_PBL", "score": 1.5},
    },
    "symbol": "RBL_ZEN_OTHER",
    "score": 0.5,
}


def dnsbl(**options: object):
    options.setdefault("list", [ZEN])
    options.setdefault("skip_private", False)
    return make_filter("dnsbl", **options)


def env(ip: str) -> Envelope:
    return Envelope(client_ip=ip, helo="client.example.org")


async def check(server: TestDnsServer, flt, ip: str, dns_timeout: float = 1.0):
    ctx = make_context(make_services(server=server, dns_timeout=dns_timeout))
    return await run_check(flt, ctx, env(ip))


def test_reverse_ip_forms() -> None:
    assert reverse_ip("192.0.2.1") == "1.2.0.192"
    assert reverse_ip("[192.0.2.1]") == "1.2.0.192"
    assert reverse_ip("::ffff:192.0.2.1") == "1.2.0.192"
    v6 = reverse_ip("IPv6:2001:db8::1")
    assert v6 == "1.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2"
    assert v6 is not None and len(v6.split(".")) == 32
    assert reverse_ip("not an ip") is None


async def test_hit_maps_code_to_symbol(dns_server: TestDnsServer) -> None:
    dns_server.add("2.0.0.127.zen.test", "A", "127.0.0.2")
    result = await check(dns_server, dnsbl(), "127.0.0.2")
    assert [(s.name, s.score) for s in result.symbols] == [("RBL_SBL", 4.0)]
    assert result.verdict is None
    assert result.facts["dnsbl.listed"] == ["zen.test"]


async def test_miss_is_nothing(dns_server: TestDnsServer) -> None:
    result = await check(dns_server, dnsbl(), "127.0.0.99")
    assert result.symbols == [] and result.verdict is None
    assert ("99.0.0.127.zen.test", "A") in dns_server.query_log


async def test_several_codes_and_default_symbol(dns_server: TestDnsServer) -> None:
    for code in ("127.0.0.4", "127.0.0.10", "127.0.0.3"):
        dns_server.add("7.0.0.127.zen.test", "A", code)
    result = await check(dns_server, dnsbl(), "127.0.0.7")
    assert {(s.name, s.score) for s in result.symbols} == {
        ("RBL_XBL", 3.0), ("RBL_PBL", 1.5), ("RBL_ZEN_OTHER", 0.5)}


async def test_unmapped_codes_ignored_without_default_symbol(dns_server: TestDnsServer) -> None:
    dns_server.add("7.0.0.127.zen.test", "A", "127.0.0.3")
    lst = {"zone": "zen.test", "codes": {"127.0.0.2": {"symbol": "RBL_SBL", "score": 4.0}}}
    assert (await check(dns_server, dnsbl(list=[lst]), "127.0.0.7")).symbols == []


async def test_no_codes_default_symbol_from_zone(dns_server: TestDnsServer) -> None:
    dns_server.add("2.0.0.127.bl.example.test", "A", "127.0.0.2")
    result = await check(dns_server, dnsbl(list=[{"zone": "bl.example.test", "score": 2.5}]),
                         "127.0.0.2")
    assert [(s.name, s.score) for s in result.symbols] == [("LISTED_BL_EXAMPLE_TEST", 2.5)]


async def test_reject_action_with_default_reply(dns_server: TestDnsServer) -> None:
    dns_server.add("2.0.0.127.zen.test", "A", "127.0.0.2")
    lst = {"zone": "zen.test", "codes": {"127.0.0.2": {"symbol": "RBL_SBL", "score": 4.0,
                                                       "action": "reject"}}}
    result = await check(dns_server, dnsbl(list=[lst]), "127.0.0.2")
    assert result.verdict is not None and result.verdict.action is Action.REJECT
    assert str(result.verdict.reply) == (
        "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.test")


async def test_custom_message_and_tempfail(dns_server: TestDnsServer) -> None:
    dns_server.add("2.0.0.127.zen.test", "A", "127.0.0.2")
    hit = {"symbol": "RBL_SBL", "action": "tempfail",
           "message": "450 4.7.1 {ip} on {zone} ({code})"}
    result = await check(dns_server, dnsbl(list=[{"zone": "zen.test",
                                                  "codes": {"127.0.0.2": hit}}]), "127.0.0.2")
    assert result.verdict is not None
    assert str(result.verdict.reply) == "450 4.7.1 127.0.0.2 on zen.test (127.0.0.2)"


def test_wrong_reply_class_is_an_option_error() -> None:
    hit = {"symbol": "RBL_SBL", "action": "reject", "message": "451 4.7.1 nope"}
    with pytest.raises(OptionError, match="5xx"):
        dnsbl(list=[{"zone": "zen.test", "codes": {"127.0.0.2": hit}}])


def test_no_default_lists() -> None:
    with pytest.raises(OptionError, match="no default lists"):
        make_filter("dnsbl")
    with pytest.raises(OptionError, match="IPv4"):
        dnsbl(list=[{"zone": "zen.test", "codes": {"two": {"symbol": "X"}}}])


async def test_ipv6_nibbles(dns_server: TestDnsServer) -> None:
    ip = "2001:db8::bad:1"
    name = reverse_ip(ip)
    dns_server.add(f"{name}.zen.test", "A", "127.0.0.4")
    result = await check(dns_server, dnsbl(), ip)
    assert [s.name for s in result.symbols] == ["RBL_XBL"]
    assert dns_server.query_log == [(f"{name}.zen.test", "A")]
    assert name is not None and name.startswith("1.0.0.0.d.a.b.0.")


async def test_spamhaus_error_codes_are_no_hit(dns_server: TestDnsServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    dns_server.add("2.0.0.127.zen.test", "A", "127.255.255.254")
    dns_server.add("3.0.0.127.zen.test", "A", "192.0.2.80")  # NXDOMAIN-rewriting resolver
    with caplog.at_level(logging.WARNING, logger="rohrpost"):
        r1 = await check(dns_server, dnsbl(), "127.0.0.2")
        r2 = await check(dns_server, dnsbl(), "127.0.0.3")
    assert r1.symbols == [] and r2.symbols == []
    assert "error code 127.255.255.254" in caplog.text
    assert "outside 127/8" in caplog.text


async def test_timeout_is_no_hit_with_tempfail_symbol(dns_server: TestDnsServer) -> None:
    dns_server.set_behaviour("2.0.0.127.zen.test", "timeout")
    started = time.monotonic()
    result = await check(dns_server, dnsbl(), "127.0.0.2", dns_timeout=0.3)
    assert time.monotonic() - started < 2.0
    assert [(s.name, s.score) for s in result.symbols] == [("DNSBL_TEMPFAIL", 0.0)]
    assert result.verdict is None and result.facts["dnsbl.failed"] == ["zen.test"]


async def test_servfail_on_one_list_keeps_the_others(dns_server: TestDnsServer) -> None:
    dns_server.add("2.0.0.127.good.test", "A", "127.0.0.2")
    dns_server.set_behaviour("2.0.0.127.bad.test", "servfail")
    flt = dnsbl(list=[{"zone": "bad.test"}, {"zone": "good.test", "symbol": "GOOD_HIT"}])
    result = await check(dns_server, flt, "127.0.0.2")
    assert {s.name for s in result.symbols} == {"GOOD_HIT", "DNSBL_TEMPFAIL"}


async def test_ten_lists_behind_a_timeout_take_one_timeout() -> None:
    zones = [f"l{i}.test" for i in range(10)]
    with TestDnsServer() as server:
        for zone in zones:
            server.set_behaviour(f"2.0.0.127.{zone}", "timeout")
        flt = dnsbl(list=[{"zone": z} for z in zones])
        started = time.monotonic()
        result = await check(server, flt, "127.0.0.2", dns_timeout=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"lookups ran one after another ({elapsed:.2f}s)"
    assert result.facts["dnsbl.failed"] == zones


async def test_ten_lists_behind_a_slow_server_answer_concurrently() -> None:
    zones = [f"l{i}.test" for i in range(10)]
    with TestDnsServer(delay=0.3) as server:
        for zone in zones:
            server.add(f"2.0.0.127.{zone}", "A", "127.0.0.2")
        flt = dnsbl(list=[{"zone": z, "symbol": f"HIT_{i}"} for i, z in enumerate(zones)])
        started = time.monotonic()
        result = await check(server, flt, "127.0.0.2", dns_timeout=2.0)
        elapsed = time.monotonic() - started
    assert len(result.symbols) == 10
    assert elapsed < 1.5, f"lookups ran one after another ({elapsed:.2f}s)"


async def test_answers_are_cached(dns_server: TestDnsServer) -> None:
    dns_server.add("2.0.0.127.zen.test", "A", "127.0.0.2")
    flt = dnsbl()
    ctx = make_context(make_services(server=dns_server))
    for _ in range(3):
        result = await run_check(flt, ctx, env("127.0.0.2"))
        assert [s.name for s in result.symbols] == ["RBL_SBL"]
    assert len(dns_server.query_log) == 1


@pytest.mark.parametrize(("ip", "options", "trusted"), [
    ("127.0.0.2", {"skip_private": True}, ()),
    ("10.1.2.3", {"skip_private": True}, ()),
    ("", {}, ()),
    ("127.0.0.2", {}, ("127.0.0.0/8",)),
    ("127.0.0.2", {"skip_networks": ["127.0.0.0/30"]}, ()),
])
async def test_skipped_clients_cause_no_query(dns_server: TestDnsServer, ip: str,
                                              options: dict[str, object],
                                              trusted: tuple[str, ...]) -> None:
    ctx = make_context(make_services(server=dns_server), trusted=trusted)
    result = await run_check(dnsbl(**options), ctx, env(ip))
    assert not result.symbols and "dnsbl.skipped" in result.facts
    assert dns_server.query_log == []


def test_pipeline_toml_rejects_at_connect(dns_server: TestDnsServer) -> None:
    dns_server.add("2.0.0.127.zen.test", "A", "127.0.0.2")
    text = f"""
[pipeline]
hostname = "mx.example.net"
trusted_networks = []
[dns]
servers = ["{dns_server.address}"]
timeout = 1.0
[[filter]]
use = "dnsbl"
skip_private = false
[[filter.list]]
zone = "zen.test"
[filter.list.codes."127.0.0.2"]
symbol = "RBL_SBL"
score = 4.0
action = "reject"
[filter.list.codes."127.0.0.4"]
symbol = "RBL_XBL"
score = 3.0
"""
    cfg = parse_config(text, "pipeline.toml")
    pipeline = Pipeline.build(cfg)
    envelope = Envelope(client_ip="127.0.0.2", mail_from="a@example.org", rcpts=("b@example.net",))
    done = asyncio.run(runner.process(pipeline, services_from_config(cfg), envelope,
                                      Message(b"Subject: x\n\nhi\n")))
    assert done.outcome.action is Action.REJECT
    assert "blocked using zen.test" in str(done.outcome.verdict.reply)
    assert [s.name for s in done.outcome.symbols] == ["RBL_SBL"]
