"""Corpora through the attachments filter: no exception, every message decided (no spamd)."""

from __future__ import annotations

import asyncio
import tarfile
from pathlib import Path

import pytest

from rohrpost.result import Action

from .helpers import CORPUS, TESTDATA, pipeline_for, run_many

PIPE = '[[filter]]\nuse = "attachments"\n'


def corpus_messages() -> list[bytes]:
    with tarfile.open(CORPUS) as tar:
        return [tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                if m.isfile()]


def test_spam_corpus_without_exception() -> None:
    messages = corpus_messages()
    assert len(messages) == 4122
    done = asyncio.run(run_many(pipeline_for(PIPE), messages))
    errors = [(i, r.error) for i, d in enumerate(done) for r in d.outcome.runs if r.error]
    assert errors == []
    actions = {a: sum(d.outcome.action is a for d in done) for a in Action}
    # 2002-era mail: a few carry .exe/.scr/.pif attachments or broken MIME; most pass
    assert actions[Action.ACCEPT] > 4000, actions


@pytest.mark.parametrize("folder", ["mime-stalwart-mail-parser", "mime-cpython-test_email"])
def test_mime_corpora_without_exception(folder: str) -> None:
    files = [p for p in sorted(Path(TESTDATA / folder).rglob("*"))
             if p.is_file() and p.suffix in (".eml", ".msg", ".txt", "") and p.stat().st_size]
    assert files
    done = asyncio.run(run_many(pipeline_for(PIPE), [p.read_bytes() for p in files]))
    assert [r.error for d in done for r in d.outcome.runs if r.error] == []
