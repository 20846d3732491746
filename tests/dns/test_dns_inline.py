"""Blocking DNS-using checks on the event loop (filters/_inline.py, ``Resolver.query_cached``).

What must hold: the answer a check sees is the one ``query_sync`` would have given (answers,
cached errors, malformed names alike); a check whose answers are not all known ends up in the
executor exactly as before, and its partial attempt leaves no trace; a library that swallows
the abort cannot smuggle its result out; the filters give the same results either way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from rohrpost.filters._inline import CacheMiss, KnownAnswers, SyncResolver, run_with_dns
from rohrpost.filters.dkim_verify import INLINE_MAX_BYTES, DkimVerify, DkimVerifyOptions
from rohrpost.filters.spf import SpfFilter, SpfOptions

from rohrpost.dns import DnsConfig, DnsPermError, DnsTempError, Resolver
from rohrpost.envelope import Envelope
from rohrpost.filter import Context, Mail, Services
from rohrpost.message import Message
from tests.dkim.dkimhelp import CHASQUID, read_linked
from tests.support.dnsserver import TestDnsServer


def make_resolver(server: TestDnsServer) -> Resolver:
    return Resolver(DnsConfig(servers=(server.address,), timeout=1.0))


class Spy:
    """Counts the calls that went to the executor."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        original = Context.run_blocking

        async def run_blocking(ctx: Context, fn: Any, *args: Any) -> Any:
            self.calls += 1
            return await original(ctx, fn, *args)

        monkeypatch.setattr(Context, "run_blocking", run_blocking)


def context(resolver: Resolver) -> Context:
    services = Services(resolver_factory=lambda: resolver, clock=lambda: 1_528_637_909.0)
    return Context(services, logging.LoggerAdapter(logging.getLogger("t"), {}), "mx.test",
                   "mx.test", {"trusted_networks": []})


def txt(name: str) -> Any:
    """A check that looks up ``name`` and tells on which thread it ran."""
    def fn(resolver: SyncResolver) -> tuple[tuple[str, ...] | str, bool]:
        try:
            records: tuple[str, ...] | str = resolver.query_sync(name, "TXT").records
        except DnsTempError:
            records = "temperror"
        return records, threading.current_thread() is threading.main_thread()

    return fn


# -- Resolver.query_cached ------------------------------------------------------------------


def test_query_cached_answers_only_from_the_cache(dns_server: TestDnsServer) -> None:
    dns_server.add("example.org", "TXT", "v=spf1 -all")
    dns_server.set_behaviour("slow.example.org", "timeout")
    resolver = make_resolver(dns_server)
    assert resolver.query_cached("example.org", "TXT") is None
    assert resolver.stats() == {"hits": 0, "misses": 0, "timeouts": 0}
    answer = resolver.query_sync("example.org", "TXT")
    cached = resolver.query_cached("EXAMPLE.org.", "txt")
    assert cached is not None and cached.records == answer.records == ("v=spf1 -all",)
    assert resolver.stats() == {"hits": 1, "misses": 1, "timeouts": 0}
    with pytest.raises(DnsTempError):
        resolver.query_sync("slow.example.org", "TXT")
    with pytest.raises(DnsTempError):  # the cached error, as query_sync would raise it
        resolver.query_cached("slow.example.org", "TXT")
    for _ in range(2):  # malformed names are refused every time, never remembered
        with pytest.raises(DnsPermError):
            resolver.query_cached("bad name.example", "TXT")
    with pytest.raises(ValueError, match="unknown DNS type"):
        resolver.query_cached("example.org", "NOPE")
    assert dns_server.query_log == [("example.org", "TXT"), ("slow.example.org", "TXT")]


# -- run_with_dns ---------------------------------------------------------------------------


def test_known_answers_raise_cache_miss_and_stay_missed(dns_server: TestDnsServer) -> None:
    resolver = make_resolver(dns_server)
    known = KnownAnswers(resolver, {})
    with pytest.raises(CacheMiss):
        known.query_sync("a.example", "TXT")
    assert known.missed == ("a.example", "TXT")
    dns_server.add("b.example", "TXT", "x")
    resolver.query_sync("b.example", "TXT")
    with pytest.raises(CacheMiss):  # after a miss nothing is answered any more
        known.query_sync("b.example", "TXT")


def test_warm_cache_runs_on_the_loop(dns_server: TestDnsServer,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dns_server.add("k.example", "TXT", "v=DKIM1; p=")
    resolver = make_resolver(dns_server)
    resolver.query_sync("k.example", "TXT")
    spy = Spy(monkeypatch)
    got = asyncio.run(run_with_dns(context(resolver), txt("k.example")))
    assert got == (("v=DKIM1; p=",), True) and spy.calls == 0


def test_miss_without_prefetch_goes_to_the_executor(dns_server: TestDnsServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    dns_server.add("k.example", "TXT", "v")
    spy = Spy(monkeypatch)
    got = asyncio.run(run_with_dns(context(make_resolver(dns_server)), txt("k.example")))
    assert got == (("v",), False) and spy.calls == 1
    assert dns_server.query_log == [("k.example", "TXT")]


def test_prefetch_fetches_asynchronously_then_runs_on_the_loop(
        dns_server: TestDnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    dns_server.add("k.example", "TXT", "v")
    dns_server.set_behaviour("t.example", "timeout")
    spy = Spy(monkeypatch)
    ctx = context(make_resolver(dns_server))
    got = asyncio.run(run_with_dns(ctx, txt("k.example"), rounds=2, prefetch=True))
    assert got == (("v",), True) and spy.calls == 0
    # a timeout found by the prefetch is raised where query_sync would have raised it
    got = asyncio.run(run_with_dns(ctx, txt("t.example"), rounds=2, prefetch=True))
    assert got == ("temperror", True) and spy.calls == 0
    assert dns_server.query_log.count(("k.example", "TXT")) == 1


def test_rounds_used_up_go_to_the_executor(dns_server: TestDnsServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("a.example", "b.example", "c.example"):
        dns_server.add(name, "TXT", name)

    def three(resolver: SyncResolver) -> list[str]:
        return [resolver.query_sync(n, "TXT").records[0]
                for n in ("a.example", "b.example", "c.example")]

    spy = Spy(monkeypatch)
    ctx = context(make_resolver(dns_server))
    assert asyncio.run(run_with_dns(ctx, three, rounds=2, prefetch=True)) == [
        "a.example", "b.example", "c.example"]
    assert spy.calls == 1
    assert asyncio.run(run_with_dns(ctx, three, rounds=2, prefetch=True)) == [
        "a.example", "b.example", "c.example"]
    assert spy.calls == 1  # now all cached: on the loop


def test_a_library_that_swallows_the_miss_is_not_believed(
        dns_server: TestDnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    dns_server.add("k.example", "TXT", "real")

    def swallowing(resolver: SyncResolver) -> str:
        try:
            return resolver.query_sync("k.example", "TXT").records[0]
        except BaseException:  # what pyspf's bare ``except:`` does
            return "made up"

    spy = Spy(monkeypatch)
    got = asyncio.run(run_with_dns(context(make_resolver(dns_server)), swallowing))
    assert got == "real" and spy.calls == 1


def test_errors_of_the_check_itself_propagate(dns_server: TestDnsServer) -> None:
    dns_server.add("k.example", "TXT", "v")
    resolver = make_resolver(dns_server)
    resolver.query_sync("k.example", "TXT")

    def broken(res: SyncResolver) -> None:
        res.query_sync("k.example", "TXT")
        raise RuntimeError("library bug")

    with pytest.raises(RuntimeError, match="library bug"):
        asyncio.run(run_with_dns(context(resolver), broken))


def test_inline_false_always_uses_the_executor(dns_server: TestDnsServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    dns_server.add("k.example", "TXT", "v")
    resolver = make_resolver(dns_server)
    resolver.query_sync("k.example", "TXT")
    spy = Spy(monkeypatch)
    got = asyncio.run(run_with_dns(context(resolver), txt("k.example"), inline=False))
    assert got == (("v",), False) and spy.calls == 1


# -- the filters: the same results on the loop as in the executor ------------------------------


def test_dkim_verify_on_the_loop_equals_the_executor(dns_server: TestDnsServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dns_server.load_bind_file(CHASQUID / "01-rfc8463.dns")
    raw = read_linked(CHASQUID / "01-rfc8463.msg")
    flt = DkimVerify(DkimVerifyOptions())
    mail = Mail(Envelope(), Message(raw))
    spy = Spy(monkeypatch)
    ctx = context(make_resolver(dns_server))
    cold = asyncio.run(flt.check(ctx, mail))  # two keys fetched asynchronously, then verified
    warm = asyncio.run(flt.check(ctx, mail))
    assert spy.calls == 0
    forced = asyncio.run(flt.check(context(make_resolver(dns_server)), Mail(
        Envelope(), Message(raw + b"x" * INLINE_MAX_BYTES))))  # too large: in a worker
    assert spy.calls == 1
    assert cold == warm
    assert [r["result"] for r in cold.facts["dkim.results"]] == ["pass", "pass"]
    assert [r["result"] for r in forced.facts["dkim.results"]] == ["fail", "fail"]  # body hash


def test_spf_on_the_loop_equals_the_executor(dns_server: TestDnsServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dns_server.add("example.org", "TXT", "v=spf1 include:_spf.example.org -all")
    dns_server.add("_spf.example.org", "TXT", "v=spf1 a:mx.example.org ~all")
    dns_server.add("mx.example.org", "A", "192.0.2.7")
    dns_server.add("helo.example.org", "TXT", "v=spf1 ptr -all")
    flt = SpfFilter(SpfOptions())
    ctx = context(make_resolver(dns_server))
    spy = Spy(monkeypatch)
    results = []
    for ip in ("192.0.2.7", "192.0.2.8", "192.0.2.7"):
        mail = Mail(Envelope(client_ip=ip, helo="helo.example.org",
                             mail_from="bob@example.org"))
        results.append(asyncio.run(flt.check(ctx, mail)))
    assert spy.calls == 2  # cold: the executor; the third message: all cached, on the loop
    assert results[0] == results[2]
    assert results[0].facts["spf.result"] == "pass"
    assert results[1].facts["spf.result"] == "fail"  # include: not a match, then -all
