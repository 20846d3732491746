"""Aggregate reports: data collected by the filter, gating, RFC 7489 7.1 verification, the XML,
and ``rohrpost dmarc report`` (--dry-run and a real send to a loopback SMTP catcher), fed by
``rohrpost run`` with the spf and dmarc filters over a loopback DNS server."""

from __future__ import annotations

import asyncio
import functools
import gzip
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from rohrpost.filters._dmarc_report import Plan, Reporter, build_report, plan_reports
from rohrpost.filters._psl import PublicSuffixList
from rohrpost.filters.dmarc import DmarcFilter, DmarcOptions, organizational_domain

from rohrpost.envelope import Envelope
from rohrpost.result import FilterResult
from rohrpost.store.memory import MemoryStore
from tests.auth.helpers import FIXED_NOW, make_context, make_resolver, make_services, run_filter
from tests.support.dnsserver import TestDnsServer

ROOT = Path(__file__).resolve().parents[2]
PSL = PublicSuffixList.load()
ORG = functools.partial(organizational_domain, PSL)
DAY = time.strftime("%Y%m%d", time.gmtime(FIXED_NOW))


def spf_pass(domain: str) -> tuple[tuple[str, FilterResult], ...]:
    return (("spf", FilterResult(facts={"spf.result": "pass", "spf.domain": domain,
                                        "spf.identity": "mailfrom"})),)


def feed(server: TestDnsServer, store: MemoryStore, from_: str, prior: tuple = ()) -> None:
    ctx = make_context(make_services(make_resolver(server.address), store=store))
    raw = f"From: {from_}\nSubject: x\n\nbody\n".encode()
    run_filter(DmarcFilter(DmarcOptions()), ctx, Envelope(client_ip="192.0.2.5"), raw, prior)


def test_gating_and_external_verification(dmarc_dns: TestDnsServer) -> None:
    store = MemoryStore(clock=lambda: FIXED_NOW)
    feed(dmarc_dns, store, "a@report.test", spf_pass("report.test"))   # aligned pass
    feed(dmarc_dns, store, "a@report.test")                             # fail, same domain
    feed(dmarc_dns, store, "x@stranger.test")                           # never passed
    resolver = make_resolver(dmarc_dns.address)
    plans = {p.domain: p for p in asyncio.run(
        plan_reports(store, resolver, DAY, [], ORG))}
    report = plans["report.test"]
    assert report.reason == "" and len(report.rows) == 2
    # same org: no check; verified third party; unverified third party skipped
    assert report.destinations == ["agg@report.test", "ext@thirdparty.example"]
    assert len(report.skipped) == 1 and "unverified@elsewhere.example" in report.skipped[0]
    assert plans["stranger.test"].reason.startswith("no established relationship")
    allowed = {p.domain: p for p in asyncio.run(
        plan_reports(store, resolver, DAY, ["stranger.test"], ORG))}
    assert allowed["stranger.test"].destinations == ["agg@stranger.test"]


def test_xml_structure() -> None:
    rows = [{"ip": "192.0.2.5", "hf": "report.test", "disp": "none", "da": "fail", "sa": "pass",
             "dkim": [["report.test", "s1", "fail"]], "spf": ["report.test", "pass", "mfrom"],
             "ov": []}] * 3 + [{"ip": "2001:db8::1", "hf": "report.test", "disp": "none",
                                "da": "fail", "sa": "fail", "dkim": [], "spf": ["", "none",
                                                                                  "mfrom"],
                                "ov": [["trusted_forwarder", "client"]]}]
    plan = Plan("report.test", "20260101", rows, {"p": "none", "sp": "none", "adkim": "r",
                                                   "aspf": "r", "pct": 100})
    name, data = build_report(plan, Reporter("Example Org", "dmarc@mx.test", "mx.test"))
    assert name == "mx.test!report.test!1767225600!1767311999.xml.gz"
    root = ET.fromstring(gzip.decompress(data))
    assert root.tag == "feedback"
    meta = root.find("report_metadata")
    assert meta is not None
    for tag in ("org_name", "email", "report_id", "date_range/begin", "date_range/end"):
        assert meta.findtext(tag), tag
    assert root.findtext("policy_published/domain") == "report.test"
    assert root.findtext("policy_published/p") in ("none", "quarantine", "reject")
    records = root.findall("record")
    assert sorted(int(r.findtext("row/count") or 0) for r in records) == [1, 3]
    for rec in records:
        ev = rec.find("row/policy_evaluated")
        assert ev is not None and ev.findtext("disposition") in ("none", "quarantine", "reject")
        assert ev.findtext("dkim") in ("pass", "fail") and ev.findtext("spf") in ("pass", "fail")
        assert rec.findtext("identifiers/header_from") == "report.test"
        assert rec.findall("auth_results/spf"), "appendix C: at least one spf result"
        assert rec.findtext("auth_results/spf/result") in (
            "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")


def _config(tmp_path: Path, server: TestDnsServer, smtp: str = "") -> Path:
    cfg = tmp_path / "pipeline.toml"
    cfg.write_text(f"""
[pipeline]
authserv_id = "mx.test"
hostname = "mx.test"
var_dir = "{tmp_path}/var"
[dns]
servers = ["{server.address}"]
timeout = 1.0
[state]
backend = "sqlite"
[dmarc]
org_name = "Test Org"
report_from = "dmarc-reports@mx.test"
smtp = "{smtp}"
[[filter]]
use = "spf"
skip_trusted_networks = false
[[filter]]
use = "dmarc"
""")
    return cfg


def rohrpost(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "ROHRPOST_NO_VENV": "1"}
    return subprocess.run([sys.executable, str(ROOT / "bin" / "rohrpost"), *args], input=stdin,
                          capture_output=True, env=env, timeout=60, check=False)


def test_cli_collect_then_report(tmp_path: Path, dmarc_dns: TestDnsServer,
                                 mail_catcher: object) -> None:
    cfg = _config(tmp_path, dmarc_dns, f"127.0.0.1:{mail_catcher.port}")  # type: ignore[attr-defined]
    for sender in ("a@report.test", "b@stranger.test"):
        raw = f"From: {sender}\nTo: u@mx.test\nSubject: hi\n\nbody\n".encode()
        done = rohrpost("run", "-c", str(cfg), "--client-ip", "192.0.2.5", "--sender", sender,
                        "--helo", "mx.sender.test", "--recipient", "u@mx.test", stdin=raw)
        assert done.returncode == 0, done.stderr
        assert b"dmarc=pass" in done.stdout and b"spf=pass" in done.stdout
    day = time.strftime("%Y%m%d", time.gmtime())
    dry = rohrpost("dmarc", "report", "-c", str(cfg), "--day", day, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    out = dry.stdout.decode()
    assert f"would-send report.test {day} rows=1 to=agg@report.test,ext@thirdparty.example" in out
    assert "skip-destination report.test unverified@elsewhere.example" in out
    # stranger.test passed too (its mail was aligned), so it is established as well
    assert "would-send stranger.test" in out
    assert not mail_catcher.messages  # type: ignore[attr-defined]
    sent = rohrpost("dmarc", "report", "-c", str(cfg), "--day", day)
    assert sent.returncode == 0, sent.stderr
    caught = mail_catcher.wait_for(2)  # type: ignore[attr-defined]
    assert {r for m in caught for r in m.rcpts} >= {"agg@report.test", "ext@thirdparty.example"}
    assert all(b"application/gzip" in m.data for m in caught)
    again = rohrpost("dmarc", "report", "-c", str(cfg), "--day", day, "--dry-run")
    assert "already sent" in again.stdout.decode()
