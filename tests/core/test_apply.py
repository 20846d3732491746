from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rohrpost.apply import apply_changes, fold
from rohrpost.changes import (
    AddHeader,
    AddRecipient,
    ChangeError,
    ChangeHeader,
    ChangeSender,
    DeleteRecipient,
    InsertHeader,
    ReplaceBody,
)
from rohrpost.envelope import Envelope
from rohrpost.message import Message

MSG = Message(b"From: a@example.org\nX-A: 1\nX-A: 2\nSubject: s\n\nbody\n")
ENV = Envelope(mail_from="a@example.org", rcpts=("b@example.net",))


def test_untouched_message_is_the_same_object() -> None:
    msg, env = apply_changes(MSG, ENV, [AddRecipient("c@example.net")])
    assert msg is MSG
    assert env.rcpts == ("b@example.net", "c@example.net")


def test_header_changes_in_order() -> None:
    msg, _ = apply_changes(MSG, ENV, [
        InsertHeader(0, "X-Top", "first"),
        ChangeHeader("x-a", 2, "two"),
        ChangeHeader("X-A", 1, None),
        AddHeader("X-End", "last"),
        ChangeHeader("X-Missing", 1, "added"),
    ])
    assert msg.raw == (b"X-Top: first\nFrom: a@example.org\nX-A: two\nSubject: s\n"
                       b"X-End: last\nX-Missing: added\n\nbody\n")


def test_body_and_envelope_changes() -> None:
    msg, env = apply_changes(MSG, ENV, [ReplaceBody(b"new\n"), DeleteRecipient("B@example.net"),
                                        AddRecipient("x@y"), ChangeSender("")])
    assert msg.body == b"new\n"
    assert env.rcpts == ("x@y",)
    assert env.mail_from == ""


def test_crlf_message_gets_crlf_headers() -> None:
    m = Message(b"A: 1\r\n\r\nb\r\n")
    out, _ = apply_changes(m, ENV, [AddHeader("X-B", "2")])
    assert out.raw == b"A: 1\r\nX-B: 2\r\n\r\nb\r\n"


@pytest.mark.parametrize("name", ["", "Bad Name", "X:Y", "Ä", "x" * 101])
def test_bad_header_names_refused(name: str) -> None:
    with pytest.raises(ChangeError):
        AddHeader(name, "v")


def test_fold_long_values() -> None:
    folded = fold("X-Long", " ".join(["word"] * 40))
    lines = folded.decode().splitlines()
    assert len(lines) > 1
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith("\t") for line in lines[1:])


@given(st.text(max_size=300))
def test_no_header_injection(value: str) -> None:
    out, _ = apply_changes(MSG, ENV, [AddHeader("X-Test", value), InsertHeader(0, "X-Top", value),
                                      ChangeHeader("Subject", 1, value)])
    # exactly three new-or-changed fields, no extra header line ever appears
    assert [h.name for h in out.headers] == ["X-Top", "From", "X-A", "X-A", "Subject", "X-Test"]
    for h in out.headers:
        for line in h.raw.split(b"\n")[1:-1]:
            assert line[:1] in (b" ", b"\t")
    assert out.body == b"body\n"
