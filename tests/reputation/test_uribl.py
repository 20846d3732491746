"""uribl against the loopback TestDnsServer: bitmask and code lists, IP lists, limits, faults."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from rohrpost import runner
from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.result import Action
from rohrpost.services import make_services as services_from_config
from tests.reputation.conftest import make_context, make_filter, make_services, run_check
from tests.support.dnsserver import TestDnsServer

MULTI = {"zone": "multi.uribl.test", "bits": {
    "2": {"symbol": "URIBL_BLACK", "score": 7.5},
    "4": {"symbol": "URIBL_GREY", "score": 1.5},
    "8": {"symbol": "URIBL_RED", "score": 0.5}}}
DBL = {"zone": "dbl.test", "codes": {"127.0.1.2": {"symbol": "DBL_SPAM", "score": 6.0}}}
SBL = {"zone": "sbl.test", "type": "ip", "codes": {"127.0.0.2": {"symbol": "URIBL_SBL",
                                                                 "score": 4.0}}}
ENV = Envelope(client_ip="192.0.2.1", mail_from="a@example.org", rcpts=("b@example.net",))


def uribl(**options: object):
    options.setdefault("list", [MULTI, DBL, SBL])
    return make_filter("uribl", **options)


def msg(body: str, *headers: str, html: bool = False) -> Message:
    ctype = "text/html" if html else "text/plain"
    head = "\n".join(["From: Alice <alice@example.org>", "Subject: offer",
                      f"Content-Type: {ctype}; charset=utf-8", *headers])
    return Message(f"{head}\n\n{body}\n".encode())


async def check(server: TestDnsServer, flt, message: Message, dns_timeout: float = 1.0):
    ctx = make_context(make_services(server=server, dns_timeout=dns_timeout))
    return await run_check(flt, ctx, ENV, message=message)


async def test_bitmask_hit_on_registered_domain(dns_server: TestDnsServer) -> None:
    dns_server.add("spammer.com.multi.uribl.test", "A", "127.0.0.6")
    result = await check(dns_server, uribl(), msg("buy at http://www.shop.spammer.com/x now"))
    assert {(s.name, s.score) for s in result.symbols} == {("URIBL_BLACK", 7.5),
                                                          ("URIBL_GREY", 1.5)}
    assert result.facts["uribl.domains"] == ["spammer.com"]
    assert ("www.shop.spammer.com.multi.uribl.test", "A") not in dns_server.query_log


async def test_miss_queries_every_domain_list(dns_server: TestDnsServer) -> None:
    result = await check(dns_server, uribl(), msg("see https://clean.example.co.uk/"))
    assert not result.symbols and result.verdict is None
    assert sorted(dns_server.query_log) == [("example.co.uk.dbl.test", "A"),
                                            ("example.co.uk.multi.uribl.test", "A")]


async def test_code_list_and_unknown_codes(dns_server: TestDnsServer) -> None:
    dns_server.add("bad.net.dbl.test", "A", "127.0.1.2")
    dns_server.add("odd.net.dbl.test", "A", "127.0.1.99")
    result = await check(dns_server, uribl(), msg("http://bad.net/ and odd.net"))
    assert [(s.name, s.reason) for s in result.symbols] == [("DBL_SPAM", "listed: bad.net")]


async def test_refused_and_error_answers_are_no_hits(dns_server: TestDnsServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    dns_server.add("a.com.multi.uribl.test", "A", "127.0.0.1")
    dns_server.add("b.com.dbl.test", "A", "127.255.255.252")
    with caplog.at_level(logging.WARNING, logger="rohrpost"):
        result = await check(dns_server, uribl(), msg("http://a.com/ http://b.com/"))
    assert not result.symbols
    assert "query refused" in caplog.text and "127.255.255.252" in caplog.text


async def test_ip_list_for_url_ips(dns_server: TestDnsServer) -> None:
    dns_server.add("7.2.0.192.sbl.test", "A", "127.0.0.2")
    result = await check(dns_server, uribl(), msg("click http://192.0.2.7/login"))
    assert [s.name for s in result.symbols] == ["URIBL_SBL"]
    assert ("7.2.0.192.dbl.test", "A") not in dns_server.query_log


async def test_html_href_and_idn(dns_server: TestDnsServer) -> None:
    dns_server.add("xn--bcher-kva.de.multi.uribl.test", "A", "127.0.0.2")
    body = '<p>Hello</p><a href="https://www.b&#252;cher.de/deal">deal</a>'
    result = await check(dns_server, uribl(), msg(body, html=True))
    assert [s.name for s in result.symbols] == ["URIBL_BLACK"]


async def test_defanged_url_is_not_looked_up(dns_server: TestDnsServer) -> None:
    dns_server.add("spammer.com.multi.uribl.test", "A", "127.0.0.2")
    result = await check(dns_server, uribl(), msg("report: hxxp://spammer.com/x was bad"))
    assert not result.symbols and dns_server.query_log == []


async def test_headers_optional_and_skip_domains(dns_server: TestDnsServer) -> None:
    dns_server.add("spammer.com.multi.uribl.test", "A", "127.0.0.2")
    message = msg("no links", "Reply-To: <x@mail.spammer.com>")
    assert not (await check(dns_server, uribl(), message)).symbols
    result = await check(dns_server, uribl(headers=["From", "Reply-To"]), message)
    assert [s.name for s in result.symbols] == ["URIBL_BLACK"]
    skip = uribl(headers=["Reply-To"], skip_domains=[".spammer.com"])
    assert not (await check(dns_server, skip, message)).symbols


async def test_at_most_max_domains_distinct(dns_server: TestDnsServer) -> None:
    body = " ".join(f"http://h{i}.d{i}.com/ http://x.d{i}.com/" for i in range(60))
    result = await check(dns_server, uribl(list=[MULTI]), msg(body))
    assert len(dns_server.query_log) == 50
    assert result.facts["uribl.capped"] is True
    await check(dns_server, uribl(list=[MULTI], max_domains=5), msg(body))


async def test_hit_can_reject(dns_server: TestDnsServer) -> None:
    dns_server.add("spammer.com.multi.uribl.test", "A", "127.0.0.2")
    black = {"symbol": "URIBL_BLACK", "score": 7.5, "action": "reject"}
    flt = uribl(list=[{"zone": "multi.uribl.test", "bits": {"2": black}}])
    result = await check(dns_server, flt, msg("http://spammer.com/"))
    assert result.verdict is not None and result.verdict.action is Action.REJECT
    assert str(result.verdict.reply) == (
        "554 5.7.1 Service unavailable; URL domain [spammer.com] blocked using multi.uribl.test")


async def test_timeouts_are_no_hit_and_concurrent(dns_server: TestDnsServer) -> None:
    names = [f"d{i}.com" for i in range(20)]
    for name in names:
        dns_server.set_behaviour(f"{name}.multi.uribl.test", "timeout")
    started = time.monotonic()
    result = await check(dns_server, uribl(list=[MULTI]), msg(" ".join(names)),
                         dns_timeout=0.4)
    assert time.monotonic() - started < 1.5
    assert [(s.name, s.score) for s in result.symbols] == [("URIBL_TEMPFAIL", 0.0)]


async def test_slow_server_answers_concurrently() -> None:
    names = [f"d{i}.com" for i in range(20)]
    with TestDnsServer(delay=0.3) as server:
        for name in names:
            server.add(f"{name}.multi.uribl.test", "A", "127.0.0.2")
        started = time.monotonic()
        result = await check(server, uribl(list=[MULTI]), msg(" ".join(names)), dns_timeout=2)
        elapsed = time.monotonic() - started
    assert elapsed < 1.5 and result.symbols[0].name == "URIBL_BLACK"
    assert result.symbols[0].reason.startswith("listed: d0.com, d1.com")


def test_pipeline_toml_scores_and_thresholds(dns_server: TestDnsServer) -> None:
    dns_server.add("spammer.com.multi.uribl.test", "A", "127.0.0.2")
    text = f"""
[pipeline]
hostname = "mx.example.net"
[dns]
servers = ["{dns_server.address}"]
[actions]
add_header = 5.0
reject = 15.0
[[filter]]
use = "uribl"
headers = ["From"]
[[filter.list]]
zone = "multi.uribl.test"
bits = {{ "2" = {{ symbol = "URIBL_BLACK", score = 7.5 }} }}
"""
    cfg = parse_config(text, "pipeline.toml")
    done = asyncio.run(runner.process(Pipeline.build(cfg), services_from_config(cfg), ENV,
                                      msg("http://spammer.com/")))
    assert done.outcome.action is Action.ACCEPT and done.outcome.is_spam
    assert b"X-Spam-Flag: YES" in done.message.raw
    assert b"URIBL_BLACK" in done.message.raw
