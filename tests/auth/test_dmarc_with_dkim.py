"""End to end with the real ``dkim-verify`` filter (branch auth-dkim): its ``dkim.results``
fact drives ``dmarc`` in one pipeline. Skipped, with that reason, until the branches meet."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.result import Action
from rohrpost.runner import process
from tests.auth.helpers import make_resolver, make_services
from tests.support.dnsserver import TestDnsServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "dmarc-authheaders"



@pytest.mark.parametrize(("name", "action", "dmarc"), [
    ("test.message_signed", Action.ACCEPT, "dmarc=pass header.from=example.com"),
    ("test.message", Action.REJECT, "dmarc=fail header.from=example.com"),
])
def test_dkim_verify_feeds_dmarc(name: str, action: Action, dmarc: str) -> None:
    key = (DATA / "test.txt").read_text().replace('"', "").replace("\n", "").strip()
    with TestDnsServer() as server:
        server.add("test._domainkey.example.com", "TXT", key)
        server.add("_dmarc.example.com", "TXT", "v=DMARC1; p=reject")
        config = parse_config(f'[pipeline]\nauthserv_id = "mx.test"\n[dns]\nservers = '
                              f'["{server.address}"]\n[[filter]]\nuse = "dkim-verify"\n'
                              '[[filter]]\nuse = "dmarc"\n', "")
        done = asyncio.run(process(Pipeline.build(config),
                                   make_services(make_resolver(server.address)),
                                   Envelope(client_ip="192.0.2.1"),
                                   Message((DATA / name).read_bytes())))
    assert done.outcome.action is action
    assert any(a.render().startswith(dmarc) for a in done.outcome.auth)
