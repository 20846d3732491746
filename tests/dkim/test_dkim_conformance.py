"""DKIM conformance: chasquid's verifier cases through dkim-verify against the loopback DNS
server, dkimpy's vectors, and signatures recomputed byte for byte where the key is given."""

from __future__ import annotations

import json
import re
import time

import dkim
import pytest
from rohrpost.filters import _dkim_adapter as adapter

from tests.dkim.dkimhelp import CHASQUID, DKIMPY, VERIFY_TOML, make_services, read_linked, run
from tests.support.dnsserver import TestDnsServer

CASES = sorted(p.stem for p in CHASQUID.glob("*.msg"))
# chasquid's State -> the RFC 8601 results we give for it
STATE = {"SUCCESS": {"pass"}, "TEMPFAIL": {"temperror"}, "PERMFAIL": {"permerror", "fail"}}


def expected(case: str) -> tuple[int, list[tuple[str, str, set[str]]]]:
    path = CHASQUID / f"{case}.result"
    if not path.exists():  # 03-bad_message: only an .error (the message does not parse)
        return 0, []
    data = json.loads(read_linked(path))
    return data["Found"], [(r["Domain"], r["Selector"], STATE[r["State"]])
                           for r in data["Results"]]


@pytest.mark.parametrize("case", CASES)
def test_chasquid_case(case: str, dns_server: TestDnsServer) -> None:
    dns = CHASQUID / f"{case}.dns"
    if dns.exists():
        dns_server.load_bind_file(dns)
    raw = read_linked(CHASQUID / f"{case}.msg")
    done = run(VERIFY_TOML, raw, make_services(dns_server))
    results = done.outcome.runs[0].result.facts["dkim.results"]
    found, want = expected(case)
    assert len(results) == found, results
    for got, (domain, selector, states) in zip(results, want, strict=True):
        if domain:  # 04: chasquid leaves Domain empty when the header is rejected
            assert (got["domain"], got["selector"]) == (domain, selector)
        assert got["result"] in states, (got, states)
    if case == "02-too_many_headers":
        names = [s.name for s in done.outcome.symbols]
        assert "DKIM_TOO_MANY_SIGNATURES" in names
    if case == "09-limited_body":
        assert "DKIM_L_UNSIGNED_CONTENT" in [s.name for s in done.outcome.symbols]


def test_chasquid_dns_timeout_is_temperror(dns_server: TestDnsServer) -> None:
    dns_server.load_bind_file(CHASQUID / "01-rfc8463.dns")
    dns_server.set_behaviour("brisbane._domainkey.football.example.com", "timeout")
    done = run(VERIFY_TOML, read_linked(CHASQUID / "01-rfc8463.msg"), make_services(dns_server))
    facts = done.outcome.runs[0].result.facts["dkim.results"]
    results = {r["selector"]: r["result"] for r in facts}
    assert results == {"brisbane": "temperror", "test": "pass"}
    assert "R_DKIM_TEMPFAIL" in [s.name for s in done.outcome.symbols]


def football_dns(server: TestDnsServer) -> None:
    server.add("brisbane._domainkey.football.example.com", "TXT",
               "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
    server.add("test._domainkey.football.example.com", "TXT",
               (DKIMPY / "test.txt").read_text().strip())


@pytest.mark.parametrize(("name", "want"), [
    ("rfc6376.signed.msg", ["pass", "pass"]),
    ("rfc6376.signed.rsa.msg", ["pass"]),
    ("rfc6376.signed.no_t.msg", ["fail"]),  # NEGATIVE vector: t= removed after signing
])
def test_dkimpy_vectors_verify(name: str, want: list[str], dns_server: TestDnsServer) -> None:
    football_dns(dns_server)
    done = run(VERIFY_TOML, (DKIMPY / name).read_bytes(), make_services(dns_server))
    assert [r["result"] for r in done.outcome.runs[0].result.facts["dkim.results"]] == want


def test_ed25519test_vector_sign_and_verify(dns_server: TestDnsServer) -> None:
    """dkimpy's ed25519test.key/.dns pair: sign ed25519test.msg with our signer, verify it."""
    key = adapter.load_private_key((DKIMPY / "ed25519test.key").read_bytes())
    record = (DKIMPY / "ed25519test.dns").read_text().strip()
    assert adapter.record_matches(key, record)[0]
    dns_server.add("test._domainkey.example.com", "TXT", record)
    raw = (DKIMPY / "ed25519test.msg").read_bytes()
    value = adapter.sign_dkim(adapter.parse_message(raw), domain="example.com", selector="test",
                              key=key, headers=["from", "to", "subject", "from"],
                              timestamp=int(time.time()))
    signed = b"DKIM-Signature: " + value.encode() + b"\r\n" + raw
    done = run(VERIFY_TOML, signed, make_services(dns_server))
    assert [r["result"] for r in done.outcome.runs[0].result.facts["dkim.results"]] == ["pass"]


# -- signatures reproduced byte for byte ---------------------------------------------------

def _reference(path_bytes: bytes) -> list[tuple[bytes, dict[bytes, bytes]]]:
    headers, _body = dkim.rfc822_parse(path_bytes)
    return [(v, dkim.util.parse_tag_value(v)) for n, v in headers if n.lower() == b"dkim-signature"]


KEYS = {"brisbane": "rfc8032_7_1.key", "test": "test.private"}


@pytest.mark.parametrize(("source", "index"), [
    ("chasquid:01-rfc8463.msg", 0), ("chasquid:01-rfc8463.msg", 1),  # relaxed/relaxed
    ("dkimpy:rfc6376.signed.msg", 0), ("dkimpy:rfc6376.signed.msg", 1),  # simple/simple
    ("dkimpy:rfc6376.signed.rsa.msg", 0),
])
def test_signature_reproduced_byte_for_byte(source: str, index: int) -> None:
    """Sign rfc6376.msg with the given key and the reference's tags: bh= and b= are equal."""
    folder, name = source.split(":")
    raw = read_linked((CHASQUID if folder == "chasquid" else DKIMPY) / name)
    value, tags = _reference(raw)[index]
    key = adapter.load_private_key((DKIMPY / KEYS[tags[b"s"].decode()]).read_bytes())
    unsigned = adapter.parse_message((DKIMPY / "rfc6376.msg").read_bytes())
    canon = tags[b"c"].decode()
    include = [h.decode() for h in re.split(rb"\s*:\s*", tags[b"h"])]
    assert adapter.body_hash(unsigned, canon) == re.sub(r"\s", "", tags[b"bh"].decode())
    b = adapter.compute_b(unsigned, key, canon=canon, value=value, include=include)
    assert b == re.sub(r"\s", "", tags[b"b"].decode())


def test_rfc8463_key_derivation() -> None:
    """rfc8032_7_1.key is the RFC 8463 A.2 seed whose public key is brisbane's p=."""
    key = adapter.load_private_key((DKIMPY / "rfc8032_7_1.key").read_bytes())
    assert key.public == "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    rsa = adapter.load_private_key((DKIMPY / "test.private").read_bytes())
    ok, _why = adapter.record_matches(rsa, (DKIMPY / "test.txt").read_text())
    assert ok and rsa.bits == 1024


@pytest.mark.parametrize("name", ["1024_testkey.key", "2048_testkey.key", "2048_testkey_PKCS8.key",
                                  "test.private", "test2.private", "ed25519test.key"])
def test_key_formats_load(name: str) -> None:
    key = adapter.load_private_key((DKIMPY / name).read_bytes())
    assert key.kind in ("rsa", "ed25519")
    pub = DKIMPY / f"{name}.pub.txt"
    if pub.exists():
        text = pub.read_text().strip()
        assert adapter.record_matches(key, text if "p=" in text else f"k=rsa; p={text}")[0]


def test_verify_is_fast_enough_to_not_matter() -> None:
    """Sanity: one Ed25519 + one RSA-1024 verification stays well below a second."""
    raw = (DKIMPY / "rfc6376.signed.msg").read_bytes()
    records = {"brisbane._domainkey.football.example.com":
               ["v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="],
               "test._domainkey.football.example.com": [(DKIMPY / "test.txt").read_text().strip()]}
    start = time.perf_counter()
    results, found = adapter.verify_dkim(raw, lambda n: records.get(n, []),
                                         adapter.VerifyPolicy(now=time.time()), 5)
    assert found == 2 and [r.result for r in results] == ["pass", "pass"]
    assert time.perf_counter() - start < 1.0
