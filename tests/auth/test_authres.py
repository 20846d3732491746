"""The ``authres`` filter with the core's header handling, through the pipeline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rohrpost.filters.authres import parse_authres

from rohrpost.config import load_config, parse_config
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.policy import authserv_id_of
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


FORGED_VARIANTS = [
    "(forged) mx.test; dkim=pass header.d=bank.example",   # CFWS before the authserv-id
    '"mx.test"; spf=pass smtp.mailfrom=x@bank.example',     # quoted-string authserv-id
    "mx.test(c); dmarc=pass header.from=bank.example",      # comment right after it
    "(a; b) MX.TEST 1; dmarc=pass header.from=bank.example",  # ';' inside a comment, version
    "mx.test;dmarc=pass",
]


def test_core_removes_forgeries_written_with_comments_or_quotes() -> None:
    # RFC 8601 5: every copy that *claims* our authserv-id goes, however the claim is spelled
    # (authres, which dkimpy's ARC sealing uses, reads "(x) mx.test; ..." as mx.test)
    message = "".join(f"Authentication-Results: {v}\n" for v in FORGED_VARIANTS)
    message += "Authentication-Results: other.example; arc=none\nFrom: a@ex.org\n\nbody\n"
    config = parse_config('[pipeline]\nauthserv_id = "mx.test"\n', "")
    done = asyncio.run(process(Pipeline.build(config), make_services(None), Envelope(),
                               Message(message.encode())))
    assert ar_ids(done.message.raw) == ["other.example"]


@pytest.mark.parametrize(("value", "expected"), [
    ("mx.test; none", "mx.test"),
    ("  mx.test 1 ; spf=pass", "mx.test"),
    ("(c) mx.test; spf=pass", "mx.test"),
    ("(nested (c)) mx.test(x); spf=pass", "mx.test"),
    ('"mx.test"; spf=pass', "mx.test"),
    ('"mx\\".test"; spf=pass', 'mx".test'),
    ("(a;b) mx.test; spf=pass", "mx.test"),
    ("", ""),
    ("; spf=pass", ""),
])
def test_authserv_id_of(value: str, expected: str) -> None:
    assert authserv_id_of(value) == expected


def test_smtp_auth_result_for_authenticated_submissions() -> None:
    # RFC 8601 2.7.4: auth=pass smtp.auth=USER, merged into our one header by the core
    config = parse_config('[pipeline]\nauthserv_id = "mx.test"\n[[filter]]\nuse = "authres"\n',
                          "")
    env = Envelope(mail_from="alice@ex.org", rcpts=("bob@else.example",), auth_user="alice")
    done = asyncio.run(process(Pipeline.build(config), make_services(None), env,
                               Message(b"From: a@ex.org\n\nbody\n")))
    ours = [h.value for h in done.message.get_all("Authentication-Results")
            if h.value.startswith("mx.test")]
    assert ours == ["mx.test;\tauth=pass smtp.auth=alice"]
    # not for unauthenticated mail, and not when switched off
    plain = asyncio.run(process(Pipeline.build(config), make_services(None),
                                env.replace(auth_user=""), Message(b"From: a@ex.org\n\nb\n")))
    assert not plain.message.get_all("Authentication-Results")
    off = parse_config('[pipeline]\nauthserv_id = "mx.test"\n[[filter]]\nuse = "authres"\n'
                       "smtp_auth = false\n", "")
    quiet = asyncio.run(process(Pipeline.build(off), make_services(None), env,
                                Message(b"From: a@ex.org\n\nb\n")))
    assert not quiet.message.get_all("Authentication-Results")


def test_smtp_auth_user_is_quoted_when_needed() -> None:
    config = parse_config('[pipeline]\nauthserv_id = "mx.test"\n[[filter]]\nuse = "authres"\n',
                          "")
    env = Envelope(auth_user='ev il;\r\nX-Injected: "1"')
    done = asyncio.run(process(Pipeline.build(config), make_services(None), env,
                               Message(b"From: a@ex.org\n\nbody\n")))
    assert not done.message.get_all("X-Injected")
    value = done.message.get("Authentication-Results")
    assert value == "mx.test;\tauth=pass smtp.auth=\"ev il;  X-Injected: \\\"1\\\"\""
    assert authserv_id_of(value) == "mx.test"
