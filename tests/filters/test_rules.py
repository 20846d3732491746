"""The ``rules`` filter: the pipeline.toml contract, every condition, every action, errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rohrpost.apply import apply_changes
from rohrpost.changes import AddHeader, AddRecipient, ChangeHeader, DeleteRecipient
from rohrpost.config import ConfigError
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.options import OptionError
from rohrpost.result import Action
from tests.support.contract import RULES_CONTRACT

from .helpers import header_names, make_filter, message, run_filter, run_pipeline

CONTRACT = RULES_CONTRACT

PLAIN = message("From: a@example.org", "To: b@example.net", "Subject: hello")


def test_contract_reject_subject() -> None:
    out = run_pipeline(CONTRACT, message("From: a@example.org", "Subject: Buy NOW cheap")).outcome
    assert out.action is Action.REJECT
    assert (out.verdict.reply.code, out.verdict.reply.enhanced) == (550, "5.7.1")
    assert out.verdict.reply.text == "Blocked by local policy"
    assert [s.name for s in out.symbols] == ["BLOCKED_SUBJECT"]


def test_contract_newsletter() -> None:
    done = run_pipeline(CONTRACT, message("From: a@example.org", "Subject: hi",
                                          "List-Id: News <news.example.org>"))
    assert done.outcome.action is Action.ACCEPT
    assert done.outcome.score == 2.5
    assert [(s.name, s.score) for s in done.outcome.symbols] == [("NEWSLETTER", 2.5)]
    assert b"\nX-Newsletter: yes\n" in done.message.raw
    assert done.message.get_all("X-Newsletter")[0].value == "yes"


def test_contract_quarantine_partner() -> None:
    env = Envelope(mail_from="x@partner.example", rcpts=("b@example.net",))
    out = run_pipeline(CONTRACT, PLAIN, env).outcome
    assert out.action is Action.QUARANTINE
    assert [s.name for s in out.symbols] == ["HOLD_FOR_REVIEW"]


def test_contract_plain_mail_passes_unchanged_headers() -> None:
    done = run_pipeline(CONTRACT, PLAIN)
    assert done.outcome.action is Action.ACCEPT
    assert done.outcome.symbols == []
    assert "X-Newsletter" not in header_names(done.message)


def matches(rule: dict[str, Any], msg: Message = PLAIN, env: Envelope | None = None) -> bool:
    flt = make_filter("rules", rule=[{"name": "R", "score": 1.0, **rule}])
    return [s.name for s in run_filter(flt, msg, env).symbols] == ["R"]


ENC = message("From: a@example.org", "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= aus\n Berlin",
              "Received: from a", "Received: from b", "X-List: <Foo@Example.ORG>")
ENV = Envelope(client_ip="192.0.2.7", helo="mail.example.org", mail_from="a@example.org",
               rcpts=("x@example.net", "y@other.example"), auth_user="alice")

CONDITIONS = [
    ({"header": "Subject", "regex": "^Grüße aus Berlin$"}, True),  # decoded and unfolded
    ({"header": "Subject", "regex": "Paris"}, False),
    ({"header": "subject", "equals": "grüße AUS berlin"}, True),  # name and value: no case
    ({"header": "Subject", "equals": "Grüße"}, False),
    ({"header": "Subject", "contains": "AUS"}, True),
    ({"header": "Subject", "contains": "nach"}, False),
    ({"header": "Subject", "exists": True}, True),
    ({"header": "Subject"}, True),  # a bare header means "present"
    ({"header": "List-Id"}, False),
    ({"header": "List-Id", "exists": False}, True),
    ({"header": "Received", "count_min": 2}, True),
    ({"header": "Received", "count_min": 3}, False),
    ({"header": "Received", "count_max": 2}, True),
    ({"header": "Received", "count_max": 1}, False),
    ({"header": "Received", "regex": "from b"}, True),  # any occurrence matches
    ({"header": "X-List", "values": ["foo@example.org"]}, True),  # the address is listed
    ({"header": "X-List", "values": ["<foo@example.org>"]}, True),  # the whole value is listed
    ({"header": "X-List", "values": ["bar@example.org"]}, False),
    ({"envelope_from": "@example\\.org$"}, True),
    ({"envelope_from": "@example\\.net$"}, False),
    ({"envelope_to": "^y@"}, True),  # any recipient
    ({"envelope_to": "^z@"}, False),
    ({"client_ip": ["10.0.0.0/8", "192.0.2.0/24"]}, True),
    ({"client_ip": ["10.0.0.0/8"]}, False),
    ({"helo": "^mail\\."}, True),
    ({"helo": "^smtp\\."}, False),
    ({"auth_user": "^alice$"}, True),
    ({"auth_user": "^bob$"}, False),
    ({"authenticated": True}, True),
    ({"authenticated": False}, False),
    ({"body": "(?i)bonjour"}, True),
    ({"body": "bonsoir"}, False),
    ({"body": "bonjour", "body_max": 3}, False),  # only the first body_max characters
    ({"size_over": 10}, True),
    ({"size_over": 100_000}, False),
    ({"size_under": 100_000}, True),
    ({"size_under": 10}, False),
    ({"header": "Subject", "contains": "aus", "envelope_from": "@example", "size_over": 1}, True),
    ({"header": "Subject", "contains": "aus", "envelope_from": "@nowhere"}, False),  # AND
    ({"not": True, "envelope_from": "@nowhere"}, True),
    ({"not": True, "envelope_from": "@example"}, False),
    ({}, True),  # no condition: always
]


@pytest.mark.parametrize(("rule", "expected"), CONDITIONS)
def test_condition(rule: dict[str, Any], expected: bool) -> None:
    msg = Message(ENC.raw.replace(b"Hello.", b"Bonjour, le monde."))
    assert matches(rule, msg, ENV) is expected


def test_client_ip_without_client_does_not_match() -> None:
    assert not matches({"client_ip": ["0.0.0.0/0"]}, PLAIN, Envelope())


def test_in_list_file(tmp_path: Any) -> None:
    listed = tmp_path / "senders.txt"
    listed.write_text("# blocked senders\n\nSpammer@Example.COM\n")
    rule = {"header": "From", "in_list": str(listed)}
    assert matches(rule, message("From: Spam <spammer@example.com>"))
    assert not matches(rule, message("From: Ham <ham@example.com>"))


def test_header_match_is_capped_at_64k() -> None:
    msg = message("Subject: " + "a" * 70_000 + "NEEDLE")
    assert not matches({"header": "Subject", "regex": "NEEDLE"}, msg)
    assert matches({"header": "Subject", "regex": "^a+$"}, msg)


def rules_result(*rules: dict[str, Any], msg: Message = PLAIN, env: Envelope | None = None) -> Any:
    return run_filter(make_filter("rules", rule=list(rules)), msg, env)


@pytest.mark.parametrize(("action", "reply", "expect"), [
    ("reject", "", (Action.REJECT, 550, "5.7.1")),
    ("reject", "554 5.7.0 No thanks", (Action.REJECT, 554, "5.7.0")),
    ("tempfail", "", (Action.TEMPFAIL, 451, "4.7.1")),
    ("tempfail", "450 4.2.0 Later", (Action.TEMPFAIL, 450, "4.2.0")),
    ("discard", "", (Action.DISCARD, 250, "2.0.0")),
    ("quarantine", "", (Action.QUARANTINE, 250, "2.0.0")),
    ("accept", "", (Action.ACCEPT, 250, "2.0.0")),
])
def test_final_actions(action: str, reply: str, expect: tuple[Action, int, str]) -> None:
    res = rules_result({"name": "A", "action": action, "message": reply},
                       {"name": "NEVER_REACHED", "score": 1.0})
    assert res.verdict is not None
    assert (res.verdict.action, res.verdict.reply.code, res.verdict.reply.enhanced) == expect
    assert [s.name for s in res.symbols] == ["A"]  # a final action stops the filter


def test_first_final_action_wins_and_earlier_symbols_stay() -> None:
    res = rules_result({"name": "S", "score": 1.5}, {"name": "Q", "action": "quarantine"},
                       {"name": "R", "action": "reject"})
    assert res.verdict is not None and res.verdict.action is Action.QUARANTINE
    assert [(s.name, s.score) for s in res.symbols] == [("S", 1.5), ("Q", 0.0)]
    assert res.score == 1.5


def test_stop() -> None:
    res = rules_result({"name": "A", "score": 1.0, "stop": True}, {"name": "B", "score": 1.0})
    assert [s.name for s in res.symbols] == ["A"]
    res = rules_result({"name": "A", "score": 1.0, "stop": True, "envelope_from": "^nobody"},
                       {"name": "B", "score": 1.0})
    assert [s.name for s in res.symbols] == ["B"]  # stop only after a match


TWO = message("From: a@example.org", "X-Tag: one", "Subject: s", "X-Tag: two")
ENV2 = Envelope(mail_from="a@example.org", rcpts=("b@example.net", "c@example.net"))


@pytest.mark.parametrize(("rule", "changes"), [
    ({"add_header": {"name": "X-Hit", "value": "{rule} scored {score:.1f}"}, "score": 2.0},
     [AddHeader("X-Hit", "R scored 2.0")]),
    ({"change_header": {"name": "Subject", "value": "[{rule}] s"}},
     [ChangeHeader("Subject", 1, "[R] s")]),
    ({"remove_header": "x-tag"}, [ChangeHeader("x-tag", 2, None), ChangeHeader("x-tag", 1, None)]),
    ({"add_recipient": "archive@example.net"}, [AddRecipient("archive@example.net")]),
    ({"delete_recipient": "c@example.net"}, [DeleteRecipient("c@example.net")]),
    ({"redirect": "review@example.net"},
     [DeleteRecipient("b@example.net"), DeleteRecipient("c@example.net"),
      AddRecipient("review@example.net")]),
])
def test_change_actions(rule: dict[str, Any], changes: list[Any]) -> None:
    res = rules_result({"name": "R", **rule}, msg=TWO, env=ENV2)
    assert list(res.changes) == changes


PIPE_ACTIONS = '''
[[filter]]
use = "rules"

[[filter.rule]]
name = "TAG"
add_header = { name = "X-Rule", value = "{rule}" }
remove_header = "X-Tag"
change_header = { name = "Subject", value = "[{rule}] s" }

[[filter.rule]]
name = "ROUTE"
redirect = "review@example.net"
add_recipient = "archive@example.net"
'''


def test_actions_through_the_pipeline() -> None:
    done = run_pipeline(PIPE_ACTIONS, TWO, ENV2)
    assert done.outcome.action is Action.ACCEPT
    names = header_names(done.message)
    assert "X-Tag" not in names
    assert done.message.get("Subject") == "[TAG] s"
    assert done.message.get("X-Rule") == "TAG"
    assert done.envelope.rcpts == ("review@example.net", "archive@example.net")


def test_header_injection_through_add_header() -> None:
    toml = PIPE_HEADER.format(value='ok\\r\\nBcc: victim@example.com\\nX-Evil: 1')
    done = run_pipeline(toml, PLAIN)
    names = header_names(done.message)
    assert "Bcc" not in names and "X-Evil" not in names
    assert done.message.get("X-Hit") == "ok Bcc: victim@example.com X-Evil: 1"
    assert b"\nBcc:" not in done.message.raw and b"\rBcc:" not in done.message.raw


PIPE_HEADER = '''
[[filter]]
use = "rules"

[[filter.rule]]
name = "INJ"
add_header = {{ name = "X-Hit", value = "{value}" }}
'''


def config_error(rules_toml: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        run_pipeline('[[filter]]\nuse = "rules"\n\n' + rules_toml, PLAIN)
    return info.value


# lines before the rule snippet: PIPELINE_HEAD (4) and the [[filter]] table (3); an error
# located at a [[filter.rule]] table names that table's line; -2 is the [[filter]] line
OFFSET = 7


@pytest.mark.parametrize(("rules_toml", "line", "key", "words"), [
    ('[[filter.rule]]\nname = "R"\nheader = "Subject"\nregex = "(unclosed"\nscore = 1.0\n',
     1, "filter[0].rule[0]", ["'R'", "invalid regex in regex", "(unclosed", "missing )"]),
    ('[[filter.rule]]\nname = "R"\nenvelope_from = "["\naction = "reject"\n',
     1, "filter[0].rule[0]", ["invalid regex in envelope_from"]),
    ('[[filter.rule]]\nname = "R"\naction = "reject"\nmessage = "451 4.7.1 Later"\n',
     1, "filter[0].rule[0]", ["'reject' needs a 5xx"]),
    ('[[filter.rule]]\nname = "R"\naction = "tempfail"\nmessage = "550 5.7.1 No"\n',
     1, "filter[0].rule[0]", ["'tempfail' needs a 4xx"]),
    ('[[filter.rule]]\nname = "R"\naction = "reject"\nmessage = "go away"\n',
     1, "filter[0].rule[0]", ["not an SMTP reply"]),
    ('[[filter.rule]]\nname = "R"\nscore = 1.0\n\n[[filter.rule]]\nname = "S"\nheadr = "X"\n',
     7, "filter[0].rule[1].headr", ["unknown option", "did you mean 'header'"]),
    ('[[filter.rule]]\nname = "R"\naction = "bounce"\n',
     3, "filter[0].rule[0].action", ["must be one of"]),
    ('[[filter.rule]]\nname = "R"\nregex = "x"\nscore = 1.0\n',
     1, "filter[0].rule[0]", ["need header"]),
    ('[[filter.rule]]\nname = "R"\nheader = "Subject"\n',
     1, "filter[0].rule[0]", ["does nothing"]),
    ('[[filter.rule]]\nname = "R"\nadd_header = { name = "X", value = "{rule.__class__}" }\n',
     1, "filter[0].rule[0]", ["only {rule} and {score}"]),
    ('[[filter.rule]]\nname = "R"\nadd_header = { name = "Bad Name", value = "x" }\n',
     3, "filter[0].rule[0].add_header", ["invalid header name"]),
    ('[[filter.rule]]\nname = "R"\nclient_ip = ["10.0.0.300/8"]\nscore = 1.0\n',
     1, "filter[0].rule[0]", ["client_ip"]),
    ('[[filter.rule]]\nname = "R"\nredirect = "a@b>\\r\\nX: y"\n',
     1, "filter[0].rule[0]", ["not a plain address"]),
    ('[[filter.rule]]\nname = "R"\nheader = "From"\nin_list = "/nonexistent/list"\n'
     'score = 1.0\n', 1, "filter[0].rule[0]", ["cannot read in_list"]),
    ('[[filter.rule]]\nscore = 1.0\n', 1, "filter[0].rule[0].name", ["is required"]),
    ('[[filter.rule]]\nname = "R"\nscore = 1\n[[filter.rule]]\nname = "R"\nscore = 2\n',
     -2, "filter[0]", ["two rules are called 'R'"]),
])
def test_config_errors(rules_toml: str, line: int, key: str, words: list[str]) -> None:
    err = config_error(rules_toml)
    assert err.key == key
    assert err.line == line + OFFSET
    for word in words:
        assert word in str(err)


def test_not_is_the_toml_key() -> None:
    done = run_pipeline('[[filter]]\nuse = "rules"\n[[filter.rule]]\nname = "NOT_LOCAL"\n'
                        'not = true\nenvelope_from = "@example\\\\.org$"\nscore = 3.0\n',
                        PLAIN, Envelope(mail_from="x@elsewhere.example", rcpts=("b@x.example",)))
    assert [s.name for s in done.outcome.symbols] == ["NOT_LOCAL"]


def test_empty_rule_list_is_a_no_op() -> None:
    assert rules_result().symbols == []


def test_option_error_outside_a_config() -> None:
    with pytest.raises(OptionError):
        make_filter("rules", rule=[{"name": "R", "body": "(", "score": 1.0}])


SPECIAL = [*'ab: ;<>"=?', "\r", "\n", "\x00", "\u2028", "\u2029", "\x85", "\t", "é", "\U0001F600"]
HEADER_TEXT = st.one_of(st.text(alphabet=st.sampled_from(SPECIAL), max_size=80),
                        st.text(max_size=80))


@settings(max_examples=150, deadline=None)
@given(value=HEADER_TEXT, incoming=HEADER_TEXT)
def test_property_no_crash_no_extra_header(value: str, incoming: str) -> None:
    safe_incoming = incoming.replace("\r", " ").replace("\n", " ")
    msg = Message(b"From: a@example.org\nSubject: " + safe_incoming.encode() + b"\n\nbody\n")
    template = value.replace("{", "{{").replace("}", "}}") + " {rule} {score}"
    flt = make_filter("rules", rule=[
        {"name": "SUBJ", "header": "Subject", "regex": ".", "score": 1.0,
         "add_header": {"name": "X-Rule", "value": template}},
        {"name": "ANY", "header": "Subject", "contains": incoming[:5] or "x", "stop": True,
         "change_header": {"name": "Subject", "value": template}},
    ])
    res = run_filter(flt, msg)
    new, _env = apply_changes(msg, Envelope(), res.changes)
    names = [h.name.lower() for h in new.headers]
    assert names.count("from") == 1 and names.count("subject") <= 1
    assert set(names) <= {"from", "subject", "x-rule"}
    assert names.count("x-rule") <= 1
    assert new.body == b"body\n"
