"""filters/_nets.in_networks answers as rohrpost.pipeline.in_networks, with parsing kept."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st
from rohrpost.filters._nets import in_networks

from rohrpost.pipeline import in_networks as reference

ADDRESSES = ["127.0.0.1", "192.0.2.10", "[192.0.2.10]", "IPv6:2001:db8::1", "::1",
             "2001:db8::5", "::ffff:192.0.2.10", "10.1.2.3", "", "not an ip", " 192.0.2.10"]
NETWORKS = ["127.0.0.0/8", "::1", "192.0.2.0/24", "192.0.2.10/32", "2001:db8::/32",
            "10.0.0.0/8", "0.0.0.0/0", "::/0", "192.0.2.1/24", "bogus", "300.0.0.0/8", ""]


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(ADDRESSES) | st.ip_addresses().map(str),
       st.lists(st.sampled_from(NETWORKS), max_size=5))
@example("192.0.2.10", ["bogus", "192.0.2.0/24"])
@example("[::1]", ["127.0.0.0/8", "::1"])
def test_same_answer_as_the_pipeline(ip: str, networks: list[str]) -> None:
    assert in_networks(ip, networks) == reference(ip, networks)
    assert in_networks(ip, tuple(networks)) == reference(ip, networks)  # parsed once, kept
