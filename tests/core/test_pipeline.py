from __future__ import annotations

import asyncio

import pytest
from core_helpers import Fixed, Raises, Sleeps, make_pipeline

from rohrpost.config import When
from rohrpost.envelope import Envelope
from rohrpost.filter import Context, Mail, Services, Stage
from rohrpost.message import Message
from rohrpost.pipeline import LoopRequired, run_loop_free
from rohrpost.result import Action, AuthResult, FilterResult, Symbol, Verdict
from rohrpost.runner import process

MSG = Message(b"From: a@example.org\nSubject: hello\n\nbody\n")
ENV = Envelope(client_ip="192.0.2.1", mail_from="a@example.org",
               rcpts=("b@example.net", "c@example.net"))


def run(pipeline, env=ENV, msg=MSG):  # type: ignore[no-untyped-def]
    return asyncio.run(process(pipeline, Services(), env, msg))


def test_final_action_stops_pipeline() -> None:
    later = Fixed(FilterResult(symbols=[Symbol("LATER", 1.0)]))
    p = make_pipeline([("a", Fixed(FilterResult(verdict=Verdict.of(Action.REJECT, "550 5.7.1 no")))),
                       ("b", later)])
    done = run(p)
    assert done.outcome.action is Action.REJECT
    assert str(done.outcome.verdict.reply) == "550 5.7.1 no"
    assert later.seen == []


def test_exception_becomes_tempfail_with_generic_text() -> None:
    done = run(make_pipeline([("boom", Raises(FilterResult()))]))
    assert done.outcome.action is Action.TEMPFAIL
    assert done.outcome.verdict.reply.code == 451
    assert "secret" not in str(done.outcome.verdict.reply)
    assert [s.name for s in done.outcome.symbols] == ["BOOM_FAILED"]


def test_timeout_becomes_tempfail() -> None:
    done = run(make_pipeline([("slow", Sleeps(FilterResult()))], timeout=0.05))
    assert done.outcome.action is Action.TEMPFAIL
    assert done.outcome.runs[0].error.startswith("timeout")


def test_on_error_skip_continues() -> None:
    p = make_pipeline([("boom", Raises(FilterResult())),
                       ("next", Fixed(FilterResult(symbols=[Symbol("SEEN", 1.0)])))],
                      on_error="skip")
    done = run(p)
    assert done.outcome.action is Action.ACCEPT
    assert {s.name for s in done.outcome.symbols} == {"BOOM_FAILED", "SEEN"}


def test_rcpt_stage_rejects_one_recipient_only() -> None:
    class PerRcpt(Fixed):
        async def check(self, ctx, mail):  # type: ignore[no-untyped-def]
            self.seen.append(mail)
            if mail.rcpt.startswith("b@"):
                return FilterResult(verdict=Verdict.of(Action.REJECT, "550 5.1.1 unknown"))
            return FilterResult()

    flt = PerRcpt(FilterResult(), Stage.RCPT)
    body = Fixed(FilterResult())
    done = run(make_pipeline([("r", flt), ("eom", body)]))
    assert done.outcome.action is Action.ACCEPT
    assert done.envelope.rcpts == ("c@example.net",)
    assert [m.rcpt for m in flt.seen] == ["b@example.net", "c@example.net"]
    assert len(body.seen) == 1


def test_all_recipients_rejected_rejects_message() -> None:
    flt = Fixed(FilterResult(verdict=Verdict.of(Action.REJECT, "550 5.1.1 unknown")), Stage.RCPT)
    body = Fixed(FilterResult())
    done = run(make_pipeline([("r", flt), ("eom", body)]))
    assert done.outcome.action is Action.REJECT
    assert body.seen == []


def test_conditions() -> None:
    flt = Fixed(FilterResult(symbols=[Symbol("X", 1.0)]))
    p = make_pipeline([("only-auth", flt)], when=When(authenticated=True))
    assert run(p).outcome.symbols == []
    assert run(p, ENV.replace(auth_user="bob")).outcome.score == 1.0
    p2 = make_pipeline([("nets", flt)], when=When(client_networks=["192.0.2.0/24"]))
    assert run(p2).outcome.score == 1.0
    assert run(p2, ENV.replace(client_ip="198.51.100.1")).outcome.score == 0.0
    p3 = make_pipeline([("dom", flt)], when=When(recipient_domains=[".net"]))
    assert run(p3).outcome.score == 1.0


def test_prior_results_and_facts_visible_to_later_filters() -> None:
    first = Fixed(FilterResult(facts={"spf.result": "pass"}))
    second = Fixed(FilterResult())
    run(make_pipeline([("first", first), ("second", second)]))
    assert second.seen[0].fact("spf.result") == "pass"
    assert second.seen[0].prior[0][0] == "first"


TOML = """
[pipeline]
authserv_id = "mx.test"
[actions]
add_header = 5.0
rewrite_subject = 8.0
subject_tag = "[SPAM]\\r\\nBcc: victim@example.com"
quarantine = 12.0
reject = 15.0
"""


def scored(score: float) -> FilterResult:
    return FilterResult(symbols=[Symbol("S", score)],
                        auth=[AuthResult("spf", "pass", props=[("smtp.mailfrom", "a@example.org")])])


def test_thresholds_headers_and_subject_tag() -> None:
    msg = Message(b"From: a@example.org\nSubject: hello\nX-Spam-Flag: YES\n"
                  b"Authentication-Results: mx.test; spf=pass (forged)\n"
                  b"Authentication-Results: other.example; spf=fail\n\nbody\n")
    done = run(make_pipeline([("s", Fixed(scored(9.0)))], TOML), msg=msg)
    out = done.message
    assert done.outcome.action is Action.ACCEPT
    assert out.get("X-Spam-Flag") == "YES"
    assert out.get("X-Spam-Status").startswith("Yes, score=9.0 required=5.0 tests=S")
    assert out.get("Subject").startswith("[SPAM]")
    assert len(out.get_all("Subject")) == 1
    assert out.get_all("Bcc") == []
    ar = out.get_all("Authentication-Results")
    assert [h.value.split(";")[0] for h in ar] == ["mx.test", "other.example"]
    assert "spf=pass smtp.mailfrom=a@example.org" in ar[0].value
    assert len(out.get_all("X-Spam-Flag")) == 1
    assert out.get("X-Rohrpost-Result") == "action=accept score=9 symbols=S(9)"


def test_threshold_actions() -> None:
    assert run(make_pipeline([("s", Fixed(scored(12.5)))], TOML)).outcome.action is Action.QUARANTINE
    rejected = run(make_pipeline([("s", Fixed(scored(20)))], TOML)).outcome
    assert rejected.action is Action.REJECT
    assert str(rejected.verdict.reply) == "550 5.7.1 Message rejected as spam"
    ham = run(make_pipeline([("s", Fixed(scored(1)))], TOML)).message
    assert ham.get("X-Spam-Status").startswith("No, score=1.0")
    assert ham.get_all("X-Spam-Flag") == []


# --- loop-free driving (pipe mode without asyncio) -------------------------------------------


class Yields(Fixed):
    """Gives control back once with a bare yield (asyncio.sleep(0)) and then finishes."""

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        await asyncio.sleep(0)
        return self.result


class WantsExecutor(Fixed):
    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        return await ctx.run_blocking(lambda: self.result)


def test_loop_free_run_matches_asyncio_run() -> None:
    result = FilterResult(symbols=[Symbol("X", 1.5)])
    by_loop = run(make_pipeline([("a", Fixed(result)), ("b", Yields(result))]))
    free = run_loop_free(process(make_pipeline([("a", Fixed(result)), ("b", Yields(result))]),
                                 Services(), ENV, MSG))
    assert free.outcome.score == by_loop.outcome.score == 3.0
    assert free.outcome.action is by_loop.outcome.action is Action.ACCEPT
    assert [r.name for r in free.outcome.runs] == ["a", "b"]


@pytest.mark.parametrize("on_error", ["skip", "accept", "tempfail"])
@pytest.mark.parametrize("cls", [Sleeps, WantsExecutor])
def test_loop_free_never_lets_a_waiting_filter_pass(cls: type[Fixed], on_error: str) -> None:
    """A filter that needs the loop ends the run (exit 75 in pipe mode), whatever on_error."""
    p = make_pipeline([("io", cls(FilterResult()))], on_error=on_error)
    with pytest.raises(LoopRequired):
        run_loop_free(process(p, Services(), ENV, MSG))


def test_loop_free_filters_never_await() -> None:
    """``loop_free = True`` is a promise about ``check``: no await, async for or async with."""
    import inspect
    import re

    from rohrpost.registry import available, load_filter_class

    marked = [load_filter_class(n) for n in available() if load_filter_class(n).loop_free]
    assert {c.name for c in marked} >= {"headers", "received", "size", "rules"}
    for cls in marked:
        source = inspect.getsource(cls.check)
        assert not re.search(r"\bawait\b|\basync\s+(for|with)\b", source), cls.name


def test_run_all_runs_every_filter_but_keeps_the_first_verdict() -> None:
    grey = Fixed(FilterResult(verdict=Verdict.of(Action.TEMPFAIL, "451 4.7.1 Greylisted")),
                 Stage.RCPT)
    later = Fixed(FilterResult(verdict=Verdict.of(Action.REJECT, "550 5.7.1 spam"),
                               symbols=[Symbol("SPAMMY", 9.0)]))
    last = Fixed(FilterResult(symbols=[Symbol("SEEN", 1.0)]))
    p = make_pipeline([("grey", grey), ("spam", later), ("last", last)])
    faithful = run(p).outcome
    assert faithful.action is Action.TEMPFAIL
    assert [r.name for r in faithful.runs] == ["grey", "grey"]
    everything = asyncio.run(process(p, Services(), ENV, MSG, run_all=True)).outcome
    assert str(everything.verdict.reply) == "451 4.7.1 Greylisted"
    assert [r.name for r in everything.runs] == ["grey", "grey", "spam", "last"]
    assert {s.name for s in everything.symbols} == {"SPAMMY", "SEEN"}
