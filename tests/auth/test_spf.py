"""The ``spf`` filter in every mode (direct, ``rohrpost filter spf``, the pipeline) and against
hostile DNS: include/redirect loops, lookup and void limits, huge TXT, timeouts."""

from __future__ import annotations

import asyncio
import contextvars
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rohrpost.filters._spf_adapter import check_host
from rohrpost.filters.spf import (
    RESULTS,
    SYMBOLS,
    SpfFilter,
    SpfOptions,
    normalize_result,
    symbol_for,
)

from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.result import Action
from rohrpost.runner import process
from tests.auth.helpers import make_context, make_resolver, make_services, run_filter
from tests.support.dnsserver import TestDnsServer

ROOT = Path(__file__).resolve().parents[2]
HUGE = "v=spf1 " + " ".join(f"ip4:10.{i // 250}.{i % 250}.0/24" for i in range(3000)) + " -all"

ZONE: list[tuple[str, str, str]] = [
    ("good.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
    ("soft.test", "TXT", "v=spf1 ~all"),
    ("mx.good.test", "TXT", "v=spf1 a -all"),
    ("mx.good.test", "A", "192.0.2.10"),
    ("loop1.test", "TXT", "v=spf1 include:loop2.test -all"),
    ("loop2.test", "TXT", "v=spf1 include:loop1.test -all"),
    ("redir.test", "TXT", "v=spf1 redirect=redir.test"),
    ("many.test", "TXT", "v=spf1 " + " ".join(f"a:h{i}.many.test" for i in range(12)) + " -all"),
    ("void.test", "TXT", "v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test -all"),
    ("broken.test", "TXT", "v=spf1 ip4:192.0.2.0/33 -all"),
    ("slow.test", "TXT", "v=spf1 include:hang.slow.test -all"),
    ("huge.test", "TXT", HUGE[:60000]),
]
ZONE += [(f"h{i}.many.test", "A", "198.51.100.1") for i in range(12)]


@pytest.fixture(scope="module")
def spf_dns() -> Iterator[TestDnsServer]:
    server = TestDnsServer()
    for name, rdtype, value in ZONE:
        server.add(name, rdtype, value)
    server.set_behaviour("hang.slow.test", "timeout")
    server.set_behaviour("tempfail.test", "servfail")
    server.start()
    yield server
    server.stop()
    assert not server.errors


def check(server: TestDnsServer, sender: str, ip: str = "192.0.2.5", helo: str = "mx.good.test",
          timeout: float = 0.5, **opts: object) -> tuple[str, object]:
    flt = SpfFilter(SpfOptions(**opts))  # type: ignore[arg-type]
    ctx = make_context(make_services(make_resolver(server.address, timeout)))
    out = run_filter(flt, ctx, Envelope(client_ip=ip, helo=helo, mail_from=sender))
    return str(out.facts.get("spf.result")), out


@pytest.mark.parametrize(("sender", "ip", "result"), [
    ("a@good.test", "192.0.2.5", "pass"),
    ("a@good.test", "203.0.113.5", "fail"),
    ("a@soft.test", "203.0.113.5", "softfail"),
    ("a@nothing.test", "203.0.113.5", "none"),
    ("a@loop1.test", "192.0.2.5", "permerror"),     # include loop
    ("a@redir.test", "192.0.2.5", "permerror"),     # redirect loop
    ("a@many.test", "192.0.2.5", "permerror"),      # > 10 DNS mechanisms
    ("a@void.test", "192.0.2.5", "permerror"),      # > 2 void lookups
    ("a@broken.test", "192.0.2.5", "permerror"),
    ("a@huge.test", "192.0.2.5", "fail"),           # 60 kB TXT over TCP: parsed, bounded
    ("a@tempfail.test", "192.0.2.5", "temperror"),  # SERVFAIL
])
def test_results_and_hostile_records(spf_dns: TestDnsServer, sender: str, ip: str,
                                     result: str) -> None:
    start = time.monotonic()
    assert check(spf_dns, sender, ip)[0] == result
    assert time.monotonic() - start < 10


def test_timeout_is_temperror_and_bounded(spf_dns: TestDnsServer) -> None:
    start = time.monotonic()
    got, out = check(spf_dns, "a@slow.test", tempfail_on_temperror=True)
    assert got == "temperror" and time.monotonic() - start < 3
    assert out.verdict.action is Action.TEMPFAIL and out.verdict.reply.code == 451  # type: ignore[attr-defined]


def test_policy_and_auth_results(spf_dns: TestDnsServer) -> None:
    _r, out = check(spf_dns, "a@good.test", "203.0.113.5")
    assert out.verdict is None  # type: ignore[attr-defined]  # reject only where configured
    assert [s.name for s in out.symbols] == ["R_SPF_FAIL", "R_SPF_HELO_FAIL"]  # type: ignore[attr-defined]
    renders = [a.render() for a in out.auth]  # type: ignore[attr-defined]
    assert renders == ["spf=fail smtp.mailfrom=a@good.test", "spf=fail smtp.helo=mx.good.test"]
    _r, out = check(spf_dns, "a@good.test", "203.0.113.5", reject_on_fail=True)
    assert out.verdict.action is Action.REJECT and str(out.verdict.reply).startswith("550 5.7.23")  # type: ignore[attr-defined]
    _r, out = check(spf_dns, "a@soft.test", "203.0.113.5", reject_on_fail=True)
    assert out.verdict is None  # type: ignore[attr-defined]  # softfail never rejected by default


def test_null_sender_uses_helo(spf_dns: TestDnsServer) -> None:
    got, out = check(spf_dns, "", "192.0.2.10")
    assert got == "pass" and out.facts["spf.domain"] == "mx.good.test"  # type: ignore[attr-defined]
    assert out.auth[0].render() == "spf=pass smtp.mailfrom=postmaster@mx.good.test"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("envelope", "reason"), [
    (Envelope(client_ip="127.0.0.1", mail_from="a@good.test"), "trusted network"),
    (Envelope(client_ip="203.0.113.1", mail_from="a@good.test", auth_user="u"), "authenticated"),
    (Envelope(mail_from="a@good.test"), "no client address"),
])
def test_skips(spf_dns: TestDnsServer, envelope: Envelope, reason: str) -> None:
    ctx = make_context(make_services(make_resolver(spf_dns.address)))
    out = run_filter(SpfFilter(SpfOptions()), ctx, envelope)
    assert out.facts == {"spf.skipped": reason} and not out.auth


def test_concurrent_checks_keep_their_resolver(spf_dns: TestDnsServer) -> None:
    """Two resolvers (one answering, one pointing at a dead port) in parallel threads."""
    good = make_resolver(spf_dns.address, 0.5)
    dead = make_resolver("127.0.0.1:9", 0.3)
    results: dict[str, str] = {}

    def run(name: str, resolver: object) -> None:
        for _ in range(5):
            res = contextvars.copy_context().run(
                lambda: check_host(resolver, "192.0.2.5", "a@good.test", "h"))  # type: ignore[arg-type]
            results.setdefault(name, res.result)
            assert res.result == results[name]

    threads = [threading.Thread(target=run, args=a) for a in (("good", good), ("dead", dead))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {"good": "pass", "dead": "temperror"}


def test_pipeline_mode(spf_dns: TestDnsServer) -> None:
    config = parse_config(f"""
[dns]
servers = ["{spf_dns.address}"]
[[filter]]
use = "spf"
reject_on_fail = true
""", "")
    pipeline = Pipeline.build(config)
    raw = Message(b"From: a@good.test\nSubject: x\n\nbody\n")

    async def go(ip: str) -> object:
        services = make_services(make_resolver(spf_dns.address))
        env = Envelope(client_ip=ip, helo="mx.good.test", mail_from="a@good.test")
        return await process(pipeline, services, env, raw)

    ok = asyncio.run(go("192.0.2.5"))
    assert b"spf=pass smtp.mailfrom=a@good.test" in ok.message.raw  # type: ignore[attr-defined]
    bad = asyncio.run(go("203.0.113.9"))
    assert bad.outcome.action is Action.REJECT  # type: ignore[attr-defined]


def _cli(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "ROHRPOST_NO_VENV": "1"}
    return subprocess.run([sys.executable, str(ROOT / "bin" / "rohrpost"), *args], input=stdin,
                          capture_output=True, env=env, timeout=60, check=False)


def test_cli_filter_mode(tmp_path: Path, spf_dns: TestDnsServer) -> None:
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f'[pipeline]\nauthserv_id = "mx.test"\n[dns]\nservers = ["{spf_dns.address}"]\n'
                   "timeout = 1.0\n")
    raw = b"From: a@good.test\nSubject: x\n\nbody\n"
    base = ("filter", "spf", "-c", str(cfg), "--sender", "a@good.test", "--helo", "mx.good.test")
    done = _cli(*base, "--client-ip", "192.0.2.5", stdin=raw)
    assert done.returncode == 0, done.stderr
    assert b"Authentication-Results: mx.test;" in done.stdout
    assert b"spf=pass smtp.mailfrom=a@good.test" in done.stdout
    refused = _cli(*base, "--client-ip", "203.0.113.9", "--reject-on-fail", "true", stdin=raw)
    assert refused.returncode == 77, refused.stderr  # sysexits EX_NOPERM for 5.7.x
    assert refused.stderr.startswith(b"5.7.23 SPF validation failed\n")  # first, for pipe(8)


@given(st.text(max_size=20))
def test_result_mapping_is_total(text: str) -> None:
    mapped = normalize_result(text)
    assert mapped in RESULTS
    assert symbol_for(mapped) in SYMBOLS.values()
    if text in RESULTS:
        assert mapped == text
    elif text.strip().lower() not in (*RESULTS, "unknown", "error", "tempfail"):
        assert mapped == "temperror"  # a surprise never reads as pass or fail
