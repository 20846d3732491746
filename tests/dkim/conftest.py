"""Fixtures for the DKIM/ARC tests: signing keys on disk and published in the test DNS."""

from __future__ import annotations

from pathlib import Path

import pytest
from rohrpost.filters import _dkim_adapter as adapter

from rohrpost.cli.dkimcmd import _rsa_pem
from tests.dkim.dkimhelp import write_key
from tests.support.dnsserver import TestDnsServer


@pytest.fixture(scope="session")
def rsa_pem() -> bytes:
    """One 2048-bit RSA key for the session (openssl genpkey, as keygen does)."""
    return _rsa_pem(2048)


@pytest.fixture(scope="session")
def ed_pem() -> bytes:
    return adapter.generate_ed25519()


@pytest.fixture
def signing(tmp_path: Path, dns_server: TestDnsServer, rsa_pem: bytes,
            ed_pem: bytes) -> dict[str, object]:
    """Keys on disk, published in the test DNS server, and the contract TOML using them."""
    rsa = write_key(tmp_path, "example.org.rsa2026.pem", rsa_pem)
    ed = write_key(tmp_path, "example.org.ed2026.pem", ed_pem)
    for sel, pem in (("rsa2026", rsa_pem), ("ed2026", ed_pem)):
        dns_server.add(f"{sel}._domainkey.example.org", "TXT",
                       adapter.key_record(adapter.load_private_key(pem)))
    toml = f'''
[pipeline]
authserv_id = "mx.example.net"
[dns]
servers = ["{dns_server.address}"]
[[filter]]
use = "dkim-sign"               # signs only authenticated or trusted-network mail
trusted_networks = ["127.0.0.0/8"]
[[filter.key]]
domain = "example.org"
selector = "rsa2026"
key = "{rsa}"
[[filter.key]]
domain = "example.org"
selector = "ed2026"
key = "{ed}"
'''
    return {"toml": toml, "rsa": rsa, "ed": ed, "dir": tmp_path}


