"""spamassassin filter and SPAMC client against a real spamd (session-scoped: few messages)."""

from __future__ import annotations

import asyncio

import pytest

from filters._sockets import SocketAddress
from filters._spamc import SpamcClient, SpamdError, parse_reply, parse_report
from rohrpost.result import Action
from tests.support.daemons import SpamdInstance, free_port

from .helpers import SAMPLES, run, symbols

pytestmark = pytest.mark.integration

GTUBE = (SAMPLES / "sample-spam.txt").read_bytes()
HAM = (SAMPLES / "sample-nonspam.txt").read_bytes()


def sa_toml(port: int, extra: str = "", actions: str = "add_header = 5.0\nreject = 15.0") -> str:
    return (f'[[filter]]\nuse = "spamassassin"\nhost = "127.0.0.1"\nport = {port}\n'
            f'max_size = 512000\n{extra}\n[actions]\n{actions}\n')


def test_gtube_is_rejected_with_rules_explained(spamd: SpamdInstance) -> None:
    done = run(sa_toml(spamd.port), GTUBE)
    out = done.outcome
    assert out.action is Action.REJECT
    assert str(out.verdict.reply).startswith("550 5.7.1")
    syms = symbols(done)
    assert syms["SA_GTUBE"] == 1000.0
    facts = out.runs[0].result.facts
    # rule symbols carry the points; SPAMASSASSIN carries only the rest: no double counting
    assert out.score == pytest.approx(facts["spamassassin.score"], abs=0.001)
    assert abs(syms["SPAMASSASSIN"]) < 0.5
    # the envelope's client went to spamd as a Received header (spamass-milter's trick)
    assert "SA_RDNS_NONE" in syms
    assert facts["spamassassin.is_spam"] is True
    assert facts["spamassassin.score"] >= 1000
    assert facts["spamassassin.required"] == 5.0
    assert "GTUBE" in facts["spamassassin.rules"]


def test_nonspam_passes_with_spam_headers(spamd: SpamdInstance) -> None:
    done = run(sa_toml(spamd.port), HAM)
    assert done.outcome.action is Action.ACCEPT
    assert done.outcome.score < 5.0
    assert done.outcome.runs[0].result.facts["spamassassin.is_spam"] is False
    assert done.message.get("X-Spam-Status").startswith("No, score=")
    assert not done.message.get_all("X-Spam-Flag")


def test_add_header_threshold_writes_spam_flag(spamd: SpamdInstance) -> None:
    done = run(sa_toml(spamd.port, actions="add_header = 5.0"), GTUBE)
    assert done.outcome.action is Action.ACCEPT
    assert done.message.get("X-Spam-Flag") == "YES"
    assert "SA_GTUBE" in done.message.get("X-Spam-Status")


def test_score_factor_and_symbols_mode(spamd: SpamdInstance) -> None:
    done = run(sa_toml(spamd.port, 'detail = "symbols"\nscore_factor = 0.01'), GTUBE)
    syms = symbols(done)
    assert syms["SA_GTUBE"] == 0.0
    total = done.outcome.runs[0].result.facts["spamassassin.score"]
    assert syms["SPAMASSASSIN"] == pytest.approx(total * 0.01, abs=0.001)
    assert done.outcome.action is Action.ACCEPT  # 10 < reject 15


def test_size_cap_skips_without_contacting_spamd() -> None:
    port = free_port()  # nothing listens: a contact would fail
    big = GTUBE + b"x" * 2000
    done = run(sa_toml(port, actions="reject = 15.0").replace("max_size = 512000",
                                                              "max_size = 1000"), big)
    assert done.outcome.action is Action.ACCEPT
    assert symbols(done) == {"SPAMASSASSIN_SKIPPED_SIZE": 0.0}


def test_spamd_down_tempfails_through_on_error() -> None:
    port = free_port()
    done = run(sa_toml(port, 'on_error = "tempfail"\nconnect_timeout = 2.0'), GTUBE)
    assert done.outcome.action is Action.TEMPFAIL
    assert done.outcome.verdict.reply.code == 451
    assert "ConnectionRefused" not in str(done.outcome.verdict.reply)  # no detail to clients
    assert "SPAMASSASSIN_FAILED" in symbols(done)
    skip = run(sa_toml(port, 'on_error = "skip"'), GTUBE)
    assert skip.outcome.action is Action.ACCEPT


def test_unix_socket_path_that_does_not_exist_raises() -> None:
    client = SpamcClient(SocketAddress.parse("unix:/nonexistent/spamd.sock", 783))
    with pytest.raises(SpamdError, match="cannot connect"):
        asyncio.run(client.ping())


def test_client_commands(spamd: SpamdInstance) -> None:
    client = SpamcClient(SocketAddress(port=spamd.port), user="nobody")

    async def go() -> None:
        assert await client.ping()
        checked = await client.check(GTUBE)
        assert checked.is_spam and checked.score >= 1000 and checked.required == 5.0
        processed = await client.process(GTUBE)
        assert b"X-Spam-Flag: YES" in processed.body

    asyncio.run(go())


def test_parsers() -> None:
    reply = parse_reply(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 15.2 / 5.0\r\n"
                        b"\r\nhello world")
    assert (reply.is_spam, reply.score, reply.required, reply.body) == (True, 15.2, 5.0, b"hello")
    with pytest.raises(SpamdError, match="76"):
        parse_reply(b"SPAMD/1.0 76 Bad header line: (Content-Length contains non-numeric)\r\n")
    with pytest.raises(SpamdError):
        parse_reply(b"HTTP/1.0 200 OK\r\n\r\n")
    report = (" pts rule name              description\n"
              "---- ---------------------- ------------------------------------------\n"
              "-0.0 NO_RELAYS              Informational: message was not relayed via SMTP\n"
              " 2.5 SOME_LONG_RULE         A description that goes on and on and\n"
              "                            continues on a second line\n"
              "1000 GTUBE                  BODY: Generic Test for Unsolicited Bulk Email\n\n"
              "trailing text 9.9 NOT_A_RULE\n")
    rows = parse_report(report)
    assert [(r.points, r.rule) for r in rows] == [(-0.0, "NO_RELAYS"), (2.5, "SOME_LONG_RULE"),
                                                  (1000.0, "GTUBE")]
    assert rows[1].description.endswith("continues on a second line")
    assert parse_report("custom template without a table\n") == []
