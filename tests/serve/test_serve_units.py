"""Pure parts of rohrpost.smtpd: XFORWARD parsing, delivery report to DATA replies, addresses."""

import pytest

from rohrpost.deliver import DeliveryReport, RcptOutcome
from rohrpost.result import Reply
from rohrpost.smtpd import parse_hostport
from rohrpost.smtpd.replies import DEFERRED, REMOVED_BY_FILTER, lmtp_data_replies, smtp_data_reply
from rohrpost.smtpd.xforward import XForward, XForwardError, decode_xtext, parse_xforward

OK = Reply(250, "2.0.0", "Ok: queued as X")
TEMP = Reply(450, "4.2.1", "busy")
PERM = Reply(550, "5.1.1", "unknown")


def report(*pairs):
    return DeliveryReport(tuple(RcptOutcome(r, rep) for r, rep in pairs), "test")


@pytest.mark.parametrize(("arg", "expected"), [
    ("ADDR=192.0.2.1", XForward(addr="192.0.2.1")),
    ("addr=IPv6:2001:DB8::1 name=[UNAVAILABLE]", XForward(addr="2001:db8::1")),
    ("HELO=a+2Bb IDENT=ABC PROTO=ESMTP SOURCE=REMOTE PORT=25",
     XForward(helo="a+b", ident="ABC", proto="ESMTP", source="REMOTE", port="25")),
    ("NAME=[TEMPUNAVAIL] ADDR=[UNAVAILABLE]", XForward()),
])
def test_parse_xforward(arg, expected):
    assert parse_xforward(arg, XForward()) == expected


def test_parse_xforward_is_incremental():
    first = parse_xforward("ADDR=192.0.2.1", XForward())
    assert parse_xforward("HELO=h", first) == XForward(addr="192.0.2.1", helo="h")


@pytest.mark.parametrize("arg", ["", "ADDR", "=x", "BOGUS=1", "ADDR=300.1.1.1", "PORT=x",
                                 "HELO=a+0Db", "NAME=" + "a" * 300])
def test_parse_xforward_errors(arg):
    with pytest.raises(XForwardError) as err:
        parse_xforward(arg, XForward())
    assert err.value.reply.startswith("501 5.5.4")
    assert "\r" not in err.value.reply and "\n" not in err.value.reply


def test_decode_xtext_keeps_malformed():
    assert decode_xtext("a+2Bb+zz") == "a+b+zz"


@pytest.mark.parametrize(("pairs", "code"), [
    ([("a", OK), ("b", OK)], 250),
    ([("a", OK), ("b", TEMP)], 451),
    ([("a", PERM), ("b", TEMP)], 451),
    ([("a", PERM), ("b", PERM)], 550),
    ([("a", OK), ("b", PERM)], 554),
])
def test_smtp_data_reply(pairs, code):
    assert smtp_data_reply(report(*pairs)).code == code


def test_smtp_data_reply_keeps_next_hop_text_and_generic_deferral():
    assert smtp_data_reply(report(("a", OK))) == OK
    assert smtp_data_reply(report(("a", TEMP))) == DEFERRED


def test_lmtp_replies_follow_accepted_recipients():
    got = lmtp_data_replies(["A@x", "b@x"], ["A@x", "b@x"], report(("a@x", TEMP), ("b@x", OK)))
    assert got == [TEMP, OK]


def test_lmtp_local_agent_reply_shared():
    assert lmtp_data_replies(["a", "b"], ["a", "b"], report(("a", OK), ("b", OK))) == [OK, OK]


def test_lmtp_removed_and_added_recipients():
    # a filter removed b and added archive: b gets 250, an archive deferral defers the rest
    assert lmtp_data_replies(["a", "b"], ["a", "archive"], report(("a", OK), ("archive", OK))) \
        == [OK, REMOVED_BY_FILTER]
    assert lmtp_data_replies(["a", "b"], ["a", "archive"],
                             report(("a", OK), ("archive", TEMP))) == [DEFERRED, REMOVED_BY_FILTER]
    assert lmtp_data_replies(["a"], ["a", "archive"], report(("a", OK), ("archive", PERM))) \
        == [OK]


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:10025", ("127.0.0.1", 10025)), ("[::1]:24", ("::1", 24)),
    ("localhost:0", ("localhost", 0)),
])
def test_parse_hostport(text, expected):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", ["", "host", "::1:25", "h:x", "h:70000", ":25"])
def test_parse_hostport_errors(text):
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_hostport(text)
