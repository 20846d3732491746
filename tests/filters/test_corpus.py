"""Every MIME test message of CPython and stalwart mail-parser through all four filters.

The corpora live in ../shared/testdata and are read in place (never copied). The assertion is
robustness: no exception, an outcome for every message, and an accepted message that still
parses with the same body.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.result import Action

from .helpers import run_pipeline

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
CORPORA = ("mime-cpython-test_email", "mime-stalwart-mail-parser")


def corpus_files() -> list[Path]:
    found = []
    for corpus in CORPORA:
        for root, _dirs, files in os.walk(TESTDATA / corpus):
            for name in files:
                path = Path(root) / name
                if name.endswith(".eml") or (name.startswith("msg_") and name.endswith(".txt")):
                    found.append(path)
    return sorted(found)


ALL_FOUR = r'''
[[filter]]
use = "headers"
remove_from_untrusted = ["X-Internal"]
max_header_count = 200
action = "score"

[[filter]]
use = "received"
add_received = true

[[filter]]
use = "size"
max_size = 200000
score_over = 20000

[[filter]]
use = "rules"

[[filter.rule]]
name = "SUBJECT_TEST"
header = "Subject"
regex = "(?i)test"
score = 0.5
add_header = { name = "X-Rule", value = "{rule} {score}" }

[[filter.rule]]
name = "BODY_HELLO"
body = "(?i)hello"
score = 0.1

[[filter.rule]]
name = "NO_DATE"
header = "Date"
exists = false
score = 0.1
remove_header = "X-Mailer"

[[filter.rule]]
name = "MULTI_FROM"
header = "From"
count_min = 2
action = "quarantine"
'''

FILES = corpus_files()


def test_corpora_found() -> None:
    assert TESTDATA.is_dir(), "../shared/testdata is missing (the corpora live beside the repo)"
    assert len(FILES) >= 90


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_message_through_all_four(path: Path) -> None:
    raw = path.read_bytes()
    env = Envelope(client_ip="192.0.2.1", helo="client.example.org", mail_from="a@example.org",
                   rcpts=("b@example.net",), queue_id="Q1")
    done = run_pipeline(ALL_FOUR, raw, env)
    assert isinstance(done.outcome.action, Action)
    assert [r.name for r in done.outcome.runs] == ["headers", "received", "size", "rules"]
    assert all(not r.error for r in done.outcome.runs), [r.error for r in done.outcome.runs]
    if done.outcome.action in (Action.ACCEPT, Action.QUARANTINE):
        again = Message(done.message.raw)
        assert again.body == Message(raw).body
        assert again.headers[0].name == "Received"
