"""The test DNS server itself: zones, loaders for the shared test data, truncation, IPv6."""

from __future__ import annotations

import socket
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import pytest

from rohrpost.dns import DnsConfig, DnsTempError, Resolver
from tests.support.dnsserver import TestDnsServer

CHASQUID = Path("/work/shared/testdata/dkim/chasquid-testdata")
SPF_SUITES = Path("/work/shared/testdata/spf")


def resolver_for(server: TestDnsServer, timeout: float = 2.0) -> Resolver:
    return Resolver(DnsConfig(servers=(server.address,), timeout=timeout))


def test_zones_constructor_names():
    zones = {
        "example.org": [
            ("@", "TXT", '"v=spf1 -all"'),
            ("www", "A", "192.0.2.1"),
            ("mail.example.org", "A", "192.0.2.2"),
            ("other.test.", "A", "192.0.2.3"),
        ]
    }
    with TestDnsServer(zones) as server:
        r = resolver_for(server)
        assert r.query_sync("example.org", "TXT").records == ("v=spf1 -all",)
        assert r.query_sync("www.example.org", "A").records == ("192.0.2.1",)
        assert r.query_sync("mail.example.org", "A").records == ("192.0.2.2",)
        assert r.query_sync("other.test", "A").records == ("192.0.2.3",)


def test_remove(dns_server):
    dns_server.add("example.org", "A", "192.0.2.1")
    dns_server.add("example.org", "TXT", "x")
    dns_server.remove("example.org", "A")
    r = Resolver(DnsConfig(servers=(dns_server.address,), cache_size=0))
    assert r.query_sync("example.org", "A").records == ()
    dns_server.remove("example.org")
    assert r.query_sync("example.org", "TXT").nxdomain


def test_udp_without_edns_truncates_over_512_bytes(dns_server):
    dns_server.add("example.org", "TXT", "x" * 600)
    port = int(dns_server.address.rsplit(":", 1)[1])
    query = dns.message.make_query("example.org", "TXT", use_edns=False)
    reply = dns.query.udp(query, "127.0.0.1", port=port, timeout=2)
    assert reply.flags & dns.flags.TC and not reply.answer
    reply = dns.query.tcp(query, "127.0.0.1", port=port, timeout=2)
    assert b"".join(reply.answer[0][0].strings) == b"x" * 600
    assert [len(s) for s in reply.answer[0][0].strings] == [255, 255, 90]


def test_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with TestDnsServer(host="::1") as server:
        server.add("example.org", "AAAA", "2001:db8::5")
        assert server.address.startswith("[::1]:")
        assert resolver_for(server).query_sync("example.org", "AAAA").records == ("2001:db8::5",)


# -- chasquid .dns files ---------------------------------------------------------------------


def test_chasquid_dns_continuations_and_symlink(dns_server):
    dns_server.load_bind_file(CHASQUID / "02-too_many_headers.dns")  # git symlink stored as text
    key = resolver_for(dns_server).dkimpy_dnsfunc()(b"brisbane._domainkey.football.example.com.")
    assert key is not None
    assert key.startswith(b"v=DKIM1; k=ed25519;")
    assert key.endswith(b"p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")


def test_chasquid_temperror_and_permerror(dns_server):
    dns_server.load_bind_file(CHASQUID / "05-dns_temp_error.dns")
    dns_server.load_bind_style("perm.example.com: PERMERROR\n")
    r = resolver_for(dns_server)
    with pytest.raises(DnsTempError):
        r.query_sync("brisbane._domainkey.football.example.com", "TXT")
    assert r.query_sync("perm.example.com", "TXT").nxdomain
    assert r.query_sync("test._domainkey.football.example.com", "TXT").records


@pytest.mark.parametrize("path", sorted(CHASQUID.glob("*.dns")), ids=lambda p: p.name)
def test_every_chasquid_dns_file_loads(path):
    TestDnsServer().load_bind_file(path)


# -- pyspf zonedata --------------------------------------------------------------------------


def test_zonedata_semantics(dns_server):
    skipped = dns_server.load_zonedata(
        {
            "gen.example.net": [{"SPF": "v=spf1 -all"}],
            "both.example.net": [{"SPF": "v=spf1 +all"}, {"TXT": "v=spf1 -all"}],
            "spfonly.example.net": [{"SPF": "v=spf1 -all"}, {"TXT": "NONE"}],
            "multi.example.net": [{"SPF": ["v=spf1 ip4:", "192.0.2.5 -all"]}, {"SPF": []}],
            "mx.example.net": [{"MX": [0, "mail.example.net"]}, {"MX": [5, ""]}],
            "to.example.net": [{"TXT": "v=spf1 -all"}, "TIMEOUT"],
            "all.example.net": ["TIMEOUT"],
            "ptr.example.net": [{"PTR": "mail.Example.com"}, {"CNAME": "x.example.net."}],
        }
    )
    assert skipped == []
    r = resolver_for(dns_server, timeout=0.5)
    assert r.query_sync("gen.example.net", "TXT").records == ("v=spf1 -all",)
    assert r.query_sync("gen.example.net", "SPF").records == ("v=spf1 -all",)
    assert r.query_sync("both.example.net", "TXT").records == ("v=spf1 -all",)
    assert r.query_sync("spfonly.example.net", "TXT").records == ()
    assert sorted(r.query_sync("multi.example.net", "SPF").records) == [
        "",
        "v=spf1 ip4:192.0.2.5 -all",
    ]
    assert sorted(r.query_sync("mx.example.net", "MX").records) == [
        "0 mail.example.net.",
        "5 .",
    ]
    assert r.query_sync("to.example.net", "TXT").records == ("v=spf1 -all",)
    for name, rdtype in (("to.example.net", "SPF"), ("all.example.net", "A")):
        with pytest.raises(DnsTempError):
            r.query_sync(name, rdtype)
    assert r.query_sync("ptr.example.net", "PTR").records == ("mail.Example.com.",)


@pytest.mark.parametrize("suite", ["rfc7208-tests.yml", "rfc4408-tests.yml"])
def test_spf_suite_zonedata_loads(suite):
    yaml = pytest.importorskip("yaml")
    server = TestDnsServer()
    skipped: list[str] = []
    with (SPF_SUITES / suite).open() as f:
        for doc in yaml.safe_load_all(f):
            skipped += server.load_zonedata(doc.get("zonedata", {}))
    assert len(skipped) < 5, skipped
