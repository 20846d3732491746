"""The milter wire codec: framing, decoding of hostile input, encoding of replies."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rohrpost.milter import wire


def frame(cmd: bytes, data: bytes) -> bytes:
    """Framing written out independently of wire.packet."""
    return struct.pack(">I", len(data) + 1) + cmd + data


packets = st.lists(st.tuples(st.sampled_from([b"A", b"B", b"C", b"D", b"L", b"M", b"E"]),
                             st.binary(max_size=300)), max_size=20)


@given(packets, st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=50))
@settings(max_examples=300, deadline=None)
def test_reader_returns_the_packets_whatever_the_splits(pkts, cuts):
    stream = b"".join(frame(c, d) for c, d in pkts)
    reader = wire.PacketReader()
    got = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        reader.feed(stream[pos : pos + step])
        pos += step
        i += 1
        while (pkt := reader.next()) is not None:
            got.append(pkt)
    assert got == pkts
    assert len(reader) == 0


def test_reader_refuses_empty_and_oversized_packets():
    reader = wire.PacketReader()
    reader.feed(struct.pack(">I", 0))
    with pytest.raises(wire.WireError):
        reader.next()
    reader = wire.PacketReader()
    reader.feed(struct.pack(">I", wire.MAX_PACKET + 1) + b"B")
    with pytest.raises(wire.WireError):
        reader.next()


def test_reader_waits_for_a_whole_packet():
    reader = wire.PacketReader()
    reader.feed(frame(b"L", b"Subject\0hi\0")[:7])
    assert reader.next() is None
    reader.feed(frame(b"L", b"Subject\0hi\0")[7:])
    assert reader.next() == (b"L", b"Subject\0hi\0")


DECODERS = [wire.decode_optneg, wire.decode_connect, wire.decode_macro_pairs, wire.decode_args,
            wire.decode_helo, wire.decode_header]


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_decoders_raise_only_wire_error_on_hostile_input(data):
    for decode in DECODERS:
        try:
            decode(data)
        except wire.WireError:
            pass


def test_decode_connect_families():
    v4 = wire.decode_connect(b"client.example\0" + b"4" + struct.pack(">H", 2525)
                             + b"192.0.2.7\0")
    assert v4 == wire.Connect("client.example", "4", 2525, "192.0.2.7")
    v6 = wire.decode_connect(b"h\x006" + struct.pack(">H", 1) + b"2001:db8::1\0")
    assert v6.address == "2001:db8::1"
    unix = wire.decode_connect(b"localhost\0L" + struct.pack(">H", 0) + b"/run/x\0")
    assert (unix.family, unix.address) == ("L", "")  # no IP for a local client
    unknown = wire.decode_connect(b"[unknown]\0U")
    assert (unknown.family, unknown.address) == ("U", "")
    with pytest.raises(wire.WireError):
        wire.decode_connect(b"no-nul")


def test_decode_macros_args_header():
    table = wire.decode_macro_pairs(b"i\0ABC123\0{auth_authen}\0alice\0")
    assert table == {"i": "ABC123", "{auth_authen}": "alice"}
    assert wire.decode_macro_pairs(b"j\0") == {"j": ""}
    assert wire.decode_args(b"<a@example.org>\0SIZE=100\0BODY=8BITMIME\0") == (
        "<a@example.org>", ["SIZE=100", "BODY=8BITMIME"])
    name, value = wire.decode_header(b"Subject\0 caf\xc3\xa9 \xff\0")
    assert name == "Subject" and value == b" caf\xc3\xa9 \xff"  # bytes kept exactly
    assert wire.decode_helo(b"client.example\0") == "client.example"
    neg = wire.decode_optneg(struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
    assert neg == wire.OptNeg(6, 0x1FF, 0x1FFFFF)


def test_encoders():
    assert wire.encode_addheader("X-A", " v") == frame(b"h", b"X-A\0 v\0")
    assert wire.encode_insheader(0, "X-B", " w") == frame(b"i", struct.pack(">I", 0)
                                                          + b"X-B\0 w\0")
    assert wire.encode_chgheader("X-C", 2, "") == frame(b"m", struct.pack(">I", 2) + b"X-C\0\0")
    assert wire.encode_rcpt(wire.ADDRCPT, "x@example.net") == frame(b"+", b"<x@example.net>\0")
    assert wire.encode_chgfrom("s@example.org") == frame(b"e", b"<s@example.org>\0")
    assert wire.encode_quarantine("bad\r\nthing") == frame(b"q", b"bad  thing\0")
    body = bytes(range(256)) * 600
    parts = wire.encode_replbody(body)
    assert len(parts) == 3 and b"".join(p[5:] for p in parts) == body
    assert wire.encode_replbody(b"") == [frame(b"b", b"")]


def test_replycode_single_multi_line_and_percent():
    assert wire.encode_replycode("550", "5.7.1", "100% spam") == frame(
        b"y", b"550 5.7.1 100%% spam\0")
    assert wire.encode_replycode("451", "", "later") == frame(b"y", b"451 later\0")
    multi = wire.encode_replycode("550", "5.7.1", "one\ntwo")
    assert multi == frame(b"y", b"550-5.7.1 one\r\n550 5.7.1 two\0")


def test_nul_in_a_string_is_refused():
    with pytest.raises(wire.WireError):
        wire.encode_addheader("X-A", "a\0b")
