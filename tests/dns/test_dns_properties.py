"""Property tests: any TXT bytes survive the test server and the resolver unchanged."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rohrpost.dns import DnsConfig, Resolver
from tests.support.dnsserver import TestDnsServer

_names = itertools.count()


@pytest.fixture(scope="module")
def server_and_resolver() -> Iterator[tuple[TestDnsServer, Resolver]]:
    with TestDnsServer() as server:
        yield server, Resolver(DnsConfig(servers=(server.address,), timeout=3.0))
    assert not server.errors


@settings(max_examples=150, deadline=None)
@given(
    value=st.one_of(
        st.binary(max_size=2000),
        st.lists(st.binary(max_size=255), min_size=1, max_size=8),
    )
)
def test_txt_round_trip(server_and_resolver, value):
    server, resolver = server_and_resolver
    name = f"p{next(_names)}.example.org"  # fresh name: no cache hits
    server.add(name, "TXT", value)
    expected = value if isinstance(value, bytes) else b"".join(value)
    answer = resolver.query_sync(name, "TXT")
    assert answer.records == (expected.decode("latin-1"),)
    assert resolver.dkimpy_dnsfunc()(name.encode()) == expected
