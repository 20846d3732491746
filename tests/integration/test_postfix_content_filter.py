"""rohrpost as Postfix's after-queue content filter, reinjecting on a second smtpd port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.contract import ARCHIVE_RULE, RULES_CONTRACT
from tests.support.daemons import MailCatcher, PostfixInstance, free_port, wait_until
from tests.support.fixtures_daemons import DaemonPool, PostfixFactory
from tests.support.rohrpost_proc import RohrpostProcess

pytestmark = pytest.mark.integration

CONFIG = """
[pipeline]
authserv_id = "mx.test"
var_dir = "var"
""" + RULES_CONTRACT + ARCHIVE_RULE


def msg(subject: str, *extra: str) -> bytes:
    head = ["From: alice@example.org", "To: bob@example.net", f"Subject: {subject}",
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>", *extra]
    return ("\r\n".join(head) + "\r\n\r\nbody\r\n").encode()


class Setup:
    def __init__(self, pool: DaemonPool, factory: PostfixFactory, catcher: MailCatcher) -> None:
        self.dir = Path(pool.directory("cf"))
        (self.dir / "pipeline.toml").write_text(CONFIG)
        self.filter_port = free_port()
        self.reinject_port = free_port()
        self.catcher = catcher
        self.postfix: PostfixInstance = factory(
            relay_port=catcher.port, content_filter=("127.0.0.1", self.filter_port),
            reinject_port=self.reinject_port)
        self.serve = self.new_serve()

    def new_serve(self) -> RohrpostProcess:
        return RohrpostProcess(
            ["serve", "-c", str(self.dir / "pipeline.toml"), "--listen",
             f"127.0.0.1:{self.filter_port}", "--deliver", f"smtp:127.0.0.1:{self.reinject_port}"],
            self.dir, self.filter_port)

    def delivered_to(self, rcpt: str) -> list[bytes]:
        return [m.data for m in self.catcher.messages if rcpt in m.rcpts]


@pytest.fixture
def setup(daemon_pool: DaemonPool, postfix_factory: PostfixFactory,
          mail_catcher: MailCatcher) -> Iterator[Setup]:
    s = Setup(daemon_pool, postfix_factory, mail_catcher)
    s.serve.start()
    try:
        yield s
    finally:
        s.serve.stop()


def test_header_rule_and_added_recipient_arrive(setup: Setup) -> None:
    pf = setup.postfix
    assert pf.send("alice@example.org", ["bob@example.net"],
                   msg("news", "List-Id: <l.example.org>")).accepted
    assert pf.send("alice@example.org", ["bob@example.net"], msg("keep", "X-Archive: yes")).accepted
    setup.catcher.wait_for(2, timeout=30)  # the second one carries two recipients
    news = [d for d in setup.delivered_to("bob@example.net") if b"Subject: news" in d]
    assert len(news) == 1
    assert b"X-Newsletter: yes" in news[0]
    assert b"X-Rohrpost-Result: action=accept score=2.5" in news[0]
    (archived,) = setup.delivered_to("archive@example.net")
    assert b"Subject: keep" in archived
    pf.wait_queue_empty()


def test_reject_becomes_a_bounce_to_the_sender(setup: Setup) -> None:
    pf = setup.postfix
    # after-queue: the client was told 250 already; the filter's 550 makes Postfix bounce
    assert pf.send("alice@example.org", ["bob@example.net"], msg("buy now")).accepted
    wait_until(lambda: any("alice@example.org" in m.rcpts for m in setup.catcher.messages),
               30, "the bounce to the sender")
    (bounce,) = setup.delivered_to("alice@example.org")
    assert b"Blocked by local policy" in bounce
    assert setup.delivered_to("bob@example.net") == []


def test_filter_down_defers_and_mail_is_delivered_when_it_is_back(setup: Setup) -> None:
    pf = setup.postfix
    setup.serve.kill9()
    assert pf.send("alice@example.org", ["bob@example.net"], msg("while down")).accepted
    wait_until(lambda: len(pf.queue_ids()) == 1, 30, "the message deferred in the queue")
    assert setup.catcher.messages == []
    setup.serve = setup.new_serve().start()
    pf.flush()
    (delivered,) = setup.catcher.wait_for(1, timeout=30)
    assert b"Subject: while down" in delivered.data
    assert b"X-Rohrpost-Result: action=accept" in delivered.data
    pf.wait_queue_empty()
