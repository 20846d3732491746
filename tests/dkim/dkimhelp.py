"""Helpers for the DKIM/ARC tests: data paths, a resolver on the test DNS server, key files,
and running a pipeline from TOML text through ``rohrpost.runner.process``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from rohrpost.config import parse_config
from rohrpost.dns import DnsConfig, Resolver
from rohrpost.envelope import Envelope
from rohrpost.filter import Services
from rohrpost.filters import _dkim_adapter as adapter
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.runner import Processed, process
from tests.support.dnsserver import TestDnsServer

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = Path(os.environ.get("ROHRPOST_TESTDATA", ROOT.parent / "shared" / "testdata"))
CHASQUID = TESTDATA / "dkim" / "chasquid-testdata"
DKIMPY = TESTDATA / "dkim" / "dkimpy-data"
ARC = TESTDATA / "arc"
NOW = 1_770_000_000.0  # fixed clock for signing tests (2026-02-02)


def read_linked(path: Path) -> bytes:
    """Read a file, following a git symlink stored as a one-line file naming its target."""
    data = path.read_bytes()
    target = path.parent / data.decode("latin-1").strip()
    if b"\n" not in data.strip() and len(data) < 200 and target.is_file():
        return target.read_bytes()
    return data


def make_services(server: TestDnsServer, clock: Callable[[], float] | None = None) -> Services:
    return Services(resolver_factory=lambda: Resolver(DnsConfig(servers=(server.address,),
                                                                timeout=2.0)),
                    clock=clock)


def run(toml: str, raw: bytes, services: Services, envelope: Envelope | None = None) -> Processed:
    pipeline = Pipeline.build(parse_config(toml, "test.toml"))
    return asyncio.run(process(pipeline, services, envelope or Envelope(), Message(raw)))


def write_key(folder: Path, name: str, pem: bytes) -> Path:
    path = folder / name
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


VERIFY_TOML = '''
[pipeline]
authserv_id = "mx.example.net"
[[filter]]
use = "dkim-verify"
'''

MESSAGE = (b"From: Bob <bob@example.org>\r\nTo: Alice <alice@example.net>\r\n"
           b"Subject: Lunch?\r\nDate: Mon, 2 Feb 2026 10:00:00 +0000\r\n"
           b"Message-ID: <1@example.org>\r\n\r\nShall we?\r\n-- \r\nBob\r\n")
