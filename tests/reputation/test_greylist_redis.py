"""Greylisting state shared through a real redis-server by two filter processes' services.

Two pipelines with separate ``Services`` (separate Redis connections, as two milter instances
on two hosts would have) share one Redis URL: a triplet first seen by one passes the other
after the delay, and the auto-whitelist made through one is honoured by the other.
"""

from __future__ import annotations

import asyncio

import pytest

from rohrpost import runner
from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.filter import Services
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.result import Action
from rohrpost.services import make_services
from tests.reputation.conftest import FakeClock
from tests.support.daemons import RedisInstance

pytestmark = pytest.mark.integration

MSG = Message(b"From: alice@example.org\nSubject: hi\n\nhello\n")


def config_text(url: str) -> str:
    return f"""
[pipeline]
hostname = "mx.example.net"
[state]
backend = "redis"
url = "{url}"
prefix = "rp-grey-test:"
[[filter]]
use = "greylist"
delay = 300
awl_count = 2
"""


async def send(pipeline: Pipeline, services: Services, rcpt: str,
               ip: str = "192.0.2.10") -> runner.Processed:
    env = Envelope(client_ip=ip, mail_from="alice@example.org", rcpts=(rcpt,))
    return await runner.process(pipeline, services, env, MSG)


async def two_instances(redis_url: str, clock: FakeClock) -> None:
    instances = []
    for _ in range(2):
        cfg = parse_config(config_text(redis_url), "pipeline.toml")
        instances.append((Pipeline.build(cfg), make_services(cfg, clock=clock)))
    (p1, s1), (p2, s2) = instances
    assert s1.store is not s2.store
    try:
        first = await send(p1, s1, "bob@example.net")
        assert first.outcome.action is Action.TEMPFAIL
        assert str(first.outcome.verdict.reply) == (
            "451 4.7.1 Greylisted, please try again in 300 seconds")
        clock.advance(100)
        early = await send(p2, s2, "bob@example.net")
        assert str(early.outcome.verdict.reply).endswith("try again in 200 seconds")
        clock.advance(201)
        assert (await send(p2, s2, "bob@example.net")).outcome.action is Action.ACCEPT
        # a second pass (through instance 1) reaches awl_count = 2 for 192.0.2.0/24 ...
        await send(p1, s1, "carol@example.net")
        clock.advance(301)
        assert (await send(p1, s1, "carol@example.net")).outcome.action is Action.ACCEPT
        # ... and instance 2 lets a new triplet from that network through at once
        fresh = await send(p2, s2, "dave@example.net", ip="192.0.2.77")
        assert fresh.outcome.action is Action.ACCEPT
        assert (await send(p2, s2, "dave@example.net", ip="198.51.100.7")).outcome.action is (
            Action.TEMPFAIL)
        keys = await s1.store.keys("grey:")
        assert "grey:awl:192.0.2.0/24" in keys
    finally:
        await s1.aclose()
        await s2.aclose()


def test_redis_shared_by_two_instances(redis_server: RedisInstance) -> None:
    asyncio.run(two_instances(redis_server.url, FakeClock()))
