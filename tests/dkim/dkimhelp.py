"""Helpers for the DKIM/ARC tests: data paths, a resolver on the test DNS server, key files,
and running a pipeline from TOML text through ``rohrpost.runner.process``."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import dkim

from rohrpost.config import parse_config
from rohrpost.dns import DnsConfig, Resolver
from rohrpost.envelope import Envelope
from rohrpost.filter import Services
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


def dkimpy_verify(raw: bytes, records: dict[str, str]) -> list[bool]:
    """dkimpy's own verifier (what its ``dkimverify`` script runs) on every signature."""
    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    d = dkim.DKIM(raw)
    count = sum(1 for n, _v in d.headers if n.lower() == b"dkim-signature")
    return [bool(dkim.DKIM(raw).verify(idx=i, dnsfunc=dnsfunc)) for i in range(count)]


OPENDKIM_DNS_HOST = "127.0.0.153"


def opendkim_testmsg(raw: bytes, records: dict[str, str], tmp: Path,
                     args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[bytes]:
    """Run OpenDKIM's ``opendkim-testmsg`` offline.

    libopendkim asks the resolver of /etc/resolv.conf on port 53 and has no option for another
    server, so it runs in a private mount namespace (``unshare -m``) where a resolv.conf naming
    a loopback address is bind-mounted over /etc/resolv.conf, and the test DNS server listens on
    that address, port 53 (we are root). Nothing outside the namespace changes.
    """
    why = opendkim_usable()
    assert not why, why  # make test installs opendkim-tools; never skipped
    resolv = tmp / "resolv.conf"
    resolv.write_text(f"nameserver {OPENDKIM_DNS_HOST}\noptions attempts:1 timeout:2\n")
    script = f"mount --bind {resolv} /etc/resolv.conf && exec opendkim-testmsg \"$@\""
    with TestDnsServer(host=OPENDKIM_DNS_HOST, port=53) as server:
        for name, value in records.items():
            server.add(name, "TXT", value)
        return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *args],
                              input=raw, capture_output=True, timeout=60, check=False)


def opendkim_usable() -> str:
    """Empty when opendkim-testmsg can run offline here, else why not."""
    if shutil.which("opendkim-testmsg") is None:
        return "opendkim-testmsg missing (Debian opendkim-tools; scripts/install-deps.sh)"
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "needs root and unshare for a private resolv.conf"
    return ""


def opendkim_sign(raw: bytes, tmp: Path, *, domain: str, selector: str, key: Path,
                  algorithm: str) -> bytes:
    """Sign with the OpenDKIM filter itself in test mode (``opendkim -t``), offline.

    ``opendkim-testmsg`` signs only with libopendkim's default rsa-sha1; ``opendkim -b s -t``
    honours SignatureAlgorithm (rsa-sha256, ed25519-sha256) and prints the header it would
    insert. Returns the message with that header on top.
    """
    why = opendkim_usable()
    assert not why, why  # make test installs opendkim-tools; never skipped
    conf = tmp / f"opendkim-{selector}.conf"
    conf.write_text(f"Mode s\nDomain {domain}\nSelector {selector}\nKeyFile {key}\n"
                    f"SignatureAlgorithm {algorithm}\nCanonicalization relaxed/relaxed\n"
                    "Syslog no\nRequireSafeKeys no\n")
    msg = tmp / "to-sign.eml"
    msg.write_bytes(raw)
    done = subprocess.run(["opendkim", "-x", str(conf), "-b", "s", "-t", str(msg)],
                          capture_output=True, timeout=60, check=True)
    text = (done.stdout + done.stderr).decode()
    lines = text[text.index("DKIM-Signature:"):].splitlines()
    header = [lines[0], *_continuations(lines[1:])]
    return ("\r\n".join(header) + "\r\n").encode() + raw


def _continuations(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if not line[:1].isspace():
            break
        out.append(line)
    return out
