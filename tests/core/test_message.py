from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rohrpost.message import Message

RAW = (b"From sender@example.org Mon Jan  1 00:00:00 2026\n"
       b"Received: from a\n\tby b; Mon, 1 Jan 2026\n"
       b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n"
       b"SUBJECT: second\n"
       b"\n"
       b"body line\n")


def test_headers_kept_exactly() -> None:
    m = Message(RAW)
    assert m.from_line.startswith(b"From sender@")
    assert [h.name for h in m.headers] == ["Received", "Subject", "SUBJECT"]
    assert m.headers[0].raw == b"Received: from a\n\tby b; Mon, 1 Jan 2026\n"
    assert m.headers[0].value == "from a\tby b; Mon, 1 Jan 2026"
    assert m.body == b"body line\n"
    assert len(m.get_all("subject")) == 2
    assert m.headers[1].decoded == "Grüße"
    assert m.header_bytes + b"\n" + m.body == m.without_from_line()


def test_crlf_and_no_body() -> None:
    m = Message(b"A: 1\r\nB: 2\r\n")
    assert m.crlf
    assert [h.name for h in m.headers] == ["A", "B"]
    assert m.body == b""


def test_garbage_line_ends_headers() -> None:
    m = Message(b"A: 1\nthis is not a header\nB: 2\n")
    assert [h.name for h in m.headers] == ["A"]
    assert m.body == b"this is not a header\nB: 2\n"


def test_mime_parsed_once() -> None:
    m = Message(b"Content-Type: text/plain; charset=utf-8\n\nh\xc3\xa9\n")
    assert m.mime is m.mime
    assert "hé" in m.text


@given(st.binary(max_size=2000))
def test_any_bytes_parse_and_rejoin(raw: bytes) -> None:
    m = Message(raw)
    rebuilt = m.from_line + m.header_bytes
    # the header block plus the separator plus the body is exactly the input
    assert raw.startswith(rebuilt)
    assert raw.endswith(m.body)
    assert len(rebuilt) + len(m.body) <= len(raw) <= len(rebuilt) + len(m.body) + 2
    _ = m.mime, m.text  # never raises
