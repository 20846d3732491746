"""Prove the real-daemon fixtures: each test drives a real Postfix, Dovecot, Redis or sink.

A missing program is a failure (DaemonError names scripts/install-deps.sh), never a skip.
"""

from __future__ import annotations

import email
import imaplib
import poplib
import shutil
import socket
import subprocess
from email import policy

import pytest
import redis

from tests.support.daemons import (
    DovecotInstance,
    MailCatcher,
    PostfixInstance,
    RedisInstance,
    SmtpSink,
    free_port,
    redis_ping,
    smtp_send,
    wait_until,
)
from tests.support.fixtures_daemons import DaemonPool, DovecotFactory, PostfixFactory

pytestmark = pytest.mark.integration

MSG = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: rohrpost fixture test\r\n"
    b"Message-ID: <fixture-1@example.test>\r\n"
    b"\r\n"
    b"Hello from the fixture tests.\r\n"
)


def test_postfix_relays_to_catcher_with_envelope(
    postfix: PostfixInstance, mail_catcher: MailCatcher
) -> None:
    result = postfix.send("alice@example.test", ["bob@example.org", "carol@example.net"], MSG)
    assert result.banner.code == 220
    assert [r.code for r in result.rcpts] == [250, 250]
    assert result.accepted, result
    assert "queued as" in result.data.text if result.data else False

    (caught,) = mail_catcher.wait_for(1)
    assert caught.mail_from == "alice@example.test"
    assert sorted(caught.rcpts) == ["bob@example.org", "carol@example.net"]
    parsed = email.message_from_bytes(caught.data, policy=policy.default)
    assert parsed["Subject"] == "rohrpost fixture test"
    assert parsed["Message-ID"] == "<fixture-1@example.test>"
    assert "by mx.rohrpost.test (Postfix)" in str(parsed["Received"])
    assert caught.data.endswith(b"Hello from the fixture tests.\r\n")
    postfix.wait_queue_empty()
    assert "status=sent (250 2.0.0 OK caught)" in postfix.log_text()


def test_swaks_client_through_postfix(postfix: PostfixInstance, mail_catcher: MailCatcher) -> None:
    swaks = shutil.which("swaks")
    assert swaks, "swaks not installed: run scripts/install-deps.sh"
    proc = subprocess.run(
        [swaks, "--server", f"127.0.0.1:{postfix.port}", "--from", "s@example.test",
         "--to", "r@example.org", "--header", "Subject: via swaks", "--hide-all"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (caught,) = mail_catcher.wait_for(1)
    assert (caught.mail_from, caught.rcpts) == ("s@example.test", ("r@example.org",))
    assert b"Subject: via swaks" in caught.data


def test_unreachable_milter_tempfails_client(
    postfix_factory: PostfixFactory, mail_catcher: MailCatcher
) -> None:
    dead = f"inet:127.0.0.1:{free_port()}"  # nothing listens there
    pf = postfix_factory(relay_port=mail_catcher.port, milters=[dead])
    assert pf.postconf("-h", "milter_default_action").strip() == "tempfail"

    result = pf.send("alice@example.test", ["bob@example.org"], MSG)
    assert result.mail is not None
    assert result.mail.code == 451, result  # tempfail reaches the client at MAIL FROM
    assert result.mail.text.startswith("4.7.1"), result
    assert not result.accepted
    assert pf.queue_ids() == []
    assert mail_catcher.messages == []
    log = pf.wait_log("milter-reject: MAIL")
    assert f"connect to Milter service {dead}: Connection refused" in log


def test_deferred_mail_is_retried_after_flush(
    postfix: PostfixInstance, mail_catcher: MailCatcher
) -> None:
    mail_catcher.reply = "451 4.3.0 try again later"
    result = postfix.send("alice@example.test", ["bob@example.org"], MSG)
    assert result.accepted
    log = postfix.wait_log("status=deferred")
    assert "451 4.3.0 try again later" in log
    assert len(postfix.queue_ids()) == 1
    (entry,) = postfix.queue()
    assert entry["queue_name"] in ("deferred", "active")

    mail_catcher.reply = "250 2.0.0 OK caught"
    postfix.flush()
    postfix.wait_queue_empty()
    assert "status=sent" in postfix.log_text()
    # the refused attempt(s) were recorded too; the last one is the accepted copy
    assert mail_catcher.messages[-1].rcpts == ("bob@example.org",)


def test_content_filter_hands_mail_to_filter_and_reinjection_skips_it(
    postfix_factory: PostfixFactory, mail_catcher: MailCatcher, daemon_pool: DaemonPool
) -> None:
    filt = daemon_pool.start(MailCatcher(), "content filter")
    reinject = free_port()
    pf = postfix_factory(relay_port=mail_catcher.port, content_filter=("127.0.0.1", filt.port),
                         reinject_port=reinject)

    assert pf.send("alice@example.test", ["bob@example.org"], MSG).accepted
    (to_filter,) = filt.wait_for(1)
    assert (to_filter.mail_from, to_filter.rcpts) == ("alice@example.test", ("bob@example.org",))
    assert b"Subject: rohrpost fixture test" in to_filter.data
    assert mail_catcher.messages == []  # nothing bypassed the filter

    # what `rohrpost serve` will do later: hand the message back on the reinjection port
    back = smtp_send(reinject, to_filter.mail_from, to_filter.rcpts, to_filter.data)
    assert back.accepted, back
    (delivered,) = mail_catcher.wait_for(1)
    assert delivered.rcpts == ("bob@example.org",)
    assert b"Subject: rohrpost fixture test" in delivered.data
    pf.wait_queue_empty()
    assert len(filt.messages) == 1  # reinjected mail was not filtered again


def test_dovecot_lmtp_delivery_and_imap_pop3_readback(dovecot: DovecotInstance) -> None:
    result = dovecot.lmtp_send("alice@example.test", ["bob@example.test"], MSG)
    assert result.accepted, result
    unknown = dovecot.lmtp_send("alice@example.test", ["nobody@example.test"], MSG)
    assert unknown.rcpts[0].kind == 5, unknown

    (fetched,) = dovecot.imap_fetch_all("bob@example.test")
    assert fetched.startswith(b"Return-Path: <alice@example.test>\r\nDelivered-To: "
                              b"bob@example.test\r\n")
    assert fetched.endswith(MSG)
    assert dovecot.imap_fetch_all("alice@example.test") == []
    assert len(list((dovecot.maildir_of("bob@example.test") / "new").iterdir())) == 1

    assert dovecot.pop3s_port is not None
    pop = poplib.POP3_SSL("127.0.0.1", dovecot.pop3s_port, context=dovecot.ssl_context(),
                          timeout=10)
    try:
        pop.user("bob@example.test")
        pop.pass_(DovecotInstance.PASSWORD)
        assert pop.stat()[0] == 1
        assert b"\r\n".join(pop.retr(1)[1]).endswith(MSG.rstrip(b"\r\n"))
    finally:
        pop.quit()


def test_dovecot_ssl_required_refuses_plaintext_login(dovecot_factory: DovecotFactory) -> None:
    dc = dovecot_factory(users=["carol"], lmtp=False, pop3=False, ssl_required=True)
    assert dc.imap_port is not None
    # Dovecot treats a connection whose remote IP equals its local IP as "secured" and then
    # allows plaintext login even with ssl=required; connect from 127.0.0.2 to see the refusal.
    imap = _IMAP4From("127.0.0.1", dc.imap_port, timeout=10)
    try:
        assert "LOGINDISABLED" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("carol", DovecotInstance.PASSWORD)
    finally:
        imap.logout()
    assert dc.imap_fetch_all("carol") == []  # TLS login works


class _IMAP4From(imaplib.IMAP4):
    """IMAP4 client whose connection comes from 127.0.0.2 (not "local" to Dovecot)."""

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout,
                                        source_address=("127.0.0.2", 0))


def test_postfix_delivers_to_dovecot_lmtp(
    postfix_factory: PostfixFactory, dovecot: DovecotInstance
) -> None:
    pf = postfix_factory(relay_port=free_port(), extra_main={
        "relayhost": "",
        "default_transport": f"lmtp:inet:127.0.0.1:{dovecot.lmtp_port}",
    })
    assert pf.send("alice@example.test", ["alice@example.test"], MSG).accepted
    pf.wait_queue_empty()
    (fetched,) = dovecot.imap_fetch_all("alice@example.test")
    assert b"by mx.rohrpost.test (Postfix)" in fetched
    assert b"Subject: rohrpost fixture test\r\n" in fetched
    assert fetched.endswith(b"\r\n\r\nHello from the fixture tests.\r\n")


def test_redis_ping_and_roundtrip(redis_server: RedisInstance) -> None:
    assert redis_ping(redis_server.port)
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.ping() is True
        client.set("rohrpost:test", b"value")
        assert client.get("rohrpost:test") == b"value"
        assert client.config_get("save") == {"save": ""}
    finally:
        client.close()


def test_smtp_sink_dumps_message(smtp_sink: SmtpSink) -> None:
    result = smtp_send(smtp_sink.port, "a@example.test", ["b@example.org"], MSG)
    assert result.accepted, result
    # smtp-sink writes the file after replying; wait with a deadline
    wait_until(lambda: len(smtp_sink.files()) == 1, 10, "smtp-sink dump file")
    dumped = smtp_sink.files()[0].read_bytes()
    assert b"X-Mail-Args: <a@example.test>" in dumped
    assert b"X-Rcpt-Args: <b@example.org>" in dumped
    assert b"Subject: rohrpost fixture test" in dumped
