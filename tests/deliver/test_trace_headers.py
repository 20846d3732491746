"""Trace headers of local delivery are not repeated when the message already carries them.

Postfix pipe(8) with ``flags=DR`` (contrib/postfix/master.cf.pipe) and local(8) before procmail
put ``Return-Path:`` and ``Delivered-To:`` on top of the message; ``rohrpost run --deliver`` and
``rohrpost deliver`` then used to add a second copy of both.
"""

from rohrpost.deliver import Destination, deliver
from rohrpost.deliver.localform import local_form
from rohrpost.envelope import Envelope


def head(data: bytes) -> list[bytes]:
    return data.split(b"\n\n", 1)[0].split(b"\n")


def test_existing_trace_headers_are_not_duplicated() -> None:
    raw = (b"Return-Path: <a@example.org>\nDelivered-To: bob@example.net\n"
           b"Received: by mx\nSubject: hi\n\nbody\n")
    out = local_form(raw, "a@example.org", ["bob@example.net"])
    assert head(out) == [b"Return-Path: <a@example.org>", b"Delivered-To: bob@example.net",
                         b"Received: by mx", b"Subject: hi"]


def test_envelope_sender_replaces_a_leading_return_path() -> None:
    raw = b"Return-Path: <MAILER-DAEMON>\nX-Original-To: bob@x\nDelivered-To: bob@x\nS: 1\n\nb\n"
    out = local_form(raw, "", ["carol@x"])
    assert head(out) == [b"Return-Path: <>", b"Delivered-To: carol@x", b"X-Original-To: bob@x",
                         b"Delivered-To: bob@x", b"S: 1"]


def test_unknown_sender_keeps_the_message_return_path() -> None:
    raw = b"Return-Path: <a@x>\nS: 1\n\nb\n"
    assert head(local_form(raw, None, ["u@x"])) == [b"Delivered-To: u@x", b"Return-Path: <a@x>",
                                                     b"S: 1"]


def test_deeper_delivered_to_still_gets_a_new_one() -> None:
    # a Delivered-To below a Received header is an earlier hop (forwarding): a new trace line
    raw = b"Received: by mx\nDelivered-To: bob@x\nS: 1\n\nb\n"
    assert head(local_form(raw, "a@x", ["bob@x"]))[:2] == [b"Return-Path: <a@x>",
                                                           b"Delivered-To: bob@x"]


def test_maildir_copy_from_a_procmail_message_has_one_of_each(tmp_path) -> None:
    raw = (b"From a@example.org Mon Jan  1 00:00:00 2024\nReturn-Path: <a@example.org>\n"
           b"X-Original-To: bob@example.net\nDelivered-To: bob@example.net\nSubject: x\n\nb\n")
    env = Envelope(mail_from="a@example.org", rcpts=("bob@example.net",),
                   sources={"mail_from": "message"})
    assert deliver(Destination("maildir", path=str(tmp_path / "M")), raw, env).ok
    (name,) = list((tmp_path / "M" / "new").iterdir())
    data = name.read_bytes()
    assert data.count(b"Return-Path:") == 1
    assert data.count(b"Delivered-To:") == 1
