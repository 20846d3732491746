"""Destination parsing, the public names, and the report's exit-code table."""

import pytest

import rohrpost.deliver as deliver_pkg
from rohrpost.deliver import (
    DeliveryReport,
    Destination,
    DestinationError,
    RcptOutcome,
    deliver,
    parse_destination,
)
from rohrpost.envelope import Envelope
from rohrpost.result import Reply


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("maildir:/home/a/Maildir", Destination("maildir", path="/home/a/Maildir")),
        ("mbox:/var/mail/a", Destination("mbox", path="/var/mail/a")),
        ("lmtp:127.0.0.1:24", Destination("lmtp", host="127.0.0.1", port=24)),
        ("lmtp:[::1]:2424", Destination("lmtp", host="::1", port=2424)),
        ("lmtp:unix:/run/dovecot/lmtp", Destination("lmtp", path="/run/dovecot/lmtp")),
        ("smtp:localhost:10026", Destination("smtp", host="localhost", port=10026)),
        ("pipe:/usr/bin/procmail -f- 'a b'",
         Destination("pipe", argv=("/usr/bin/procmail", "-f-", "a b"))),
        ("pipe:echo $(touch x); rm", Destination("pipe", argv=("echo", "$(touch", "x);", "rm"))),
    ],
)
def test_parse_valid(spec, expected):
    assert parse_destination(spec) == expected


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "unknown destination"),
        ("imap:foo", "unknown destination"),
        ("maildir:", "missing or invalid path"),
        ("mbox:/tmp/a\nb", "missing or invalid path"),
        ("lmtp:127.0.0.1", "expected HOST:PORT"),
        ("lmtp:::1:24", "brackets"),
        ("lmtp:[::1]24", "[IPV6]:PORT"),
        ("smtp:host:0", "port must be"),
        ("smtp:host:99999", "port must be"),
        ("smtp:host:abc", "port must be"),
        ("smtp::25", "missing or invalid host"),
        ("lmtp:unix:", "socket path"),
        ("pipe:", "missing command"),
        ("pipe:echo 'unbalanced", "cannot split"),
    ],
)
def test_parse_invalid_says_what_and_example(spec, fragment):
    with pytest.raises(DestinationError) as info:
        parse_destination(spec)
    assert fragment in str(info.value)
    assert "example:" in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "spec",
    ["maildir:/x", "mbox:/y", "lmtp:127.0.0.1:24", "lmtp:[::1]:24", "lmtp:unix:/s", "smtp:h:25",
     "pipe:/bin/cat -u"],
)
def test_str_round_trips(spec):
    assert str(parse_destination(spec)) == spec


def test_public_names_match_all():
    for name in ["DestinationError", "Destination", "parse_destination", "RcptOutcome",
                 "DeliveryReport", "deliver"]:
        assert name in deliver_pkg.__all__
        assert hasattr(deliver_pkg, name)
    assert sorted(deliver_pkg.__all__) == sorted(set(deliver_pkg.__all__))


def _report(*replies):
    return DeliveryReport(
        tuple(RcptOutcome(f"r{i}@x", Reply(*r)) for i, r in enumerate(replies)), "test")


@pytest.mark.parametrize(
    ("replies", "ok", "temporary", "exit_code"),
    [
        ([(250, "2.0.0", "ok")], True, False, 0),
        ([(250, "2.0.0", "ok"), (250, "2.1.5", "ok")], True, False, 0),
        ([(451, "4.3.0", "later")], False, True, 75),
        ([(250, "2.0.0", "ok"), (452, "4.2.2", "full")], False, True, 75),
        ([(550, "5.1.1", "nouser"), (451, "4.3.0", "later")], False, True, 75),
        ([(550, "5.1.1", "nouser")], False, False, 67),
        ([(550, "5.7.1", "policy")], False, False, 77),
        ([(550, "5.2.0", "cannot write")], False, False, 73),
        ([(554, "5.3.0", "other")], False, False, 69),
        ([(250, "2.0.0", "ok"), (550, "5.1.1", "nouser")], False, False, 67),
        ([(550, "5.7.1", "policy"), (550, "5.1.1", "nouser")], False, False, 77),
    ],
)
def test_report_exit_codes(replies, ok, temporary, exit_code):
    report = _report(*replies)
    assert report.ok is ok
    assert report.temporary is temporary
    assert report.permanent is (not ok and not temporary)
    assert report.exit_code == exit_code


def test_empty_report_is_temporary():
    report = DeliveryReport((), "nothing")
    assert not report.ok
    assert report.exit_code == 75


def test_unexpected_error_becomes_tempfail_not_bounce():
    report = deliver(Destination("bogus"), b"x\n", Envelope(rcpts=("a@x", "b@x")))
    assert [(o.rcpt, o.reply.code, o.reply.enhanced) for o in report.outcomes] == [
        ("a@x", 451, "4.3.0"), ("b@x", 451, "4.3.0")]
    assert report.exit_code == 75
    assert report.outcomes[0].reply.text.startswith("internal error while delivering")
    assert "internal error" in report.detail
