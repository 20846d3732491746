"""Property tests for the parsers: hostile bytes give a defined result, never a crash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from filters._archives import ArchiveLimits, list_zip
from filters._clamd import ClamdError, parse_scan_reply
from filters._mimewalk import Limits, walk
from filters._names import NamePolicy, shown
from filters._spamc import SpamdError, parse_reply, parse_report

from . import craft

MIME_BITS = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=\"b\"\r\n", b"--b\r\n", b"--b--\r\n", b"\r\n",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Type: message/rfc822\r\n",
    b"Content-Disposition: attachment; filename*0=\"a\"; filename*1=\".exe\"\r\n",
    b"begin 644 x.exe\r\n", b"M9V]O9\r\n", b"end\r\n", b"TVqQAAMAAAAEAAAA\r\n", b"=?utf-8?B?=\r\n",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(MIME_BITS, st.binary(max_size=40)), max_size=60))
def test_walk_is_total_and_bounded(chunks: list[bytes]) -> None:
    limits = Limits(max_parts=20, max_depth=5, max_decoded=10_000)
    tree = walk(b"".join(chunks), limits)
    assert tree.parts <= limits.max_parts + 1
    assert tree.decoded <= limits.max_decoded + max((len(x.data) for x in tree.leaves), default=0)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=399))
def test_list_zip_on_corrupted_zips(noise: bytes, at: int) -> None:
    data = bytearray(craft.zip_of(("a.txt", b"hello" * 20), ("b/c.exe", b"MZ" * 50)))
    data[at % len(data): at % len(data) + len(noise)] = noise
    listing = list_zip(bytes(data), "x.zip", ArchiveLimits())
    assert len(listing.members) <= 2 or listing.bombs or listing.corrupt


@given(st.binary(max_size=300))
def test_spamd_reply_parser(data: bytes) -> None:
    try:
        reply = parse_reply(data)
    except SpamdError:
        return
    assert reply.code == 0


@given(st.text(max_size=500))
def test_report_and_scan_parsers(text: str) -> None:
    for row in parse_report("----  ----\n" + text):
        assert row.rule
    try:
        parse_scan_reply(text)
    except ClamdError:
        pass


@given(st.text(max_size=100))
def test_names_never_crash_and_show_ascii(name: str) -> None:
    for _cls, detail in NamePolicy().check(name):
        assert detail.isascii()
    assert shown(name).isascii()
