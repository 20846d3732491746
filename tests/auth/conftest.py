"""Fixtures of the authentication tests: the DMARC test zone on a loopback DNS server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dnsserver import TestDnsServer

#: The fake DNS of the authheaders DMARC vectors (testdata/dmarc-authheaders/SOURCE.md), plus
#: records for the alignment, pct, report and hostile cases of our own tests.
DMARC_ZONE: list[tuple[str, str, str | None]] = [
    ("_dmarc.example.com", "TXT",
     "v=DMARC1; p=reject; rua=mailto:dmarc-rua@example.com; ruf=mailto:dmarc-ruf@example.com"),
    ("_dmarc.example.org", "TXT", "v=DMARC1; p=none"),
    ("_dmarc.example.net", "TXT", "v=DMARC1; p=none; sp=reject"),
    ("_dmarc.example.biz", "TXT", "v=DMARC1; p=none; sp=quarantine; np=reject"),
    ("_dmarc.nop.example.org", "TXT", "v=DMARC1; sp=quarantine; np=reject"),
    ("_dmarc.bad.example.com", "TXT", "v=DMARC1; p=none; reject"),
    ("_dmarc.gov", "TXT", "v=DMARC1; p=reject; sp=none; np=reject; psd=y"),
    ("_dmarc.sub.example.net", "TXT", None),
    ("_dmarc.sub.example.biz", "TXT", None),
    ("_dmarc.sub2.example.biz", "TXT", None),
    ("_dmarc.example.gov", "TXT", None),
    ("example.gov", "TXT", None),
    ("sub2.example.biz", "A", "192.0.2.1"),
    # our own cases
    ("_dmarc.strict.test", "TXT", "v=DMARC1; p=reject; adkim=s; aspf=s"),
    ("_dmarc.relaxed.test", "TXT", "v=DMARC1; p=quarantine"),
    ("_dmarc.half.test", "TXT", "v=DMARC1; p=reject; pct=50"),
    ("_dmarc.zero.test", "TXT", "v=DMARC1; p=reject; pct=0"),
    ("_dmarc.testing.test", "TXT", "v=DMARC1; p=reject; t=y"),
    ("_dmarc.co.uk", "TXT", None),
    ("_dmarc.shop.co.uk", "TXT", "v=DMARC1; p=reject; rua=mailto:agg@reports.example.net"),
    ("_dmarc.slow.test", "TXT", "v=DMARC1; p=reject"),
    ("_dmarc.two.test", "TXT", "v=DMARC1; p=reject"),
    ("_dmarc.two.test", "TXT", "v=DMARC1; p=none"),
    ("_dmarc.report.test", "TXT",
     "v=DMARC1; p=none; rua=mailto:agg@report.test,mailto:ext@thirdparty.example,"
     "mailto:unverified@elsewhere.example"),
    ("report.test._report._dmarc.thirdparty.example", "TXT", "v=DMARC1"),
    ("_dmarc.stranger.test", "TXT", "v=DMARC1; p=none; rua=mailto:agg@stranger.test"),
    ("report.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
    ("stranger.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
    ("relaxed.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
    ("bounce.relaxed.test", "TXT", "v=spf1 ip4:192.0.2.0/24 -all"),
]


@pytest.fixture(scope="session")
def dmarc_dns() -> Iterator[TestDnsServer]:
    """A loopback DNS server with ``DMARC_ZONE``; ``timeout.test`` never answers."""
    server = TestDnsServer()
    for name, rdtype, value in DMARC_ZONE:
        server.add(name, rdtype, value)
    server.set_behaviour("_dmarc.timeout.test", "timeout")
    server.set_behaviour("_dmarc.deep.timeout.test", "timeout")
    server.start()
    yield server
    server.stop()
    assert not server.errors, server.errors
