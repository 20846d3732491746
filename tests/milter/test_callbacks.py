"""The milter's callbacks replayed with pymilter's TestCtx: verdicts, changes, failures."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time

import Milter

from rohrpost.changes import (
    AddHeader,
    AddRecipient,
    ChangeHeader,
    ChangeSender,
    DeleteRecipient,
    InsertHeader,
    ReplaceBody,
)
from rohrpost.filter import Mail, Stage
from rohrpost.milter import connection
from rohrpost.result import Action, FilterResult, Verdict
from tests.milter.conftest import FnFilter, const
from tests.milter.harness import ExactCtx, replay

MSG = (b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
       b"From: Alice <alice@example.org>\r\n"
       b"To: bob@example.net\r\n"
       b"Subject: hello\r\n"
       b"X-Folded: first part\r\n\tsecond part\r\n"
       b"\r\n"
       b"Body line 1\r\nBody line 2\r\n")


def test_accept_passes_envelope_and_exact_message(rig):
    eom = FnFilter(Stage.EOM, const(FilterResult()))
    mail = FnFilter(Stage.MAIL, const(FilterResult()))
    app = rig.app(("mail", mail), ("eom", eom))
    ctx = rig.ctx(app)
    out = replay(ctx, MSG, "alice@example.org", ["bob@example.net", "carol@example.net"],
                 macros={"{auth_authen}": "alice", "i": "ABC123", "{tls_version}": "TLSv1.3",
                         "{cipher}": "TLS_AES_256_GCM_SHA384"})
    assert out.eom == Milter.CONTINUE
    seen = eom.calls[0]
    assert seen.message is not None and seen.message.raw == MSG  # byte-exact, folding kept
    env = seen.envelope
    assert env.mail_from == "alice@example.org"
    assert env.rcpts == ("bob@example.net", "carol@example.net")
    assert env.client_ip == "192.0.2.1" and env.helo == "client.example"
    assert env.auth_user == "alice" and env.queue_id == "ABC123"
    assert env.tls == {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"}
    assert mail.calls[0].envelope.mail_from == "alice@example.org"


def test_reject_at_rcpt_refuses_that_recipient_only(rig):
    async def rcpt_check(mail: Mail) -> FilterResult:
        if mail.rcpt == "bad@example.net":
            return FilterResult(Verdict.of(Action.REJECT, "550 5.1.1 No such user"))
        return FilterResult()

    eom = FnFilter(Stage.EOM, const(FilterResult()))
    app = rig.app(("rcpt", FnFilter(Stage.RCPT, rcpt_check)), ("eom", eom))
    ctx = rig.ctx(app)
    out = replay(ctx, MSG, "a@example.org", ["bad@example.net", "good@example.net"])
    assert out.rcpts == [Milter.REJECT, Milter.CONTINUE]
    assert out.replies[0] == ("550", "5.1.1", "No such user")
    assert out.eom == Milter.CONTINUE
    assert eom.calls[0].envelope.rcpts == ("good@example.net",)


def test_reject_at_rcpt_never_reads_body(rig, caplog):
    rcpt = FnFilter(Stage.RCPT, const(FilterResult(Verdict.of(Action.REJECT))))
    eom = FnFilter(Stage.EOM, const(FilterResult()))
    ctx = rig.ctx(rig.app(("rcpt", rcpt), ("eom", eom)))
    with caplog.at_level(logging.INFO, logger="rohrpost"):
        out = replay(ctx, MSG, "a@example.org", ["x@example.net"])
    assert out.rcpts == [Milter.REJECT]
    assert out.eom is None and ctx.body_calls == 0 and eom.calls == []
    assert out.replies[0] == ("550", "5.7.1", "Message rejected by policy")
    lines = [r.getMessage() for r in caplog.records if "mode=milter" in r.getMessage()]
    assert len(lines) == 1 and "action=reject" in lines[0]


def test_reject_at_eom_with_reply_text(rig):
    verdict = Verdict.of(Action.REJECT, "550 5.7.1 Blocked by local policy")
    ctx = rig.ctx(rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult(verdict))))))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.eom == Milter.REJECT
    assert out.replies == [("550", "5.7.1", "Blocked by local policy")]
    assert rig.metrics.render().count('rohrpost_messages_total{action="reject"} 1') == 1


def test_tempfail_verdict_and_percent_in_text(rig):
    verdict = Verdict.of(Action.TEMPFAIL, "451 4.7.1 Greylisted 100% sure")
    ctx = rig.ctx(rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult(verdict))))))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.eom == Milter.TEMPFAIL
    assert out.replies == [("451", "4.7.1", "Greylisted 100%% sure")]


def test_filter_that_raises_tempfails_without_detail(rig):
    async def boom(mail: Mail) -> FilterResult:
        raise RuntimeError("secret detail")

    ctx = rig.ctx(rig.app(("boom", FnFilter(Stage.EOM, boom))))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.eom == Milter.TEMPFAIL
    assert out.replies[0][0] == "451" and "secret" not in " ".join(out.replies[0])
    assert 'rohrpost_filter_failures_total{filter="boom"} 1' in rig.metrics.render()


def test_filter_timeout_tempfails(rig):
    async def slow(mail: Mail) -> FilterResult:
        await asyncio.sleep(5)
        return FilterResult()

    ctx = rig.ctx(rig.app(("slow", FnFilter(Stage.EOM, slow), 0.2, "tempfail")))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.eom == Milter.TEMPFAIL and out.replies[0][:2] == ("451", "4.7.1")


def test_stage_deadline_tempfails_even_with_long_filter_timeout(rig):
    async def slow(mail: Mail) -> FilterResult:
        await asyncio.sleep(5)
        return FilterResult()

    rig.timeout = 0.3
    ctx = rig.ctx(rig.app(("slow", FnFilter(Stage.MAIL, slow), 30.0, "tempfail")))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.mail == Milter.TEMPFAIL
    assert out.replies == [("451", "4.7.1", "Temporary local problem, please try again later")]


def test_crash_in_callback_code_is_tempfail(rig, monkeypatch):
    ctx = rig.ctx(rig.app())

    def broken(*a, **k):
        raise ValueError("bug")

    monkeypatch.setattr(connection, "decide", broken)
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.eom == Milter.TEMPFAIL and out.replies[0][0] == "451"


def test_header_added_changed_deleted_recipient_changes(rig):
    changes = [AddHeader("X-Added", "yes"), InsertHeader(0, "X-Top", "first"),
               ChangeHeader("Subject", 1, "[tag] hello"), ChangeHeader("X-Folded", 1, None),
               AddRecipient("archive@example.net"), AddRecipient("b@example.net"),
               DeleteRecipient("c@example.net"), ChangeSender("bounce@example.org"),
               ReplaceBody(b"new body\r\n")]
    ctx = rig.ctx(rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult(changes=changes))))))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net", "c@example.net"])
    assert out.eom == Milter.CONTINUE
    names = [n for n, _v in ctx.headers]
    assert names[0] == "X-Top" and names[-1] == "X-Added" and "X-Folded" not in names
    assert dict(ctx.headers)["Subject"] == b" [tag] hello"
    assert ctx.added_rcpts == ["<archive@example.net>"]  # b@ is already a recipient
    assert ctx.deleted_rcpts == ["<c@example.net>"]
    assert ctx.new_from == "<bounce@example.org>" and ctx.new_body == b"new body\r\n"


def test_quarantine_stores_and_discards(rig):
    verdict = Verdict.of(Action.QUARANTINE, reason="looks bad")
    changes = [AddHeader("X-Seen", "1")]
    ctx = rig.ctx(rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult(verdict,
                                                                          changes=changes))))))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.eom == Milter.DISCARD
    qdir = os.path.join(rig.tmp, "quarantine")
    files = sorted(os.listdir(qdir))
    assert len(files) == 2
    assert oct(os.stat(qdir).st_mode & 0o777) == "0o700"
    with open(os.path.join(qdir, files[0]), "rb") as fh:
        held = fh.read()
    assert held.startswith(MSG.split(b"\r\n\r\n")[0]) and b"X-Seen: 1\r\n" in held
    with open(os.path.join(qdir, files[1])) as fh:
        meta = json.load(fh)
    assert meta["reason"] == "looks bad" and meta["rcpts"] == ["b@example.net"]
    assert ctx.headers[-1][0] != "X-Seen"  # nothing sent to the MTA for a discarded message


def test_quarantine_with_mta_hold(rig):
    rig.hold = True
    verdict = Verdict.of(Action.QUARANTINE, reason="hold it")
    ctx = rig.ctx(rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult(verdict))))))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.eom == Milter.ACCEPT and ctx.quarantined == "hold it"
    assert not os.path.exists(os.path.join(rig.tmp, "quarantine"))


def test_discard(rig):
    verdict = Verdict.of(Action.DISCARD)
    ctx = rig.ctx(rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult(verdict))))))
    assert replay(ctx, MSG, "a@example.org", ["b@example.net"]).eom == Milter.DISCARD


def test_reject_at_connect_and_mail(rig):
    ctx = rig.ctx(rig.app(("c", FnFilter(Stage.CONNECT,
                                         const(FilterResult(Verdict.of(Action.REJECT)))))))
    out = replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert out.connect == Milter.REJECT

    async def by_sender(mail: Mail) -> FilterResult:
        if mail.envelope.mail_from == "spam@example.org":
            return FilterResult(Verdict.of(Action.REJECT, "550 5.7.1 Sender blocked"))
        return FilterResult()

    ctx = rig.ctx(rig.app(("m", FnFilter(Stage.MAIL, by_sender))))
    out = replay(ctx, MSG, "spam@example.org", ["b@example.net"])
    assert out.mail == Milter.REJECT and out.replies == [("550", "5.7.1", "Sender blocked")]
    # the next message on the same connection starts afresh
    out = replay(ctx, MSG, "ok@example.org", ["b@example.net"], connect=False)
    assert out.mail == Milter.CONTINUE and out.eom == Milter.CONTINUE


def test_two_messages_on_one_connection_keep_connection_facts(rig):
    helo = FnFilter(Stage.HELO, const(FilterResult()))
    eom = FnFilter(Stage.EOM, const(FilterResult(changes=[AddHeader("X-N", "1")])))
    ctx = rig.ctx(rig.app(("helo", helo), ("eom", eom)))
    replay(ctx, MSG, "a@example.org", ["b@example.net"], macros={"i": "Q1"})
    ctx._setsymval("i", "Q2")
    replay(ctx, MSG, "c@example.org", ["d@example.net"], connect=False)
    first, second = (m.envelope for m in eom.calls)
    assert second.helo == first.helo == "client.example"
    assert second.mail_from == "c@example.org" and second.rcpts == ("d@example.net",)
    assert second.queue_id == "Q2" and len(helo.calls) == 1
    assert len(eom.calls[1].prior) == 1  # only HELO's result carried over


def test_default_headers_reach_the_mta(rig):
    rig.status, rig.spam = True, "always"
    ctx = rig.ctx(rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult())))))
    replay(ctx, MSG + b"", "a@example.org", ["b@example.net"])
    names = [n for n, _v in ctx.headers]
    assert "X-Spam-Status" in names and "X-Rohrpost-Result" in names


def test_metrics_connections_balance(rig):
    ctx = rig.ctx(rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult())))))
    replay(ctx, MSG, "a@example.org", ["b@example.net"])
    assert "rohrpost_connections_active 1" in rig.metrics.render()
    ctx._close()
    text = rig.metrics.render()
    assert "rohrpost_connections_active 0" in text
    assert 'rohrpost_filter_seconds_count{filter="eom"} 1' in text


def test_slow_stages_of_many_connections_overlap_on_one_loop(rig):
    """20 connections, each with a 0.5 s filter wait, finish in far less than 20 x 0.5 s."""
    async def slow(mail: Mail) -> FilterResult:
        await asyncio.sleep(0.5)
        return FilterResult()

    app = rig.app(("slow", FnFilter(Stage.EOM, slow)))
    rig.ctx(app)  # installs the factory
    results: list[int] = []

    def one() -> None:
        results.append(replay(ExactCtx(), MSG, "a@example.org", ["b@example.net"]).eom)

    start = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    assert results == [Milter.CONTINUE] * 20
    assert elapsed < 3.0, elapsed


def test_only_stages_with_filters_go_to_the_loop(rig, monkeypatch):
    """CONNECT, HELO, MAIL and RCPT without filters are not handed to the loop thread."""
    eom = FnFilter(Stage.EOM, const(FilterResult()))
    app = rig.app(("eom", eom))
    calls = []
    run = app.loop.run
    monkeypatch.setattr(app.loop, "run", lambda coro, timeout: calls.append(1) or run(coro, timeout))
    out = replay(rig.ctx(app), MSG, "alice@example.org", ["bob@example.net", "carol@example.net"])
    assert out.eom == Milter.CONTINUE and out.mail == Milter.CONTINUE
    assert out.rcpts == [Milter.CONTINUE, Milter.CONTINUE]
    assert len(calls) == 1 and len(eom.calls) == 1
    assert eom.calls[0].envelope.rcpts == ("bob@example.net", "carol@example.net")
