from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rohrpost.envsource import EnvelopeArgs, EnvelopeError, envelope_for_pipe
from rohrpost.message import Message

MSG = Message(b"Return-Path: <bounce@example.org>\nDelivered-To: bob@example.net\n"
              b"X-Original-To: robert@example.net\n\nbody\n")


def test_message_is_the_last_resort() -> None:
    env = envelope_for_pipe(EnvelopeArgs(), {}, MSG)
    assert env.mail_from == "bounce@example.org"
    assert env.rcpts == ("bob@example.net",)
    assert env.sources == {"mail_from": "message", "rcpts": "message"}
    assert len(env.queue_id) == 12


def test_mbox_from_line() -> None:
    env = envelope_for_pipe(EnvelopeArgs(), {}, Message(b"From MAILER-DAEMON Mon Jan 1\nA: b\n\nx"))
    assert env.mail_from == ""
    env = envelope_for_pipe(EnvelopeArgs(), {}, Message(b"From a@b.c Mon Jan 1\nA: b\n\nx"))
    assert env.mail_from == "a@b.c"


def test_environment_beats_message_and_arguments_beat_environment() -> None:
    environ = {"SENDER": "env@example.org", "RECIPIENT": "envrcpt@example.net",
               "CLIENT_ADDRESS": "192.0.2.7", "SASL_USERNAME": "bob"}
    env = envelope_for_pipe(EnvelopeArgs(), environ, MSG)
    assert (env.mail_from, env.rcpts, env.client_ip, env.auth_user) == (
        "env@example.org", ("envrcpt@example.net",), "192.0.2.7", "bob")
    env = envelope_for_pipe(EnvelopeArgs(sender="", recipients=["<a@x.y>", "b@x.y"],
                                         client_ip="2001:db8::1"), environ, MSG)
    assert env.mail_from == ""
    assert env.rcpts == ("a@x.y", "b@x.y")
    assert env.client_ip == "2001:db8::1"
    assert env.sources["mail_from"] == "argument"


@pytest.mark.parametrize("args", [EnvelopeArgs(client_ip="not-an-ip"),
                                  EnvelopeArgs(sender="a@b\r\nRCPT TO:<x@y>"),
                                  EnvelopeArgs(recipients=["a@b\nx@y"])])
def test_bad_arguments(args: EnvelopeArgs) -> None:
    with pytest.raises(EnvelopeError):
        envelope_for_pipe(args, {}, MSG)


@given(st.binary(max_size=500), st.dictionaries(
    st.sampled_from(["SENDER", "RECIPIENT", "ORIGINAL_RECIPIENT", "CLIENT_HELO", "QUEUE_ID"]),
    st.text(alphabet=st.characters(blacklist_characters="\r\n\x00"), max_size=40)))
def test_any_message_and_environment(raw: bytes, environ: dict[str, str]) -> None:
    env = envelope_for_pipe(EnvelopeArgs(), environ, Message(raw))
    assert all("\n" not in r for r in env.rcpts)
    assert env.queue_id
