"""Greylisting shared through Redis by two ``rohrpost milter`` processes behind two Postfixes.

One pipeline.toml (``[state] backend = "redis"``, greylist delay 2 s) serves two milter
processes; Postfix A uses the first, Postfix B the second, both relay to one catcher. The first
attempt through A is refused at RCPT with 451 4.7.1; after the delay the retry through B is
accepted. B alone would have greylisted the triplet afresh (the control recipient shows that it
does), so the acceptance proves that B honoured the entry made through A.

Waits use deadlines; the only fixed wait is the greylist delay itself (plus 0.3 s).
"""

from __future__ import annotations

import time

import pytest
import redis

from tests.support.daemons import MailCatcher, PostfixInstance, RedisInstance
from tests.support.fixtures_daemons import DaemonPool

from .stack import RCPT, SENDER, MilterProcess, Stack, TerminateAll

pytestmark = pytest.mark.integration
DELAY = 2
PREFIX = "rp-e2e-grey:"

MSG = (b"From: Alice <alice@sender.example>\r\nTo: bob@example.net\r\n"
       b"Subject: greylisted through A, retried through B\r\n"
       b"Message-ID: <grey-ab-1@sender.example>\r\nX-Marker: grey-ab-1\r\n\r\nHello.\r\n")


def config_text(redis_url: str) -> str:
    return f"""
[pipeline]
hostname = "mx.rohrpost.test"
authserv_id = "mx.rohrpost.test"
var_dir = "@VAR@"
trusted_networks = []      # the test client connects from 127.0.0.1

[state]
backend = "redis"
url = "{redis_url}"
prefix = "{PREFIX}"

[[filter]]
use = "greylist"
delay = {DELAY}
window = 120
"""


def redis_keys(url: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(k.decode() for k in client.scan_iter(f"{PREFIX}*"))
    finally:
        client.close()


def test_greylist_entry_made_through_one_milter_is_honoured_by_the_other(
        daemon_pool: DaemonPool, redis_server: RedisInstance) -> None:
    work = daemon_pool.directory("grey2")
    config = work / "pipeline.toml"
    config.write_text(config_text(redis_server.url).replace("@VAR@", str(work / "var")))
    catcher = daemon_pool.start(MailCatcher(), "mail_catcher")
    milters = [daemon_pool.start(MilterProcess(config), f"rohrpost milter {i}") for i in (1, 2)]
    daemon_pool.start(TerminateAll(milters), "SIGTERM to both milters at once")
    stacks = []
    for milter in milters:
        postfix = PostfixInstance(daemon_pool.directory("pf"), relay_port=catcher.port,
                                  milters=[milter.spec])
        daemon_pool.start(postfix, f"postfix {postfix.dir}", postfix.log_text)
        stacks.append(Stack(catcher, milter, postfix))
    a, b = stacks
    assert a.milter.port != b.milter.port

    first, _ = a.send(MSG)
    assert [r.code for r in first.rcpts] == [451], (first, a.diagnostics())
    assert first.rcpts[0].text.startswith("4.7.1 Greylisted"), first
    assert first.data is None
    assert "milter-reject: RCPT" in a.postfix.wait_log("milter-reject: RCPT")
    assert any(key.startswith(f"{PREFIX}grey:") for key in redis_keys(redis_server.url))
    greylisted_at = time.monotonic()

    # control: B greylists a triplet it has never seen (it is no pass-through)
    control, _ = b.send(MSG, rcpts=("carol@example.net",))
    assert [r.code for r in control.rcpts] == [451], (control, b.diagnostics())

    # the delay itself (plus a margin): then the FIRST retry through B must pass. No retry loop:
    # B with state of its own would greylist this attempt and pass a later one.
    time.sleep(max(0.0, DELAY + 0.3 - (time.monotonic() - greylisted_at)))
    retry, _ = b.send(MSG)
    assert retry.accepted, (retry, b.diagnostics())
    got = b.wait_arrived(b"X-Marker: grey-ab-1")
    assert b"by mx.rohrpost.test (Postfix)" in got
    (caught,) = [m for m in catcher.messages if b"grey-ab-1" in m.data]
    assert caught.mail_from == SENDER and caught.rcpts == (RCPT,)
    # B's Postfix never talked to milter 1: B's milter did the check against A's entry
    assert f"127.0.0.1:{a.milter.port}" not in b.postfix.log_text()
