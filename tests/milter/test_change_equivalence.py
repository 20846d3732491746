"""Property: a change list applied through the milter equals ``apply_changes`` on the bytes.

The milter side is modelled by ``ExactCtx`` (Postfix cleanup's semantics for addheader,
insheader, chgheader); the byte side is ``rohrpost.apply.apply_changes``. Values include long
ones that fold and explicit folds, names repeat so occurrences matter.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rohrpost.apply import apply_changes
from rohrpost.changes import AddHeader, AddRecipient, ChangeHeader, DeleteRecipient, InsertHeader
from rohrpost.envelope import Envelope
from rohrpost.filter import Stage
from rohrpost.message import Message
from rohrpost.result import FilterResult
from tests.milter.conftest import FnFilter, const
from tests.milter.harness import replay

NAMES = ["Subject", "X-A", "X-B", "Received", "Authentication-Results"]
WORDS = st.text(alphabet="abcdefghij;=.@-", min_size=1, max_size=12)
VALUES = st.lists(WORDS, min_size=1, max_size=18).map(" ".join)
FOLDED = st.lists(VALUES, min_size=1, max_size=3).map(";\n\t".join)

MESSAGE = Message(b"Received: from a by b;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
                  b"Subject: hi\r\nX-A: one\r\nX-B: two\r\nX-A: three\r\n\r\nbody\r\n")
RCPTS = ["b@example.net", "c@example.net"]

changes_strategy = st.lists(
    st.one_of(
        st.builds(AddHeader, st.sampled_from(NAMES), st.one_of(VALUES, FOLDED)),
        st.builds(InsertHeader, st.integers(0, 8), st.sampled_from(NAMES), VALUES),
        st.builds(ChangeHeader, st.sampled_from(NAMES), st.integers(1, 3),
                  st.one_of(st.none(), VALUES, FOLDED)),
        st.builds(AddRecipient, st.sampled_from(["x@example.net", "B@example.net"])),
        st.builds(DeleteRecipient, st.sampled_from(["c@example.net", "y@example.net"])),
    ),
    max_size=12,
)


@pytest.fixture
def app(rig):
    flt = FnFilter(Stage.EOM, const(FilterResult()))
    return rig, flt, rig.app(("eom", flt))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=changes_strategy, postfix=st.booleans())
# found by this test: inserts at the top push Postfix's hidden Received down, so a later
# insert at index 1 must land above it, not below (rohrpost.milter.mchanges._Inserts)
@example(changes=[InsertHeader(0, "Subject", "; ;"), InsertHeader(0, "Subject", ";"),
                  InsertHeader(1, "Subject", ";")], postfix=True)
@example(changes=[InsertHeader(0, "X-A", "a"), ChangeHeader("X-A", 1, None),
                  InsertHeader(1, "X-B", "b")], postfix=True)
def test_milter_and_bytes_agree(app, changes, postfix):
    rig, flt, built = app

    async def fn(mail):
        return FilterResult(changes=changes)

    flt.fn = fn
    ctx = rig.ctx(built, postfix)
    out = replay(ctx, MESSAGE.raw, "a@example.org", RCPTS)
    assert out.eom == 0
    expected, env = apply_changes(MESSAGE, Envelope(rcpts=tuple(RCPTS)), changes)
    assert ctx.header_bytes() == expected.header_bytes
    added = [r.strip("<>") for r in ctx.added_rcpts]
    deleted = [r.strip("<>") for r in ctx.deleted_rcpts]
    assert [r for r in RCPTS if r not in deleted] + added == list(env.rcpts)
