"""filters/_dkim_canon.py returns exactly what dkimpy's parsing and canonicalization return.

Messages are generated from pieces that hit every branch of dkimpy's code: CR and LF alone and
together, folding, tabs, runs of white space, 8-bit bytes, lines without a colon, mbox ``From ``
lines, a continuation before the first field, no empty line, only an empty line, trailing CRLFs.
"""

from __future__ import annotations

import dkim
import pytest
from dkim.canonicalization import Relaxed, Simple
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rohrpost.filters import _dkim_canon as canon

PIECES = [b"a", b"B", b" ", b"\t", b"  ", b"\r", b"\n", b"\r\n", b"\r\r\n", b"\n\r", b":",
          b"From ", b"X-H: v", b"Subject:", b"\xff\xfe", b"\x0b", b"\x0c", b"\x00", b"\n ",
          b"\r\n\t", b"b=", b" b=", b";b=", b"AB+/=", b"bh=", b"\r\n\r\n", b"-- "]
pieces = st.lists(st.sampled_from(PIECES), max_size=24).map(b"".join)
raw_bytes = st.binary(max_size=80)
text = st.one_of(pieces, raw_bytes)


def _outcome(fn: object, data: bytes) -> tuple[str, object]:
    try:
        return "ok", fn(data)  # type: ignore[operator]
    except dkim.MessageFormatError as exc:
        return "format", str(exc)
    except canon.HeaderError as exc:
        return "format", str(exc)
    except IndexError as exc:
        return "index", str(exc)


@settings(max_examples=2000, deadline=None)
@given(text, text)
@example(b"", b"")
@example(b"\r\n", b"body")
@example(b"\n", b"\n\n")
@example(b" leading: continuation", b"")
@example(b"From alice Mon", b"x")
@example(b"A: b\r\n", b"\r\n\r\n\r\n")
@example(b"::x", b"")
@example(b"A:b\r\r\n", b"")
def test_parse_matches_rfc822_parse(head: bytes, tail: bytes) -> None:
    for message in (head + tail, b"Subject: s\r\n" + head + b"\r\n" + tail,
                    head + b"\n\n" + tail):
        assert _outcome(canon.parse, message) == _outcome(dkim.rfc822_parse, message)


@settings(max_examples=2000, deadline=None)
@given(text)
@example(b"")
@example(b"\r\n")
@example(b"\r\n\r\n")
@example(b"a  \r\n\t b \t\r\n\r\n")
@example(b"a \r\n")
@example(b" \t ")
def test_bodies_match_dkimpy(body: bytes) -> None:
    assert canon.relaxed_body(body) == Relaxed.canonicalize_body(body)
    assert canon.simple_body(body) == Simple.canonicalize_body(body)


@settings(max_examples=2000, deadline=None)
@given(text, text)
@example(b"Subject ", b" a \r\n\tb  c \r\n")
@example(b"X", b"\r\r\n\n\t")
def test_relaxed_header_matches_dkimpy(name: bytes, value: bytes) -> None:
    assert canon.relaxed_header(name, value) == tuple(
        Relaxed.canonicalize_headers([(name, value)])[0])


@settings(max_examples=2000, deadline=None)
@given(text)
@example(b" v=1; b=AB+/ \r\n\t=CD; bh=x")
@example(b";b=\r\n")
@example(b" b = AAAA\r\n")
@example(b"b=A; b=B")
def test_strip_b_matches_re_btag(value: bytes) -> None:
    assert canon.strip_b(value) == dkim.RE_BTAG.sub(b"\\1", value)


@pytest.mark.parametrize("message", [
    b"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n",
    b"From: a@example.org\nSubject: x\n\nbody\nmore\n",
    b"From mbox line\r\nFrom: a@example.org\r\n\r\n",
])
def test_parse_of_ordinary_messages(message: bytes) -> None:
    headers, body = canon.parse(message)
    assert [h[0] for h in headers] == [b"From", b"Subject"][: len(headers)]
    assert (headers, body) == tuple(dkim.rfc822_parse(message))
