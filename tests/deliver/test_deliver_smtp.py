"""smtp: delivery against a real aiosmtpd server on loopback, and a scripted socket server."""

import socket
import threading
import time

import pytest
from aiosmtpd.controller import Controller

from rohrpost.deliver import Destination, deliver
from rohrpost.deliver.wire import dot_stuff
from rohrpost.envelope import Envelope


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    def __init__(self, data_reply="250 2.0.0 Ok: queued"):
        self.envelopes = []
        self.data_reply = data_reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("unknown"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("busy"):
            return "450 4.2.1 Mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return self.data_reply


@pytest.fixture
def smtpd():
    def start(handler, **kwargs):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        started.append(controller)
        return Destination("smtp", host="127.0.0.1", port=controller.port)
    started = []
    yield start
    for controller in started:
        controller.stop()


MSG = b"Subject: t\r\nFrom: s@x\r\n\r\n.leading dot\r\nbody\r\n"


def test_per_recipient_results_and_envelope(smtpd):
    rec = Recorder()
    dest = smtpd(rec)
    env = Envelope(mail_from="s@x", rcpts=("a@y", "unknown@y", "b@y", "busy@y"))
    report = deliver(dest, MSG, env, timeout=10)
    got = [(o.rcpt, o.reply.code, o.reply.enhanced) for o in report.outcomes]
    assert got == [("a@y", 250, "2.0.0"), ("unknown@y", 550, "5.1.1"),
                   ("b@y", 250, "2.0.0"), ("busy@y", 450, "4.2.1")]
    assert "User unknown" in report.outcomes[1].reply.text
    assert report.temporary and report.exit_code == 75
    [envelope] = rec.envelopes
    assert envelope.mail_from == "s@x" and envelope.rcpt_tos == ["a@y", "b@y"]
    assert envelope.original_content == MSG  # dot-stuffing undone by the server, exact bytes
    assert envelope.mail_options == []


def test_unknown_only_is_permanent_67(smtpd):
    rec = Recorder()
    report = deliver(smtpd(rec), MSG, Envelope(mail_from="s@x", rcpts=("unknown@y",)))
    assert report.permanent and report.exit_code == 67
    assert rec.envelopes == []


def test_data_reply_applies_to_all_accepted(smtpd):
    rec = Recorder(data_reply="554 5.7.1 Message content rejected")
    report = deliver(smtpd(rec), MSG, Envelope(mail_from="s@x", rcpts=("a@y", "b@y")))
    assert [(o.reply.code, o.reply.enhanced) for o in report.outcomes] == [(554, "5.7.1")] * 2
    assert report.exit_code == 77


def test_8bit_and_lf_message_and_null_sender(smtpd):
    rec = Recorder()
    raw = "From x@y Thu Jan  1 00:00:00 1970\nSubject: Grüße\n\nÄ\n".encode()
    report = deliver(smtpd(rec, decode_data=False), raw, Envelope(rcpts=("a@y",)))
    assert report.ok
    [envelope] = rec.envelopes
    assert envelope.mail_from == "" or envelope.mail_from == "<>"
    assert "BODY=8BITMIME" in envelope.mail_options
    assert envelope.original_content == "Subject: Grüße\r\n\r\nÄ\r\n".encode()


def test_smtputf8_used_when_needed_and_offered(smtpd):
    rec = Recorder()
    env = Envelope(mail_from="jörg@bücher.example", rcpts=("zoë@y",))
    report = deliver(smtpd(rec, enable_SMTPUTF8=True), b"S: u\r\n\r\nb\r\n", env)
    assert report.ok, report.summary
    [envelope] = rec.envelopes
    assert "SMTPUTF8" in envelope.mail_options
    assert envelope.mail_from == "jörg@bücher.example" and envelope.rcpt_tos == ["zoë@y"]


def test_smtputf8_needed_but_not_offered(smtpd):
    rec = Recorder()
    env = Envelope(mail_from="s@x", rcpts=("zoë@y", "a@y"))
    report = deliver(smtpd(rec, enable_SMTPUTF8=False), b"S: u\r\n\r\nb\r\n", env)
    got = [(o.rcpt, o.reply.code, o.reply.enhanced) for o in report.outcomes]
    assert got == [("zoë@y", 553, "5.6.7"), ("a@y", 250, "2.0.0")]
    assert rec.envelopes[0].rcpt_tos == ["a@y"]


def test_connection_refused_is_temporary():
    port = free_port()  # nothing listens there now
    report = deliver(Destination("smtp", host="127.0.0.1", port=port), MSG,
                     Envelope(mail_from="s@x", rcpts=("a@y", "b@y")), timeout=5)
    assert [(o.reply.code, o.reply.enhanced) for o in report.outcomes] == [(451, "4.4.1")] * 2
    assert report.exit_code == 75


def test_no_recipients_is_a_temporary_config_error(smtpd):
    report = deliver(smtpd(Recorder()), MSG, Envelope(mail_from="s@x"))
    assert [(o.rcpt, o.reply.enhanced) for o in report.outcomes] == [("", "4.3.5")]


class Scripted:
    """A real loopback server that answers each line with the next scripted reply."""

    def __init__(self, greeting, replies, after_data=()):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting, self.replies, self.after_data = greeting, list(replies), after_data
        self.received = b""
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        with self.sock:
            conn, _ = self.sock.accept()
        with conn:
            conn.sendall(self.greeting)
            f = conn.makefile("rb")
            for reply in self.replies:
                line = f.readline()
                self.received += line
                if not line:
                    return
                if line.upper().startswith(b"DATA"):
                    conn.sendall(reply)
                    while (data := f.readline()) not in (b".\r\n", b""):
                        self.received += data
                    for r in self.after_data:
                        conn.sendall(r)
                    continue
                if reply is None:
                    time.sleep(30)
                    return
                conn.sendall(reply)

    def dest(self, kind):
        return Destination(kind, host="127.0.0.1", port=self.port)


def test_lmtp_mixed_data_replies_from_scripted_server():
    server = Scripted(b"220 lmtp ready\r\n", [
        b"250-hi\r\n250-8BITMIME\r\n250 PIPELINING\r\n", b"250 2.1.0 ok\r\n",
        b"250 2.1.5 ok\r\n", b"550 5.1.1 nope\r\n", b"250 2.1.5 ok\r\n", b"354 go\r\n",
        b"221 bye\r\n"],
        after_data=[b"250 2.0.0 saved\r\n", b"452-4.2.2 over\r\n452 4.2.2 quota\r\n"])
    env = Envelope(mail_from="s@x", rcpts=("a@y", "u@y", "b@y"))
    report = deliver(server.dest("lmtp"), b"S: x\n\n.dot\nbody\n", env, timeout=10)
    got = [(o.rcpt, o.reply.code, o.reply.enhanced, o.reply.text) for o in report.outcomes]
    assert got == [("a@y", 250, "2.0.0", "saved"), ("u@y", 550, "5.1.1", "nope"),
                   ("b@y", 452, "4.2.2", "over quota")]
    assert server.received.startswith(b"LHLO ")
    assert b"MAIL FROM:<s@x>\r\n" in server.received  # 7-bit message: no BODY parameter
    assert b"S: x\r\n\r\n..dot\r\nbody\r\n" in server.received


@pytest.mark.parametrize(
    ("ehlo", "mail_line"),
    [(b"250-hi\r\n250 8BITMIME\r\n", b"MAIL FROM:<s@x> BODY=8BITMIME\r\n"),
     (b"250 hi\r\n", b"MAIL FROM:<s@x>\r\n")],
)
def test_lmtp_body_8bitmime_only_when_offered(ehlo, mail_line):
    server = Scripted(b"220 lmtp\r\n", [ehlo, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
                                         b"221 bye\r\n"], after_data=[b"250 2.0.0 ok\r\n"])
    report = deliver(server.dest("lmtp"), "S: \u00e4\n\nb\n".encode(),
                     Envelope(mail_from="s@x", rcpts=("a@y",)), timeout=10)
    assert report.ok, report.summary
    assert mail_line in server.received
    assert "S: \u00e4\r\n\r\nb\r\n".encode() in server.received


def test_garbage_reply_is_temporary():
    server = Scripted(b"220 hi\r\n", [b"this is not smtp\r\n"])
    report = deliver(server.dest("smtp"), MSG, Envelope(mail_from="s@x", rcpts=("a@y",)),
                     timeout=5)
    assert (report.outcomes[0].reply.code, report.outcomes[0].reply.enhanced) == (451, "4.4.2")
    assert "not an SMTP reply" in report.detail


def test_silent_server_times_out():
    server = Scripted(b"220 hi\r\n", [b"250 hi\r\n", None])
    start = time.monotonic()
    report = deliver(server.dest("smtp"), MSG, Envelope(mail_from="s@x", rcpts=("a@y",)),
                     timeout=1.0)
    assert time.monotonic() - start < 5
    assert report.temporary and "timed out" in report.outcomes[0].reply.text


def test_lost_after_data_is_temporary_never_ok():
    server = Scripted(b"220 hi\r\n", [b"250 hi\r\n", b"250 ok\r\n", b"250 ok\r\n",
                                      b"354 go\r\n"])  # then closes without a final reply
    report = deliver(server.dest("smtp"), MSG, Envelope(mail_from="s@x", rcpts=("a@y",)),
                     timeout=5)
    assert report.temporary and report.outcomes[0].reply.enhanced == "4.4.2"


def test_greeting_554_is_given_to_everyone():
    server = Scripted(b"554 5.7.1 go away\r\n", [b"221 bye\r\n"])
    report = deliver(server.dest("smtp"), MSG, Envelope(mail_from="s@x", rcpts=("a@y", "b@y")),
                     timeout=5)
    assert [(o.reply.code, o.reply.text) for o in report.outcomes] == [(554, "go away")] * 2


def test_injection_in_addresses_refused_locally(smtpd):
    rec = Recorder()
    env = Envelope(mail_from="s@x", rcpts=("a@y>\r\nRCPT TO:<evil@z", "b@y"))
    report = deliver(smtpd(rec), MSG, env)
    assert [(o.reply.code, o.reply.enhanced) for o in report.outcomes] == [(501, "5.1.3"),
                                                                            (250, "2.0.0")]
    assert rec.envelopes[0].rcpt_tos == ["b@y"]


@pytest.mark.parametrize(
    ("wire", "stuffed"),
    [(b"", b".\r\n"), (b".a\r\n", b"..a\r\n.\r\n"), (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n")],
)
def test_dot_stuff(wire, stuffed):
    assert dot_stuff(wire) == stuffed
