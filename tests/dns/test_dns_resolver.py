"""rohrpost.dns.Resolver against the loopback TestDnsServer: answers, cache, faults, limits."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import rohrpost.dns as mod
from rohrpost.dns import (
    DnsAnswer,
    DnsConfig,
    DnsPermError,
    DnsTempError,
    Resolver,
    normalize_name,
    parse_server,
)
from tests.support.clock import FakeClock
from tests.support.dnsserver import TestDnsServer


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def make_resolver(server: TestDnsServer, clock: FakeClock | None = None, **kw: float) -> Resolver:
    config = DnsConfig(servers=(server.address,), **{"timeout": 2.0, **kw})  # type: ignore[arg-type]
    return Resolver(config, clock or time.monotonic)


@pytest.fixture
def resolver(dns_server: TestDnsServer, clock: FakeClock) -> Resolver:
    return make_resolver(dns_server, clock)


def q(resolver: Resolver, name: str, rdtype: str) -> DnsAnswer:
    return asyncio.run(resolver.query(name, rdtype))


# -- answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rdtype", "rdata", "expected"),
    [
        ("TXT", '"v=spf1 -all"', "v=spf1 -all"),
        ("A", "192.0.2.1", "192.0.2.1"),
        ("AAAA", "2001:db8::1", "2001:db8::1"),
        ("MX", "10 mail.example.org.", "10 mail.example.org."),
        ("PTR", "host.example.org.", "host.example.org."),
        ("NS", "ns1.example.org.", "ns1.example.org."),
    ],
)
def test_record_types_as_text(dns_server, resolver, rdtype, rdata, expected):
    dns_server.add("example.org", rdtype, rdata, ttl=120)
    answer = q(resolver, "Example.ORG.", rdtype)
    assert answer == DnsAnswer("example.org", rdtype, (expected,), 120, False)


def test_sync_and_async_agree(dns_server):
    dns_server.add("example.org", "A", "192.0.2.7")
    sync = make_resolver(dns_server).query_sync("example.org", "a")
    async_ = make_resolver(dns_server)
    assert sync.records == q(async_, "example.org", "A").records == ("192.0.2.7",)


def test_multi_string_txt_is_joined_without_spaces(dns_server, resolver):
    dns_server.add("example.org", "TXT", '"v=spf1 ip4:" "192.0.2.5 -all"')
    dns_server.add("example.org", "TXT", '"second"')
    records = q(resolver, "example.org", "TXT").records
    assert sorted(records) == ["second", "v=spf1 ip4:192.0.2.5 -all"]


def test_cname_is_followed(dns_server, resolver):
    dns_server.add("alias.example.org", "CNAME", "real.example.org.", ttl=50)
    dns_server.add("real.example.org", "A", "192.0.2.9", ttl=500)
    answer = q(resolver, "alias.example.org", "A")
    assert answer.records == ("192.0.2.9",)
    assert answer.ttl == 50  # the chain's minimum


def test_nxdomain_and_nodata_are_answers(dns_server, resolver):
    dns_server.add("example.org", "A", "192.0.2.1")
    nodata = q(resolver, "example.org", "TXT")
    nx = q(resolver, "missing.example.org", "TXT")
    assert (nodata.records, nodata.nxdomain) == ((), False)
    assert (nx.records, nx.nxdomain) == ((), True)


# -- cache -----------------------------------------------------------------------------------


def test_second_lookup_is_a_cache_hit(dns_server, resolver):
    dns_server.add("example.org", "TXT", '"x"', ttl=300)
    first = q(resolver, "example.org", "TXT")
    second = resolver.query_sync("EXAMPLE.org.", "TXT")  # sync and async share the cache
    assert first.records == second.records
    assert dns_server.query_log == [("example.org", "TXT")]
    assert resolver.stats() == {"hits": 1, "misses": 1, "timeouts": 0}


def test_ttl_expiry_uses_the_injected_clock(dns_server, resolver, clock):
    dns_server.add("example.org", "A", "192.0.2.1", ttl=60)
    q(resolver, "example.org", "A")
    clock.now += 59
    assert q(resolver, "example.org", "A").ttl == pytest.approx(1)
    clock.now += 2
    q(resolver, "example.org", "A")
    assert len(dns_server.query_log) == 2


def test_max_ttl_caps_positive_ttl(dns_server, clock):
    dns_server.add("example.org", "A", "192.0.2.1", ttl=86400)
    resolver = make_resolver(dns_server, clock, max_ttl=10)
    assert q(resolver, "example.org", "A").ttl == 10


def test_negative_caching_uses_soa_minimum_capped_by_negative_ttl(dns_server, clock):
    dns_server.negative_ttl = 30
    resolver = make_resolver(dns_server, clock, negative_ttl=300)
    assert q(resolver, "missing.example.org", "A").ttl == 30
    clock.now += 29
    assert q(resolver, "missing.example.org", "A").nxdomain
    assert len(dns_server.query_log) == 1
    clock.now += 2
    q(resolver, "missing.example.org", "A")
    assert len(dns_server.query_log) == 2
    dns_server.negative_ttl = 3600
    capped = make_resolver(dns_server, clock, negative_ttl=300)
    assert q(capped, "other.example.org", "A").ttl == 300


def test_lru_bound(dns_server, clock):
    resolver = make_resolver(dns_server, clock, cache_size=2)
    for name in ("a.test", "b.test", "a.test", "c.test", "a.test", "b.test"):
        q(resolver, name, "A")
    # a stays (recently used), b was evicted by c and is fetched again
    assert [n for n, _ in dns_server.query_log] == ["a.test", "b.test", "c.test", "b.test"]


# -- faults ----------------------------------------------------------------------------------


def test_timeout_raises_temp_error_within_deadline(dns_server):
    dns_server.set_behaviour("slow.example.org", "timeout")
    resolver = make_resolver(dns_server, timeout=1.0)
    for lookup in (
        lambda: q(resolver, "slow.example.org", "TXT"),
        lambda: resolver.query_sync("slow.example.org", "A"),
    ):
        started = time.monotonic()
        with pytest.raises(DnsTempError):
            lookup()
        assert time.monotonic() - started < 1.5
    assert resolver.stats()["timeouts"] == 2


def test_dkim_dnsfunc_timeout_argument_shortens_deadline(dns_server):
    dns_server.set_behaviour("slow.example.org", "timeout")
    dnsfunc = make_resolver(dns_server, timeout=5.0).dkimpy_dnsfunc()
    started = time.monotonic()
    with pytest.raises(DnsTempError):
        dnsfunc(b"slow.example.org.", timeout=0.5)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("behaviour", ["servfail", "refused"])
def test_server_errors_are_temp_errors(dns_server, resolver, behaviour):
    dns_server.set_behaviour("example.org", behaviour)
    with pytest.raises(DnsTempError):
        q(resolver, "example.org", "TXT")


def test_garbage_reply_is_a_temp_error(dns_server):
    # Decision (rohrpost.dns docstring): an unparseable reply is ignored like spoofed noise,
    # so the query times out: DnsTempError, never DnsPermError.
    dns_server.set_behaviour("example.org", "garbage")
    resolver = make_resolver(dns_server, timeout=0.5)
    with pytest.raises(DnsTempError):
        q(resolver, "example.org", "TXT")


def test_errors_are_cached_only_briefly(dns_server, resolver, clock):
    dns_server.set_behaviour("example.org", "servfail")
    with pytest.raises(DnsTempError):
        q(resolver, "example.org", "A")
    with pytest.raises(DnsTempError):
        q(resolver, "example.org", "A")
    assert len(dns_server.query_log) == 1
    dns_server.set_behaviour("example.org", None)
    dns_server.add("example.org", "A", "192.0.2.1")
    clock.now += 3
    assert q(resolver, "example.org", "A").records == ("192.0.2.1",)


def test_truncated_udp_falls_back_to_tcp(dns_server, resolver):
    dns_server.add("example.org", "TXT", '"small"')
    dns_server.set_behaviour("example.org", "truncate")
    assert q(resolver, "example.org", "TXT").records == ("small",)
    assert dns_server.tcp_queries == 1


def test_large_answer_is_truncated_by_size_and_fetched_over_tcp(dns_server, resolver):
    value = "k" * 3000
    dns_server.add("big.example.org", "TXT", value)
    assert resolver.query_sync("big.example.org", "TXT").records == (value,)
    assert dns_server.tcp_queries == 1


def test_huge_txt_is_a_perm_error(dns_server):
    for i in range(8):
        dns_server.add("huge.example.org", "TXT", f"{i}" * 2000)
    resolver = make_resolver(dns_server, max_answer_bytes=10000)
    with pytest.raises(DnsPermError):
        q(resolver, "huge.example.org", "TXT")


@pytest.mark.parametrize(
    "name",
    [
        "a" * 64 + ".example.org",
        ".".join(["a" * 63] * 4),  # 255 octets
        "exa\x00mple.org",
        "exa mple.org",
        "a..example.org",
        "",
        ".",
        "exa\\000mple.org",
        b"\xff.example.org",
    ],
)
def test_bad_names_are_rejected_without_a_query(dns_server, resolver, name):
    with pytest.raises(DnsPermError):
        q(resolver, name, "A")
    with pytest.raises(DnsPermError):
        resolver.query_sync(name, "A")
    assert dns_server.query_log == []


def test_name_limits_and_idna():
    assert normalize_name(".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])) is not None
    assert normalize_name("Bücher.Example.") == "xn--bcher-kva.example"
    assert normalize_name(b"sel._domainkey.example.org.") == "sel._domainkey.example.org"


def test_server_specs():
    assert parse_server("127.0.0.1") == ("127.0.0.1", 53)
    assert parse_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_server("[::1]:54") == ("::1", 54)
    assert parse_server("::1") == ("::1", 53)
    for bad in ("dns.google", "127.0.0.1:0", "[::1", "127.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_server(bad)


# -- concurrency -----------------------------------------------------------------------------


def test_query_many_runs_concurrently(dns_server):
    dns_server.delay = 0.3
    names = [f"h{i}.example.org" for i in range(10)]
    for name in names[:-1]:
        dns_server.add(name, "A", "192.0.2.1")
    dns_server.set_behaviour(names[-1], "servfail")
    resolver = make_resolver(dns_server)
    started = time.monotonic()
    results = asyncio.run(resolver.query_many([(n, "A") for n in names] + [("a..b", "A")]))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0  # serial would be 3 s; a sanity bound only
    assert all(isinstance(r, DnsAnswer) and r.records == ("192.0.2.1",) for r in results[:9])
    assert isinstance(results[9], DnsTempError)
    assert isinstance(results[10], DnsPermError)


def test_query_sync_from_eight_threads(dns_server):
    for i in range(20):
        dns_server.add(f"h{i}.example.org", "TXT", f"value {i}")
    resolver = make_resolver(dns_server)
    barrier = threading.Barrier(8)

    def work(_: int) -> list[str]:
        barrier.wait()
        return [resolver.query_sync(f"h{i}.example.org", "TXT").records[0] for i in range(20)]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(work, range(8)))
    assert all(r == [f"value {i}" for i in range(20)] for r in results)
    stats = resolver.stats()
    assert stats["hits"] + stats["misses"] == 160
    assert stats["misses"] >= 20


def test_dkimpy_dnsfunc(dns_server, resolver):
    dns_server.add("sel._domainkey.example.org", "TXT", '"v=DKIM1; k=rsa; " "p=AAAA"')
    dnsfunc = resolver.dkimpy_dnsfunc()
    assert dnsfunc(b"sel._domainkey.example.org.", timeout=5) == b"v=DKIM1; k=rsa; p=AAAA"
    assert dnsfunc("nokey._domainkey.example.org.") is None


def test_unknown_rdtype_is_a_caller_error(resolver):
    with pytest.raises(ValueError, match="unknown DNS type"):
        resolver.query_sync("example.org", "NOPE")


def test_public_names_match_all():
    assert all(hasattr(mod, name) for name in mod.__all__)
    assert {
        n
        for n in dir(mod)
        if not n.startswith("_") and getattr(getattr(mod, n), "__module__", None) == mod.__name__
    } <= set(mod.__all__)
