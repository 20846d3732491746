"""Hostile input for dkim-verify: the defined RFC result, never a crash or a hang."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest
from dkim.canonicalization import CanonicalizationPolicy
from rohrpost.filters import _dkim_adapter as adapter

from rohrpost.envelope import Envelope
from rohrpost.message import Message
from tests.dkim.dkimhelp import DKIMPY, MESSAGE, NOW, VERIFY_TOML, make_services, run
from tests.support.dnsserver import TestDnsServer

AUTH = Envelope(auth_user="bob")


def signed(signing: dict[str, Any], dns_server: TestDnsServer, raw: bytes = MESSAGE) -> bytes:
    return run(str(signing["toml"]), raw, make_services(dns_server, lambda: NOW), AUTH).message.raw


def results(raw: bytes, dns_server: TestDnsServer, toml: str = VERIFY_TOML) -> list[dict[str, str]]:
    done = run(toml, raw, make_services(dns_server))
    return list(done.outcome.runs[0].result.facts["dkim.results"])


def first_only(raw: bytes) -> bytes:
    """Keep only the first (RSA) signature."""
    lines = raw.split(b"\r\n")
    starts = [i for i, ln in enumerate(lines) if ln.startswith(b"DKIM-Signature:")]
    end = starts[1]
    nxt = next(i for i in range(end + 1, len(lines)) if not lines[i][:1].isspace())
    return b"\r\n".join(lines[:end] + lines[nxt:])


def test_bad_base64_in_b_is_permerror(signing: dict[str, Any], dns_server: TestDnsServer) -> None:
    raw = first_only(signed(signing, dns_server))
    broken = re.sub(rb"b=([A-Za-z0-9+/]{10})", rb"b=!!!\1", raw, count=1)
    assert [r["result"] for r in results(broken, dns_server)] == ["permerror"]


def test_added_from_breaks_oversigned_signature(signing: dict[str, Any],
                                                dns_server: TestDnsServer) -> None:
    raw = signed(signing, dns_server)
    head, body = raw.split(b"\r\n\r\n", 1)
    forged = head + b"\r\nFrom: Mallory <boss@example.org>\r\n\r\n" + body
    assert [r["result"] for r in results(forged, dns_server)] == ["fail", "fail"]
    on_top = b"From: Mallory <boss@example.org>\r\n" + raw
    assert [r["result"] for r in results(on_top, dns_server)] == ["fail", "fail"]


def test_duplicate_from_is_not_signed(signing: dict[str, Any], dns_server: TestDnsServer) -> None:
    raw = b"From: a@example.org\r\n" + MESSAGE
    done = run(str(signing["toml"]), raw, make_services(dns_server, lambda: NOW), AUTH)
    assert b"DKIM-Signature" not in done.message.raw
    assert "DKIM_SIGN_SKIPPED" in [s.name for s in done.outcome.symbols]


@pytest.mark.parametrize(("policy", "result", "symbol"), [
    ("flag", "pass", True), ("accept", "pass", False), ("ignore-signature", "policy", False)])
def test_l_tag_with_appended_content(signing: dict[str, Any], dns_server: TestDnsServer,
                                     policy: str, result: str, symbol: bool) -> None:
    key = adapter.load_private_key(Path(str(signing["rsa"])).read_bytes())
    parsed = adapter.parse_message(MESSAGE)
    canon_body = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed").canonicalize_body(
        parsed[1])
    length = len(canon_body)
    value = (f"v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=rsa2026; l={length}; "
             f"h=from:to:subject; bh=; b=")
    bh = base64.b64encode(hashlib.sha256(canon_body).digest()).decode()
    value = value.replace("bh=;", f"bh={bh};")
    b = adapter.compute_b(parsed, key, canon="relaxed/relaxed", value=b" " + value.encode(),
                          include=["from", "to", "subject"])
    raw = f"DKIM-Signature: {value}{b}\r\n".encode() + MESSAGE
    assert [r["result"] for r in results(raw, dns_server)] == ["pass"]
    appended = raw + b"\r\nClick here: http://evil.example/\r\n"
    done = run(VERIFY_TOML + f'l_policy = "{policy}"\n', appended, make_services(dns_server))
    assert [r["result"] for r in done.outcome.runs[0].result.facts["dkim.results"]] == [result]
    names = [s.name for s in done.outcome.symbols]
    assert ("DKIM_L_UNSIGNED_CONTENT" in names) is symbol


def test_dns_timeout_is_temperror_not_fail(signing: dict[str, Any],
                                           dns_server: TestDnsServer) -> None:
    raw = signed(signing, dns_server)
    dns_server.set_behaviour("rsa2026._domainkey.example.org", "timeout")
    toml = VERIFY_TOML
    done = run(toml, raw, make_services(dns_server))
    got = {r["selector"]: r["result"] for r in done.outcome.runs[0].result.facts["dkim.results"]}
    assert got == {"rsa2026": "temperror", "ed2026": "pass"}
    assert "dkim=temperror" in " ".join(a.render() for a in done.outcome.auth)


@pytest.mark.parametrize(("record", "why"), [
    ("v=DKIM1; k=rsa; p=" + "A" * 5000, "bad key"),           # huge TXT, garbage key
    ("v=DKIM1; k=rsa; p=", "revoked"),
    ("v=DKIM2; k=rsa; p=MIGf", "bad key"),
    ("k=ed25519; p=not-base64!!", "bad key"),
    ("garbage without tags", "does not parse"),
])
def test_hostile_key_records_are_permerror(signing: dict[str, Any], dns_server: TestDnsServer,
                                           record: str, why: str) -> None:
    raw = first_only(signed(signing, dns_server))
    dns_server.remove("rsa2026._domainkey.example.org")
    dns_server.add("rsa2026._domainkey.example.org", "TXT", record)
    got = results(raw, dns_server)
    assert [r["result"] for r in got] == ["permerror"], got
    assert why in got[0]["reason"]


def test_missing_key_is_permerror(signing: dict[str, Any], dns_server: TestDnsServer) -> None:
    raw = first_only(signed(signing, dns_server))
    dns_server.remove("rsa2026._domainkey.example.org")
    assert [r["result"] for r in results(raw, dns_server)] == ["permerror"]


def test_expired_and_future_signatures(signing: dict[str, Any], dns_server: TestDnsServer) -> None:
    toml = str(signing["toml"]).replace('trusted_networks = ["127.0.0.0/8"]',
                                        'trusted_networks = ["127.0.0.0/8"]\nexpire = 60')
    raw = run(toml, MESSAGE, make_services(dns_server, lambda: NOW), AUTH).message.raw
    later = run(VERIFY_TOML, raw, make_services(dns_server, lambda: NOW + 3600))
    facts = later.outcome.runs[0].result.facts["dkim.results"]
    assert {r["result"] for r in facts} == {"permerror"} and "expired" in facts[0]["reason"]
    earlier = run(VERIFY_TOML, raw, make_services(dns_server, lambda: NOW - 3600))
    facts = earlier.outcome.runs[0].result.facts["dkim.results"]
    assert {r["result"] for r in facts} == {"permerror"} and "future" in facts[0]["reason"]


def test_weak_rsa_key_policy(tmp_path: Path, dns_server: TestDnsServer) -> None:
    """A 1024-bit key passes with DKIM_WEAK_KEY; min_rsa_bits = 2048 makes it policy."""
    key = adapter.load_private_key((DKIMPY / "test.private").read_bytes())
    dns_server.add("test._domainkey.example.org", "TXT", adapter.key_record(key))
    value = adapter.sign_dkim(adapter.parse_message(MESSAGE), domain="example.org",
                              selector="test", key=key, headers=["from", "from"],
                              timestamp=int(NOW))
    raw = f"DKIM-Signature: {value}\r\n".encode() + MESSAGE
    done = run(VERIFY_TOML, raw, make_services(dns_server, lambda: NOW))
    assert "DKIM_WEAK_KEY" in [s.name for s in done.outcome.symbols]
    strict = run(VERIFY_TOML + "min_rsa_bits = 2048\n", raw, make_services(dns_server, lambda: NOW))
    assert [r["result"] for r in strict.outcome.runs[0].result.facts["dkim.results"]] == ["policy"]


def test_unparseable_message_and_no_signature(dns_server: TestDnsServer) -> None:
    done = run(VERIFY_TOML, MESSAGE, make_services(dns_server))
    assert done.outcome.runs[0].result.facts["dkim.results"] == []
    assert [a.render() for a in done.outcome.auth] == ["dkim=none"]
    assert "R_DKIM_NA" in [s.name for s in done.outcome.symbols]


def test_many_signatures_capped(signing: dict[str, Any], dns_server: TestDnsServer) -> None:
    raw = signed(signing, dns_server)
    many = Message(raw).headers[0].raw * 40 + raw
    done = run(VERIFY_TOML, many, make_services(dns_server))
    assert len(done.outcome.runs[0].result.facts["dkim.results"]) == 5
    assert "DKIM_TOO_MANY_SIGNATURES" in [s.name for s in done.outcome.symbols]
