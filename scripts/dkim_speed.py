#!/usr/bin/env python3
"""CPU per message of DKIM signing and verification, dkimpy against rohrpost's code paths.

dkimpy alone, rohrpost's adapter, the ``dkim-sign``/``dkim-verify`` filters, and a whole
pipeline run (``rohrpost.runner.process``), side by side in one process.

    .venv/bin/python scripts/dkim_speed.py [-n 500]

Each row is ``time.process_time()`` (CPU of every thread of this process) over ``-n`` runs on
one 4 KB message, after a short warm-up; keys are generated fresh (RSA-2048 with openssl,
Ed25519 with PyNaCl) and never leave memory and a temporary directory. The machine is shared
and noisy: compare rows of one run (the ratio column), not numbers across runs. This is a
developer's measuring stick for the DKIM code path, not the benchmark of issue 6 (bench/).

Rows:
  dkimpy dkim.sign / dkim.verify   dkimpy alone, as dkimpy-milter calls it (the PEM is parsed
                                   per call; DNS answered from a dict)
  adapter, dkimpy RSA              our adapter with dkimpy's pure-Python RSA (the reference the
                                   fast path is tested against), when this tree has it
  adapter, dkimpy code             ``verify_dkim(reference=True)``: dkimpy's unmodified classes
                                   and RSA, what the fast verification is tested against
  adapter                          ``_dkim_adapter.sign_dkim`` / ``verify_dkim``
  filter                           ``DkimSign._sign`` (header list, parsing, every key) /
                                   ``verify_dkim`` as ``DkimVerify.check`` calls it
  pipeline                         ``rohrpost.runner.process`` with only that filter, in one
                                   event loop (the worker thread included)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import inspect
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dkim  # noqa: E402
from rohrpost.filters import _dkim_adapter as adapter  # noqa: E402
from rohrpost.filters._dkim_keys import KeySpec  # noqa: E402
from rohrpost.filters.dkim_sign import DkimSign, DkimSignOptions  # noqa: E402

from rohrpost.cli.dkimcmd import _rsa_pem  # noqa: E402
from rohrpost.config import parse_config  # noqa: E402
from rohrpost.dns import DnsAnswer  # noqa: E402
from rohrpost.envelope import Envelope  # noqa: E402
from rohrpost.filter import Services  # noqa: E402
from rohrpost.message import Message  # noqa: E402
from rohrpost.pipeline import Pipeline  # noqa: E402
from rohrpost.runner import process  # noqa: E402

NOW = 1_770_000_000
DOMAIN = "example.org"
Row = tuple[str, str, float]
INCLUDE = ["from", "to", "subject", "date", "message-id", "mime-version", "content-type"]


def message_4k() -> bytes:
    """A plain 4 KB message (about 600 bytes of headers, the rest body text)."""
    head = (
        b"Received: from client.example.org (client.example.org [192.0.2.10])\r\n"
        b"\tby mx.example.org (Postfix) with ESMTPSA id 4Zk3Yq1Vx2z\r\n"
        b"\tfor <alice@example.net>; Mon, 2 Feb 2026 10:00:00 +0000 (UTC)\r\n"
        b"From: Bob Example <bob@example.org>\r\nTo: Alice <alice@example.net>\r\n"
        b"Cc: Carol <carol@example.net>, Dave <dave@example.com>\r\n"
        b"Subject: Quarterly numbers and the plan for the next meeting\r\n"
        b"Date: Mon, 2 Feb 2026 10:00:00 +0000\r\n"
        b"Message-ID: <20260202100000.4Zk3Yq1Vx2z@example.org>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\nUser-Agent: Example Mail 1.2\r\n\r\n"
    )
    line = b"The quick brown fox jumps over the lazy dog, and the numbers look fine.  \r\n"
    body = b""
    while len(head) + len(body) + len(line) <= 4096:
        body += line
    return head + body + b"-- \r\nBob\r\n"


def fresh(raw: bytes) -> bytes:
    """A new bytes object with ``raw``'s content, as every received message is.

    The verifier keeps the split of the last message object it saw (for arc-verify), which
    would flatter a loop over one object.
    """
    return bytes(bytearray(raw))


def per_message_ms(fn: Callable[[], object], n: int) -> float:
    """CPU milliseconds per call of ``fn``, over ``n`` calls after a warm-up."""
    for _ in range(min(20, n)):
        fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) * 1000 / n


def pipeline_ms(toml: str, raw: bytes, services: Services, envelope: Envelope, n: int, *,
                expect: str = "") -> float:
    """CPU ms per message of ``runner.process`` with ``toml``'s pipeline, in one event loop.

    :param expect: a result the message must get (``dkim=pass``), checked once before timing
        so that no row times an error path.
    """
    pipeline = Pipeline.build(parse_config(toml, "speed.toml"))
    if expect:
        done = asyncio.run(process(pipeline, services, envelope, Message(fresh(raw))))
        got = [a.render() for a in done.outcome.auth]
        assert any(g.startswith(expect) for g in got), got

    async def many(count: int) -> None:
        for _ in range(count):
            await process(pipeline, services, envelope, Message(fresh(raw)))

    asyncio.run(many(min(20, n)))
    start = time.process_time()
    asyncio.run(many(n))
    return (time.process_time() - start) * 1000 / n


class DictResolver:
    """Stands in for ``rohrpost.dns.Resolver``: TXT answers from a dict, no network."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records

    def query_sync(self, name: str, rdtype: str) -> DnsAnswer:
        """The answer for ``name`` from the dict (NXDOMAIN when absent)."""
        value = self.records.get(name.rstrip("."))
        return DnsAnswer(name, rdtype, (value,) if value else (), 300, value is None)

    def query_cached(self, name: str, rdtype: str) -> DnsAnswer:
        """Every answer is at hand (``Resolver.query_cached``, for checks on the loop)."""
        return self.query_sync(name, rdtype)

    async def query(self, name: str, rdtype: str) -> DnsAnswer:
        """``Resolver.query``: the same answer."""
        return self.query_sync(name, rdtype)


def sign_rows(kind: str, pem: bytes, sel: str, tmp: Path, n: int) -> list[Row]:
    """Rows of one signing job: dkimpy, the adapter (both RSA paths), filter, pipeline."""
    raw, key = message_4k(), adapter.load_private_key(pem)
    job = f"sign {kind}" + ("-2048" if kind == "rsa" else "")
    keyfile = tmp / f"{sel}.pem"
    keyfile.write_bytes(pem)
    keyfile.chmod(0o600)
    # dkimpy reads Ed25519 keys only as the bare base64 seed (dknewkey's format)
    dk_key = pem if kind == "rsa" else base64.b64encode(bytes(key.key))
    algo = b"rsa-sha256" if kind == "rsa" else b"ed25519-sha256"
    inc = [h.encode() for h in INCLUDE]
    rows = [(job, "dkimpy dkim.sign", per_message_ms(lambda: dkim.sign(
        raw, sel.encode(), DOMAIN.encode(), dk_key, signature_algorithm=algo,
        canonicalize=(b"relaxed", b"relaxed"), include_headers=inc), n))]
    kw: dict[str, Any] = {"domain": DOMAIN, "selector": sel, "key": key, "headers": INCLUDE,
                          "timestamp": NOW}
    if "reference" in inspect.signature(adapter.sign_dkim).parameters:
        rows.append((job, "adapter, dkimpy RSA" if kind == "rsa" else "adapter, PyNaCl",
                     per_message_ms(lambda: adapter.sign_dkim(
                         adapter.parse_message(raw), reference=True, **kw), n)))
    rows.append((job, "adapter", per_message_ms(
        lambda: adapter.sign_dkim(adapter.parse_message(raw), **kw), n)))
    parsed = adapter.parse_message(raw)
    rows.append((job, "adapter, pre-parsed", per_message_ms(
        lambda: adapter.sign_dkim(parsed, **kw), n)))
    flt = DkimSign(DkimSignOptions(key=[KeySpec(domain=DOMAIN, selector=sel, key=str(keyfile))]))
    msg = Message(raw)
    rows.append((job, "filter DkimSign._sign", per_message_ms(
        lambda: flt._sign(msg, flt.keys, NOW), n)))
    toml = (f'[[filter]]\nuse = "dkim-sign"\n[[filter.key]]\ndomain = "{DOMAIN}"\n'
            f'selector = "{sel}"\nkey = "{keyfile}"\n')
    rows.append((job, "pipeline process()", pipeline_ms(
        toml, raw, Services(clock=lambda: float(NOW)), Envelope(auth_user="bob"), n)))
    return rows


def verify_rows(kind: str, pem: bytes, sel: str, n: int) -> list[Row]:
    """Rows of one verification job, on the message signed by the adapter."""
    raw, key = message_4k(), adapter.load_private_key(pem)
    records = {f"{sel}._domainkey.{DOMAIN}": adapter.key_record(key)}
    value = adapter.sign_dkim(adapter.parse_message(raw), domain=DOMAIN, selector=sel, key=key,
                              headers=INCLUDE, timestamp=NOW)
    signed = f"DKIM-Signature: {value}\r\n".encode() + raw
    job = f"verify {kind}" + ("-2048" if kind == "rsa" else "")

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        del timeout
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value else None

    def lookup(name: str) -> list[str]:
        return [records[name]] if name in records else []

    assert dkim.verify(signed, dnsfunc=dnsfunc), "dkimpy does not verify our signature"
    policy = adapter.VerifyPolicy(now=NOW)
    res, _found = adapter.verify_dkim(signed, lookup, policy, 5)
    assert [r.result for r in res] == ["pass"], res
    resolver: Any = DictResolver(records)
    services = Services(resolver_factory=lambda: resolver, clock=lambda: float(NOW))
    rows = [(job, "dkimpy dkim.verify", per_message_ms(
        lambda: dkim.verify(signed, dnsfunc=dnsfunc), n))]
    if "reference" in inspect.signature(adapter.verify_dkim).parameters:
        rows.append((job, "adapter, dkimpy code", per_message_ms(
            lambda: adapter.verify_dkim(fresh(signed), lookup, policy, 5, reference=True), n)))
    return [*rows,
            (job, "adapter verify_dkim", per_message_ms(
                lambda: adapter.verify_dkim(fresh(signed), lookup, policy, 5), n)),
            (job, "pipeline process()", pipeline_ms(
                '[[filter]]\nuse = "dkim-verify"\n', signed, services, Envelope(), n,
                expect="dkim=pass"))]


def main() -> int:
    """Measure every row and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-n", type=int, default=500, help="iterations per row (default 500)")
    n = parser.parse_args().n
    tmp = Path(tempfile.mkdtemp(prefix="dkim-speed-"))
    print(f"{len(message_4k())}-byte message, {n} iterations per row, CPU ms per message",
          flush=True)
    rows: list[Row] = []
    for kind, pem, sel in (("rsa", _rsa_pem(2048), "rsa2026"),
                           ("ed25519", adapter.generate_ed25519(), "ed2026")):
        rows += sign_rows(kind, pem, sel, tmp, n)
        rows += verify_rows(kind, pem, sel, n)
        print(f"  {kind}: done", file=sys.stderr, flush=True)
    print_table(rows)
    return 0


def print_table(rows: list[Row]) -> None:
    """One line per row; ratio to the dkimpy row of the same job."""
    base = {job: ms for job, impl, ms in rows if impl.startswith("dkimpy dkim.")}
    print(f"{'job':<16} {'implementation':<24} {'ms/msg':>8} {'vs dkimpy':>10}")
    for job, impl, ms in rows:
        print(f"{job:<16} {impl:<24} {ms:8.3f} {base[job] / ms:9.2f}x")


if __name__ == "__main__":
    sys.exit(main())
