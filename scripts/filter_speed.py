#!/usr/bin/env python3
r"""CPU per message of the authentication filters: dkim-verify, arc-verify, spf, dmarc.

The library call each filter makes, and whole pipeline runs (``rohrpost.runner.process``) with
one filter, spf+dmarc (the bench's DMARC row) and the chain spf+dkim-verify+arc-verify+dmarc,
side by side in one process.

    .venv/bin/python scripts/filter_speed.py [-n 400] [-r 3] [--only spf,chain] [--profile]

Deterministic instruction counts per message (this machine is noisy): run one row under
callgrind with two message counts and divide the difference, e.g.

    valgrind --tool=callgrind --callgrind-out-file=a.out .venv/bin/python \
        scripts/filter_speed.py --only chain:process -n 50 -r 1     # and -n 250 -> b.out
    # (Ir(b) - Ir(a)) / 200 = instructions per message, every thread included

Each row is ``time.process_time()`` (CPU of every thread of this process: the event loop, the
executor's worker threads, SQLite's fsync) over ``-n`` messages after a warm-up, repeated
``-r`` times; the table shows the median and the spread (half the range, in % of the median).
DNS is a loopback ``TestDnsServer`` (tests/support/dnsserver.py) behind the real
``rohrpost.dns.Resolver``; every answer is cached by the warm-up, so the rows measure the
cache-hit path, as a busy MX sees it (the script checks that no query missed the cache while
timing). The key is a fresh RSA-2048 key (openssl); the messages are the 4 KB message of
scripts/dkim_speed.py, signed relaxed/relaxed, and the same message with one ARC set sealed
over it (``arc-verify``, sealed rows). Report collection writes to SQLite in a temporary
directory with ``[state] synchronous`` at its default, ``"full"``, as in finding 18; the
``no reports`` rows set ``collect_reports = false``. The machine is shared and noisy: compare
rows of one run, not numbers across runs. A developer's measuring stick for the filters' own
cost, not the benchmark of issue 6 (bench/), which adds the milter protocol and Postfix.

Rows:
  dkimpy code   ``verify_dkim``/``arc_verify`` with ``reference=True``: dkimpy's own classes
                and pure-Python RSA, as before finding 20 (trees that have the parameter)
  adapter       the function the filter calls, outside any event loop (``verify_dkim``,
                ``arc_verify``, ``check_host`` for HELO and MAIL FROM)
  pipeline      ``rohrpost.runner.process`` with those filters, many messages in one loop
  baseline      ``process`` with the ``size`` filter only: the runner's own cost per message,
                to subtract from the pipeline rows
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from dkim_speed import message_4k  # noqa: E402
from rohrpost.filters import _dkim_adapter as adapter  # noqa: E402

from rohrpost.cli.dkimcmd import _rsa_pem  # noqa: E402
from rohrpost.config import parse_config  # noqa: E402
from rohrpost.envelope import Envelope  # noqa: E402
from rohrpost.filter import Services  # noqa: E402
from rohrpost.message import Message  # noqa: E402
from rohrpost.pipeline import Pipeline  # noqa: E402
from rohrpost.runner import process  # noqa: E402
from rohrpost.services import make_services  # noqa: E402
from tests.support.dnsserver import TestDnsServer  # noqa: E402

NOW = 1_770_000_000
DOMAIN = "example.org"
SEALER = "lists.example.net"
CLIENT_IP = "192.0.2.10"
HELO = "client.example.org"
SENDER = "bob@example.org"
SELECTOR = "rsa2026"
INCLUDE = ["from", "to", "subject", "date", "message-id", "mime-version", "content-type"]
Row = tuple[str, str, list[float]]
ENVELOPE = Envelope(client_ip=CLIENT_IP, client_name=HELO, helo=HELO, mail_from=SENDER,
                    rcpts=("alice@example.net",), queue_id="SPEED")

_SPF = 'use = "spf"\nskip_trusted_networks = false\nskip_authenticated = false\n'
_DMARC = 'use = "dmarc"\nskip_trusted_networks = false\n'
_DMARC_NOREP = _DMARC + "collect_reports = false\n"
#: pipeline rows: (job, label, the [[filter]] bodies in order, message kind, the results that
#: prove the filters did their work: checked once before timing, so no row times an error)
_CHAIN = [_SPF, 'use = "dkim-verify"\n', 'use = "arc-verify"\n', _DMARC]
PIPELINES: list[tuple[str, str, list[str], str, tuple[str, ...]]] = [
    ("baseline", "pipeline process()", ['use = "size"\n'], "signed", ()),
    ("dkim-verify", "pipeline process()", ['use = "dkim-verify"\n'], "signed", ("dkim=pass",)),
    ("arc-verify", "pipeline process()", ['use = "arc-verify"\n'], "signed", ("arc=none",)),
    ("arc-verify sealed", "pipeline process()", ['use = "arc-verify"\n'], "sealed",
     ("arc=pass",)),
    ("spf", "pipeline process()", [_SPF], "signed", ("spf=pass", "spf=pass")),
    ("dmarc", "pipeline process()", [_DMARC], "signed", ("dmarc=fail",)),
    ("dmarc", "pipeline, no reports", [_DMARC_NOREP], "signed", ("dmarc=fail",)),
    ("spf+dmarc", "pipeline process()", [_SPF, _DMARC], "signed",
     ("spf=pass", "spf=pass", "dmarc=pass")),
    ("spf+dmarc", "pipeline, no reports", [_SPF, _DMARC_NOREP], "signed",
     ("spf=pass", "spf=pass", "dmarc=pass")),
    ("chain", "pipeline process()", _CHAIN, "signed",
     ("spf=pass", "spf=pass", "dkim=pass", "arc=none", "dmarc=pass")),
    ("chain sealed", "pipeline process()", _CHAIN, "sealed",
     ("spf=pass", "spf=pass", "dkim=pass", "arc=pass", "dmarc=pass")),
]


class Fixture:
    """Key, messages, the loopback DNS server and the state directory of one run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.key = adapter.load_private_key(_rsa_pem(2048))
        raw = message_4k().replace(b"Bob Example <bob@example.org>", b"Bob <" + SENDER.encode()
                                   + b">")
        value = adapter.sign_dkim(adapter.parse_message(raw), domain=DOMAIN, selector=SELECTOR,
                                  key=self.key, headers=INCLUDE, timestamp=NOW)
        self.signed = f"DKIM-Signature: {value}\r\n".encode() + raw
        ar = (f"Authentication-Results: {SEALER}; dkim=pass header.d={DOMAIN}; "
              f"spf=pass smtp.mailfrom={SENDER}\r\n").encode()
        arc = adapter.arc_seal(ar + self.signed, domain=SEALER, selector=SELECTOR, key=self.key,
                               srv_id=SEALER, timestamp=NOW)
        self.sealed = b"".join(f"{n}: {v}\r\n".encode() for n, v in arc) + self.signed
        record = adapter.key_record(self.key)
        self.zones = {
            f"{DOMAIN}.": [
                (f"{SELECTOR}._domainkey", "TXT", record),
                ("@", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
                ("@", "A", CLIENT_IP), ("@", "MX", f"10 mx.{DOMAIN}."), ("mx", "A", CLIENT_IP),
                ("_dmarc", "TXT", "v=DMARC1; p=reject; adkim=r; aspf=r; rua=mailto:d@example.org"),
                ("client", "A", CLIENT_IP), ("client", "TXT", "v=spf1 a -all"),
            ],
            f"{SEALER}.": [(f"{SELECTOR}._domainkey", "TXT", record)],
        }
        self.records = {f"{SELECTOR}._domainkey.{d.rstrip('.')}": record for d in self.zones}

    def message(self, kind: str) -> bytes:
        """The signed message, or the signed and ARC-sealed one."""
        return self.sealed if kind == "sealed" else self.signed

    def config_text(self, server: TestDnsServer, filters: list[str]) -> str:
        """A pipeline.toml: our DNS server, SQLite state in the temporary directory."""
        head = (f'[pipeline]\nauthserv_id = "mx.example.net"\nvar_dir = "{self.tmp}"\n'
                'on_error = "tempfail"\n'
                f'[dns]\nservers = ["{server.address}"]\ntimeout = 2.0\n'
                f'[state]\nbackend = "sqlite"\npath = "{self.tmp / "state.sqlite"}"\n')
        return head + "".join(f"[[filter]]\n{body}" for body in filters)


def fresh(raw: bytes) -> bytes:
    """A new bytes object with ``raw``'s content, as every received message is.

    The DKIM verifier keeps the split of the last message object it saw, for arc-verify.
    """
    return bytes(bytearray(raw))


def cpu_ms(fn: Callable[[int], object], n: int, repeats: int) -> list[float]:
    """CPU ms per message of ``fn(n)`` (which handles ``n`` messages), ``repeats`` times."""
    fn(min(20, n))
    out = []
    for _ in range(repeats):
        start = time.process_time()
        fn(n)
        out.append((time.process_time() - start) * 1000 / n)
    return out


def adapter_rows(fx: Fixture, server: TestDnsServer, n: int, repeats: int) -> list[Row]:
    """The library calls, outside an event loop (key records from a dict, DNS cached)."""
    from rohrpost.filters._spf_adapter import check_host

    from rohrpost.dns import DnsConfig, Resolver

    records = fx.records

    def lookup(name: str) -> list[str]:
        return [records[name]] if name in records else []

    policy = adapter.VerifyPolicy(now=NOW)
    assert [r.result for r in adapter.verify_dkim(fx.signed, lookup, policy, 5)[0]] == ["pass"]
    assert adapter.arc_verify(fx.sealed, lookup).cv == "pass"
    assert adapter.arc_verify(fx.signed, lookup).cv == "none"
    resolver = Resolver(DnsConfig(servers=(server.address,)))

    def spf(count: int) -> None:
        for _ in range(count):
            check_host(resolver, CLIENT_IP, "", HELO)
            check_host(resolver, CLIENT_IP, SENDER, HELO)

    assert check_host(resolver, CLIENT_IP, SENDER, HELO).result == "pass"
    # trees with the fast path keep dkimpy's own code as ``reference=True``
    ref: list[dict[str, bool]] = [{"reference": True}, {}] if "reference" in \
        inspect.signature(adapter.verify_dkim).parameters else [{}]
    rows: list[Row] = []
    for kw in ref:
        label = "dkimpy code" if kw else "adapter"
        rows += [
            ("dkim-verify", f"{label} verify_dkim", cpu_ms(lambda c, kw=kw: [
                adapter.verify_dkim(fresh(fx.signed), lookup, policy, 5, **kw)
                for _ in range(c)], n, repeats)),
            ("arc-verify", f"{label} arc_verify", cpu_ms(lambda c, kw=kw: [
                adapter.arc_verify(fresh(fx.signed), lookup, **kw) for _ in range(c)],
                n, repeats)),
            ("arc-verify sealed", f"{label} arc_verify", cpu_ms(lambda c, kw=kw: [
                adapter.arc_verify(fresh(fx.sealed), lookup, **kw) for _ in range(c)],
                n, repeats)),
        ]
    rows.append(("spf", "adapter check_host x2", cpu_ms(spf, n, repeats)))
    return sorted(rows, key=lambda r: ["dkim-verify", "arc-verify", "arc-verify sealed",
                                       "spf"].index(r[0]))


def pipeline_rows(fx: Fixture, server: TestDnsServer, n: int, repeats: int, *,
                  only: set[str], profile: Path | None) -> list[Row]:
    """``runner.process`` for every configured pipeline, each in its own event loop."""
    rows: list[Row] = []
    for job, label, filters, kind, expect in PIPELINES:
        if only and not any(_selects(o, job, label) for o in only):
            continue
        config = parse_config(fx.config_text(server, filters), "speed.toml")
        pipeline = Pipeline.build(config)
        services = make_services(config, clock=lambda: float(NOW))
        raw = fx.message(kind)
        rows.append((job, label, run_pipeline(pipeline, services, raw, n, repeats,
                                              profile=profile, name=f"{job}-{label}",
                                              expect=expect)))
    return rows


def _selects(only: str, job: str, label: str) -> bool:
    """``spf`` selects every spf row, ``spf+dmarc:no reports`` one row: that job's, by label."""
    name, sep, text = only.partition(":")
    if sep:
        return name == job and text in label
    return name in (job, job.split(maxsplit=1)[0])


def run_pipeline(pipeline: Pipeline, services: Services, raw: bytes, n: int, repeats: int, *,
                 profile: Path | None, name: str, expect: tuple[str, ...]) -> list[float]:
    """CPU ms per message of ``process`` in one event loop; no DNS miss while timing.

    :raises AssertionError: when a message does not get the ``expect`` results (each one a
        prefix of a rendered Authentication-Results entry, in order).
    """
    out: list[float] = []

    async def many(count: int) -> None:
        for _ in range(count):
            await process(pipeline, services, ENVELOPE, Message(fresh(raw)))

    async def main() -> None:
        done = await process(pipeline, services, ENVELOPE, Message(fresh(raw)))
        got = [a.render() for a in done.outcome.auth]
        assert len(got) == len(expect) and all(
            g.startswith(e) for g, e in zip(got, expect, strict=True)), (name, got)
        await many(min(20, n))
        misses = _misses(services)
        for _ in range(repeats):
            start = time.process_time()
            await many(n)
            out.append((time.process_time() - start) * 1000 / n)
        if _misses(services) != misses:
            print(f"  warning: {name}: DNS cache misses while timing", file=sys.stderr)
        if profile is not None:
            prof = cProfile.Profile()
            prof.enable()
            await many(n)
            prof.disable()
            path = profile / (name.replace(" ", "_").replace("()", "") + ".prof")
            prof.dump_stats(str(path))
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(12)
        await services.aclose()

    asyncio.run(main())
    return out


def _misses(services: Services) -> int:
    resolver: Any = services._resolver  # only count, never create one
    return int(resolver.stats()["misses"]) if resolver is not None else 0


def print_table(rows: list[Row]) -> None:
    """One line per row: median, spread, and minus the baseline for pipeline rows."""
    base = next((statistics.median(v) for j, _l, v in rows if j == "baseline"), None)
    print(f"{'job':<18} {'implementation':<24} {'ms/msg':>8} {'spread':>7} {'- baseline':>10}")
    for job, label, values in rows:
        med = statistics.median(values)
        spread = (max(values) - min(values)) / 2 / med * 100 if med else 0.0
        net = f"{med - base:10.3f}" if base is not None and label.startswith("pipeline") \
            and job != "baseline" else ""
        print(f"{job:<18} {label:<24} {med:8.3f} {spread:6.0f}% {net}")


def main() -> int:
    """Measure every row and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("-n", type=int, default=400, help="messages per timing (default 400)")
    parser.add_argument("-r", type=int, default=3, help="timings per row (default 3)")
    parser.add_argument("--only", default="", help="comma-separated jobs (pipeline rows only), "
                        "e.g. spf,chain, or JOB:LABEL-TEXT for one row (chain:process, "
                        "'dmarc:no reports'); 'adapter' for the adapter rows only")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one more run of each pipeline row (files in a temp dir)")
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    tmp = Path(tempfile.mkdtemp(prefix="filter-speed-"))
    fx = Fixture(tmp)
    print(f"{len(fx.signed)}-byte signed message, {args.n} messages x {args.r} timings per "
          "row, CPU ms per message (median)", flush=True)
    rows: list[Row] = []
    with TestDnsServer(fx.zones) as server:
        if not only or "adapter" in only:
            rows += adapter_rows(fx, server, args.n, args.r)
        if only != {"adapter"}:
            rows += pipeline_rows(fx, server, args.n, args.r, only=only - {"adapter"},
                                  profile=tmp if args.profile else None)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
