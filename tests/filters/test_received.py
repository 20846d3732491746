"""The ``received`` filter: hop limit, loop detection, our own Received header."""

from __future__ import annotations

from typing import Any

import pytest

from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.result import Action

from .helpers import context, make_filter, message, run_filter, run_pipeline


def hops(n: int, by: str = "relay{i}.example.org") -> list[str]:
    return [f"Received: from a{i}.example by {by.format(i=i)} with ESMTP id X{i};\n"
            f"\tMon, 13 Nov 2023 10:00:00 +0000" for i in range(n)]


def msg_with(received: list[str]) -> Message:
    return message(*received, "From: a@example.org", "Subject: s")


@pytest.mark.parametrize(("received", "options", "reply", "symbol"), [
    (hops(30), {}, None, None),
    (hops(31), {}, "554 5.4.6 Too many hops", "RECEIVED_TOO_MANY"),
    (hops(6), {"max_hops": 5}, "554 5.4.6 Too many hops", "RECEIVED_TOO_MANY"),
    (hops(3, "MX.Example.NET."), {}, None, None),  # up to max_self = 3 of ours is fine
    (hops(4, "mx.example.net"), {}, "554 5.4.6 Mail loop detected", "RECEIVED_LOOP"),
    (hops(2, "mx.example.net"), {"max_self": 1}, "554 5.4.6 Mail loop detected",
     "RECEIVED_LOOP"),
    (hops(2, "alias.example.net"), {"max_self": 1, "self_names": ["alias.example.net"]},
     "554 5.4.6 Mail loop detected", "RECEIVED_LOOP"),
    # our name in the from clause is not a Received by us
    ([f"Received: from mx.example.net by relay{i}.example.org; date" for i in range(5)], {},
     None, None),
])
def test_hops_and_loops(received: list[str], options: dict[str, Any], reply: str | None,
                        symbol: str | None) -> None:
    res = run_filter(make_filter("received", **options), msg_with(received))
    assert (str(res.verdict.reply) if res.verdict else None) == reply
    assert [s.name for s in res.symbols] == ([symbol] if symbol else [])


@pytest.mark.parametrize(("env", "value"), [
    (Envelope(client_ip="192.0.2.7", client_name="mail.example.org", helo="helo.example.org",
              rcpts=("b@example.net",), queue_id="4ABC"),
     "from helo.example.org (mail.example.org [192.0.2.7]) by mx.example.net (rohrpost) "
     "with ESMTP id 4ABC for <b@example.net>; Tue, 14 Nov 2023 22:13:20 +0000"),
    (Envelope(client_ip="2001:db8::1", helo="h (evil); x", rcpts=("a@x", "b@x"),
              auth_user="alice", tls={"version": "TLSv1.3"}),
     "from h??evil???x (unknown [IPv6:2001:db8::1]) by mx.example.net (rohrpost) "
     "with ESMTPSA; Tue, 14 Nov 2023 22:13:20 +0000"),
    (Envelope(rcpts=("b@example.net",)),
     "by mx.example.net (rohrpost) for <b@example.net>; Tue, 14 Nov 2023 22:13:20 +0000"),
])
def test_add_received_value(env: Envelope, value: str) -> None:
    res = run_filter(make_filter("received", add_received=True), msg_with([]), env, context())
    assert len(res.changes) == 1
    change = res.changes[0]
    assert (getattr(change, "index", None), getattr(change, "name", None)) == (0, "Received")
    assert getattr(change, "value", None) == value


def test_add_received_through_pipeline_is_first_line() -> None:
    done = run_pipeline('[[filter]]\nuse = "received"\nadd_received = true\n',
                        msg_with(hops(2)))
    assert done.outcome.action is Action.ACCEPT
    assert done.message.raw.startswith(
        b"Received: from client.example.org (unknown [192.0.2.1]) by mx.example.net\n"
        b"\t(rohrpost) with ESMTP for <b@example.net>; Tue, 14 Nov 2023 22:13:20 +0000\n"
        b"Received: from a0.example")
    assert len(done.message.get_all("Received")) == 3


def test_loop_rejected_through_pipeline() -> None:
    done = run_pipeline('[[filter]]\nuse = "received"\n', msg_with(hops(40)))
    assert done.outcome.action is Action.REJECT
    assert str(done.outcome.verdict.reply) == "554 5.4.6 Too many hops"
