"""The ``headers`` filter: forged header removal, limits, duplicate singletons."""

from __future__ import annotations

from typing import Any

import pytest
from rohrpost.filters.headers import authserv_id as parse_authserv_id

from rohrpost.changes import ChangeHeader
from rohrpost.config import ConfigError
from rohrpost.envelope import Envelope
from rohrpost.result import Action

from .helpers import context, header_names, make_filter, message, run_filter, run_pipeline

# someone else's A-R first: see the xfail test below for the order the core mishandles
FORGED = message(
    "Authentication-Results: other.example; dkim=pass",
    "Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=example.org",
    "Received: from x by y; date",
    "X-Spam-Flag: YES",
    "From: a@example.org",
    "x-spam-status: Yes, score=99",
    "Authentication-Results: \"mx.example.net\" 1; dkim=pass",
    "X-Spam-Status: No",
    "X-Internal: secret",
    "Subject: s",
)


@pytest.mark.parametrize(("value", "expected"), [
    ("mx.example.net; spf=pass", "mx.example.net"),
    ("  mx.example.net 1; none", "mx.example.net"),
    ('"mx.example.net"; none', "mx.example.net"),
    ('"mx.\\"example"; none', 'mx."example'),
    ("(comment (nested)) mx.example.net; none", "mx.example.net"),
    ("mx.example.net(c); none", "mx.example.net"),
    ("", ""),
    ("(unclosed", ""),
])
def test_authserv_id(value: str, expected: str) -> None:
    assert parse_authserv_id(value) == expected


def test_removals_highest_first() -> None:
    res = run_filter(make_filter("headers"), FORGED, Envelope(client_ip="192.0.2.1"))
    assert list(res.changes) == [
        ChangeHeader("X-Spam-Flag", 1, None),
        ChangeHeader("x-spam-status", 2, None),
        ChangeHeader("x-spam-status", 1, None),
        ChangeHeader("Authentication-Results", 3, None),
        ChangeHeader("Authentication-Results", 2, None),
    ]
    assert res.verdict is None and res.symbols == []


@pytest.mark.parametrize(("env", "removed"), [
    (Envelope(client_ip="192.0.2.1"), True),
    (Envelope(client_ip="192.0.2.1", auth_user="alice"), False),
    (Envelope(client_ip="127.0.0.1"), False),  # trusted_networks
    (Envelope(client_ip="10.1.2.3"), False),
])
def test_remove_from_untrusted(env: Envelope, removed: bool) -> None:
    flt = make_filter("headers", remove=[], remove_auth_results=False,
                      remove_from_untrusted=["X-Internal"])
    ctx = context(trusted=["127.0.0.0/8", "10.0.0.0/8"])
    res = run_filter(flt, FORGED, env, ctx)
    assert (list(res.changes) == [ChangeHeader("X-Internal", 1, None)]) is removed
    assert removed or not res.changes


def test_through_pipeline_bytes() -> None:
    done = run_pipeline('[[filter]]\nuse = "headers"\nremove_from_untrusted = ["X-Internal"]\n',
                        FORGED)
    names = header_names(done.message)
    assert "X-Internal" not in names
    assert names.count("X-Spam-Flag") == 0  # no forged YES survives; ours says No
    assert done.message.get("X-Spam-Status").startswith("No, score=0.0")
    ars = [h.value for h in done.message.get_all("Authentication-Results")]
    assert ars == ["other.example; dkim=pass"]


def test_foreign_auth_results_survive_overlap_with_policy() -> None:
    msg = message("Authentication-Results: mx.example.net; spf=pass",
                  "Authentication-Results: upstream.example; dkim=pass",
                  "From: a@example.org", "Subject: s")
    done = run_pipeline('[[filter]]\nuse = "headers"\n', msg)
    assert [h.value for h in done.message.get_all("Authentication-Results")] == [
        "upstream.example; dkim=pass"]


MANY = message(*[f"X-H{i}: v" for i in range(12)], "From: a@example.org")
LONG = message("Subject: " + "a" * 200, "From: a@example.org")


@pytest.mark.parametrize(("options", "msg", "action", "reply", "symbols"), [
    ({"max_header_count": 12}, MANY, Action.REJECT, "552 5.6.0 Headers too large",
     [("HEADERS_TOO_MANY", 0.0)]),
    ({"max_header_count": 13}, MANY, None, "", []),
    ({"max_header_size": 100}, LONG, Action.REJECT, "552 5.6.0 Headers too large",
     [("HEADER_TOO_LONG", 0.0)]),
    ({"max_headers_total": 100}, LONG, Action.REJECT, "552 5.6.0 Headers too large",
     [("HEADERS_TOO_LARGE", 0.0)]),
    ({"max_headers_total": 100, "action": "tempfail"}, LONG, Action.TEMPFAIL,
     "452 4.6.0 Headers too large", [("HEADERS_TOO_LARGE", 0.0)]),
    ({"max_header_size": 100, "max_headers_total": 100, "action": "score", "score": 3.0}, LONG,
     None, "", [("HEADER_TOO_LONG", 3.0), ("HEADERS_TOO_LARGE", 3.0)]),
])
def test_limits(options: dict[str, Any], msg: Any, action: Action | None, reply: str,
                symbols: list[tuple[str, float]]) -> None:
    res = run_filter(make_filter("headers", **options), msg)
    assert (res.verdict.action if res.verdict else None) is action
    if res.verdict is not None:
        assert str(res.verdict.reply) == reply
        assert not res.changes
    assert [(s.name, s.score) for s in res.symbols] == symbols


DUPS = message("From: a@example.org", "Subject: one", "from: b@example.org", "Subject: two",
               "Message-ID: <1@x>", "Message-ID: <2@x>", "Received: a", "Received: b")


def test_duplicate_singletons() -> None:
    res = run_filter(make_filter("headers"), DUPS)
    assert [(s.name, s.score) for s in res.symbols] == [
        ("HEADER_DUPLICATE_FROM", 1.0), ("HEADER_DUPLICATE_MESSAGE_ID", 1.0),
        ("HEADER_DUPLICATE_SUBJECT", 1.0)]
    res = run_filter(make_filter("headers", singletons=["Subject"], duplicate_score=0.5), DUPS)
    assert [(s.name, s.score) for s in res.symbols] == [("HEADER_DUPLICATE_SUBJECT", 0.5)]


@pytest.mark.parametrize(("toml", "key", "words"), [
    ('remove = ["Bad Name"]\n', "filter[0]", "invalid header name"),
    ('action = "reject"\nmessage = "452 4.6.0 x"\n', "filter[0]", "needs a 5xx"),
    ('action = "score"\nmessage = "552 5.6.0 x"\n', "filter[0]", "message needs action"),
    ('max_header_count = 0\n', "filter[0]", "at least 1"),
    ('remve = []\n', "filter[0].remve", "did you mean 'remove'"),
])
def test_config_errors(toml: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        run_pipeline('[[filter]]\nuse = "headers"\n' + toml, DUPS)
    assert info.value.key == key and info.value.line >= 5
    assert words in str(info.value)
