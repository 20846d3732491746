"""The ``authres`` filter with the core's header handling, through the pipeline."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from rohrpost.filters.authres import parse_authres

from rohrpost.config import load_config, parse_config
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.runner import process
from tests.auth.helpers import make_services
from tests.e2e_auth.contrib import contrib_with_keys

MESSAGE = (
    b"Authentication-Results: forger.example; spf=pass smtp.mailfrom=x@bank.example\n"
    b"Authentication-Results: mx.test; dkim=pass header.d=bank.example\n"
    b"Authentication-Results: border.example.net; spf=pass (ok) smtp.mailfrom=a@ex.org;\n"
    b"\tdkim=fail reason=\"bad; sig\" header.d=ex.org header.s=s1; dmarc=none\n"
    b"Authentication-Results: other.example; arc=none\n"
    b"From: a@ex.org\nSubject: s\n\nbody\n"
)


def run(options: str) -> tuple[bytes, object]:
    config = parse_config(f'[pipeline]\nauthserv_id = "mx.test"\n[[filter]]\nuse = "authres"\n'
                          f"{options}\n", "")
    done = asyncio.run(process(Pipeline.build(config), make_services(None), Envelope(),
                               Message(MESSAGE)))
    return done.message.raw, done


def ar_ids(raw: bytes) -> list[str]:
    return [h.value.split(";")[0].strip() for h in Message(raw).get_all(
        "Authentication-Results")]


def test_default_keeps_foreign_and_core_removes_ours() -> None:
    raw, _done = run("")
    # the forged copy claiming our id is gone (no filter produced results: none written)
    assert ar_ids(raw) == ["forger.example", "border.example.net", "other.example"]


def test_remove_foreign_keeps_trusted() -> None:
    raw, done = run('remove_foreign = true\ntrusted_ids = ["border.example.net"]')
    assert ar_ids(raw) == ["border.example.net"]
    upstream = done.outcome.runs[0].result.facts["authres.upstream"]  # type: ignore[attr-defined]
    assert [(u["method"], u["result"]) for u in upstream] == [
        ("spf", "pass"), ("dkim", "fail"), ("dmarc", "none")]
    assert upstream[1]["reason"] == "bad; sig"
    assert upstream[1]["props"] == {"header.d": "ex.org", "header.s": "s1"}


@given(st.text(max_size=200))
def test_parser_never_crashes(text: str) -> None:
    authserv, results = parse_authres(text)
    assert isinstance(authserv, str) and len(results) <= 50


def test_contrib_example_validates(tmp_path: Path) -> None:
    # its key paths are placeholders: a copy with generated keys (tests/e2e_auth/contrib.py)
    path, _records = contrib_with_keys(tmp_path)
    pipeline = Pipeline.build(load_config(str(path)))
    assert [s.name for s in pipeline.steps] == ["spf", "dkim-verify", "arc-verify", "dmarc",
                                                "dkim-sign", "arc-seal", "authres"]
