#!/usr/bin/env python3
"""CPU per message of DKIM signing and verification: dkimpy alone, rohrpost's adapter, the
``dkim-sign``/``dkim-verify`` filters, and a whole pipeline run (``rohrpost.runner.process``).

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

from rohrpost.cli.dkimcmd import _rsa_pem  # noqa: E402
from rohrpost.config import parse_config  # noqa: E402
from rohrpost.dns import DnsAnswer  # noqa: E402
from rohrpost.envelope import Envelope  # noqa: E402
from rohrpost.filter import Services  # noqa: E402
from rohrpost.filters import _dkim_adapter as adapter  # noqa: E402
from rohrpost.filters.dkim_sign import DkimSign, DkimSignOptions  # noqa: E402
from rohrpost.message import Message  # noqa: E402
from rohrpost.pipeline import Pipeline  # noqa: E402
from rohrpost.runner import process  # noqa: E402

NOW = 1_770_000_000
DOMAIN = "example.org"
INCLUDE = ["from", "to", "subject", "date", "message-id", "mime-version", "content-type"]


def message_4k() -> bytes:
    """A plain 4 KB message (about 600 bytes of headers, the rest body text)."""
    head = (
        "Received: from client.example.org (client.example.org [192.0.2.10])\r\n"
        "\tby mx.example.org (Postfix) with ESMTPSA id 4Zk3Yq1Vx2z\r\n"
        "\tfor <alice@example.net>; Mon, 2 Feb 2026 10:00:00 +0000 (UTC)\r\n"
        "From: Bob Example <bob@example.org>\r\nTo: Alice <alice@example.net>\r\n"
        "Cc: Carol <carol@example.net>, Dave <dave@example.com>\r\n"
        "Subject: Quarterly numbers and the plan for the next meeting\r\n"
        "Date: Mon, 2 Feb 2026 10:00:00 +0000\r\n"
        "Message-ID: <20260202100000.4Zk3Yq1Vx2z@example.org>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\nUser-Agent: Example Mail 1.2\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, and the numbers look fine.  \r\n"
    body = b""
    while len(head) + len(body) + len(line) <= 4096:
        body += line
    return head + body + b"-- \r\nBob\r\n"


def per_message_ms(fn: Callable[[], object], n: int) -> float:
    """CPU milliseconds per call of ``fn``, over ``n`` calls after a warm-up."""
    for _ in range(min(20, n)):
        fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) * 1000 / n


def pipeline_ms(toml: str, raw: bytes, services: Services, envelope: Envelope, n: int) -> float:
    """CPU ms per message of ``runner.process`` with ``toml``'s pipeline, in one event loop."""
    pipeline = Pipeline.build(parse_config(toml, "speed.toml"))

    async def many(count: int) -> None:
        for _ in range(count):
            await process(pipeline, services, envelope, Message(raw))

    asyncio.run(many(min(20, n)))
    start = time.process_time()
    asyncio.run(many(n))
    return (time.process_time() - start) * 1000 / n


class DictResolver:
    """Stands in for ``rohrpost.dns.Resolver``: TXT answers from a dict, no network."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records

    def query_sync(self, name: str, rdtype: str) -> DnsAnswer:
        value = self.records.get(name.rstrip("."))
        return DnsAnswer(name, rdtype, (value,) if value else (), 300, value is None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=500, help="iterations per row (default 500)")
    n = parser.parse_args().n
    raw = message_4k()
    tmp = Path(tempfile.mkdtemp(prefix="dkim-speed-"))
    pems = {"rsa": _rsa_pem(2048), "ed25519": adapter.generate_ed25519()}
    selectors = {"rsa": "rsa2026", "ed25519": "ed2026"}
    keys = {kind: adapter.load_private_key(pem) for kind, pem in pems.items()}
    records = {f"{selectors[k]}._domainkey.{DOMAIN}": adapter.key_record(keys[k]) for k in keys}
    has_reference = "reference" in inspect.signature(adapter.sign_dkim).parameters
    rows: list[tuple[str, str, float]] = []
    print(f"{len(raw)}-byte message, {n} iterations per row, CPU ms per message", flush=True)

    for kind, pem in pems.items():
        sel, job = selectors[kind], f"sign {kind}" + ("-2048" if kind == "rsa" else "")
        keyfile = tmp / f"{sel}.pem"
        keyfile.write_bytes(pem)
        keyfile.chmod(0o600)
        # dkimpy reads Ed25519 keys only as the bare base64 seed (dknewkey's format)
        dk_key = pem if kind == "rsa" else base64.b64encode(
            base64.b64decode(b"".join(pem.splitlines()[1:-1]))[-32:])
        algo = b"rsa-sha256" if kind == "rsa" else b"ed25519-sha256"
        inc = [h.encode() for h in INCLUDE]
        rows.append((job, "dkimpy dkim.sign", per_message_ms(lambda dk_key=dk_key, algo=algo: dkim.sign(
            raw, sel.encode(), DOMAIN.encode(), dk_key, signature_algorithm=algo,
            canonicalize=(b"relaxed", b"relaxed"), include_headers=inc), n)))
        key = keys[kind]
        parsed = adapter.parse_message(raw)
        kw: dict[str, Any] = {"domain": DOMAIN, "selector": sel, "key": key,
                              "headers": INCLUDE, "timestamp": NOW}
        if has_reference:
            rows.append((job, "adapter, dkimpy RSA" if kind == "rsa" else "adapter, PyNaCl",
                         per_message_ms(lambda kw=kw: adapter.sign_dkim(
                             adapter.parse_message(raw), reference=True, **kw), n)))
        rows.append((job, "adapter", per_message_ms(
            lambda kw=kw: adapter.sign_dkim(adapter.parse_message(raw), **kw), n)))
        rows.append((job, "adapter, pre-parsed", per_message_ms(
            lambda kw=kw, parsed=parsed: adapter.sign_dkim(parsed, **kw), n)))
        opts = DkimSignOptions(key=[_spec(DOMAIN, sel, keyfile)])
        flt = DkimSign(opts)
        msg = Message(raw)
        rows.append((job, "filter DkimSign._sign", per_message_ms(
            lambda flt=flt, msg=msg: flt._sign(msg, flt.keys, NOW), n)))
        toml = (f'[[filter]]\nuse = "dkim-sign"\n[[filter.key]]\ndomain = "{DOMAIN}"\n'
                f'selector = "{sel}"\nkey = "{keyfile}"\n')
        rows.append((job, "pipeline process()", pipeline_ms(
            toml, raw, Services(clock=lambda: float(NOW)), Envelope(auth_user="bob"), n)))

        signed = ("DKIM-Signature: " + adapter.sign_dkim(parsed, **kw) + "\r\n").encode() + raw
        job = job.replace("sign", "verify")

        def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
            del timeout
            value = records.get(name.decode().rstrip("."))
            return value.encode() if value else None

        assert dkim.verify(signed, dnsfunc=dnsfunc), "dkimpy does not verify our signature"
        rows.append((job, "dkimpy dkim.verify", per_message_ms(
            lambda signed=signed: dkim.verify(signed, dnsfunc=dnsfunc), n)))
        policy = adapter.VerifyPolicy(now=NOW)

        def lookup(name: str) -> list[str]:
            value = records.get(name)
            return [value] if value else []

        res, _found = adapter.verify_dkim(signed, lookup, policy, 5)
        assert [r.result for r in res] == ["pass"], res
        rows.append((job, "adapter verify_dkim", per_message_ms(
            lambda signed=signed: adapter.verify_dkim(signed, lookup, policy, 5), n)))
        resolver: Any = DictResolver(records)
        services = Services(resolver_factory=lambda resolver=resolver: resolver,
                            clock=lambda: float(NOW))
        rows.append((job, "pipeline process()", pipeline_ms(
            '[[filter]]\nuse = "dkim-verify"\n', signed, services, Envelope(), n)))
        print(f"  {job}: done", file=sys.stderr, flush=True)

    print_table(rows)
    return 0


def _spec(domain: str, selector: str, path: Path) -> Any:
    from rohrpost.filters._dkim_keys import KeySpec

    return KeySpec(domain=domain, selector=selector, key=str(path))


def print_table(rows: list[tuple[str, str, float]]) -> None:
    """One line per row; ratio to the dkimpy row of the same job."""
    base = {job: ms for job, impl, ms in rows if impl.startswith("dkimpy dkim.")}
    print(f"{'job':<16} {'implementation':<24} {'ms/msg':>8} {'vs dkimpy':>10}")
    for job, impl, ms in rows:
        print(f"{job:<16} {impl:<24} {ms:8.3f} {base[job] / ms:9.2f}x")


if __name__ == "__main__":
    sys.exit(main())
