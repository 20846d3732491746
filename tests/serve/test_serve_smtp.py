"""rohrpost serve in SMTP (content_filter) mode: a real subprocess, smtplib, aiosmtpd next hop."""

import json
import os
import smtplib
import socket

import pytest
from serve_support import PIPELINE, Catcher, free_port, message

BODY_8BIT = (b"Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xff\xfe raw 8-bit\r\n"
             b".leading dot survives\r\n..two dots\r\n\r\n  trailing  \r\n")


def send(port, msg, rcpts=("bob@example.net",), sender="alice@example.org", **kw):
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        return client.sendmail(sender, list(rcpts), msg, **kw)


def body_of(raw):
    return raw.split(b"\r\n\r\n", 1)[1]


def headers_of(raw):
    return raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")


def test_bin_launcher_without_filters_delivers_with_status_headers(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", config="[pipeline]\nvar_dir = \"v\"\n",
                use_bin=True)
    assert send(srv.port, message(body=BODY_8BIT), mail_options=["BODY=8BITMIME"]) == {}
    [(sender, rcpts, raw)] = handler.received
    assert (sender, rcpts) == ("alice@example.org", ["bob@example.net"])
    assert body_of(raw) == BODY_8BIT
    head = headers_of(raw)
    assert "X-Rohrpost-Result: action=accept score=0" in head
    assert "X-Spam-Status: No, score=0.0" in head


def test_headers_added_body_bytes_exact(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    forged = b"X-Rohrpost-Result: action=accept score=-100\r\n"
    assert send(srv.port, message(body=BODY_8BIT, extra=forged),
                rcpts=["bob@example.net", "carol@example.net"],
                mail_options=["BODY=8BITMIME"]) == {}
    [(_sender, rcpts, raw)] = handler.received
    assert rcpts == ["bob@example.net", "carol@example.net"]
    assert body_of(raw) == BODY_8BIT
    head = headers_of(raw)
    assert head.startswith("Authentication-Results: mx.test;")
    assert "x-probe=pass smtp.client=127.0.0.1" in head
    assert "X-Spam-Status: No, score=1.5" in head
    assert head.count("X-Rohrpost-Result:") == 1
    assert "X-Rohrpost-Result: action=accept score=1.5 symbols=SERVE_PROBE(1.5)" in head
    # the original headers are kept byte for byte
    assert b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\n" in raw


def test_bare_lf_is_accepted_and_passed_on_in_wire_form(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        f = sock.makefile("rb")
        f.readline()
        script = [b"EHLO x\r\n", b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<b@y>\r\n", b"DATA\r\n"]
        for line in script:
            sock.sendall(line)
            while (reply := f.readline())[3:4] == b"-":
                pass
        assert reply.startswith(b"354")
        sock.sendall(b"Subject: lf\r\n\r\nbare\nLF \xe9\r\n.\r\n")
        assert f.readline().startswith(b"250")
    assert body_of(handler.received[0][2]) == b"bare\r\nLF \xe9\r\n"


def test_reply_after_delivery_carries_next_hop_queue_id(serve, catcher):
    _handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.ehlo()
        client.mail("alice@example.org")
        client.rcpt("bob@example.net")
        code, text = client.data(message())
    assert code == 250 and b"queued as CATCH1" in text
    line = next(ln for ln in srv.lines if " mode=serve " in ln)
    assert "action=accept" in line and "client=127.0.0.1" in line


@pytest.mark.parametrize("reply", ["451 4.3.0 Next hop busy", "421 4.3.2 Shutting down"])
def test_next_hop_tempfail_gives_4xx_and_nothing_is_acknowledged(serve, catcher, reply):
    handler, port = catcher(Catcher(data_reply=reply))
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(srv.port, message())
    assert err.value.smtp_code == 451
    assert err.value.smtp_error.startswith(b"4.3.0")
    assert handler.received == []
    assert any("delivery to smtp:" in ln and "not completed" in ln for ln in srv.lines)


def test_next_hop_down_gives_4xx(serve):
    srv = serve("--deliver", f"smtp:127.0.0.1:{free_port()}")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(srv.port, message())
    assert err.value.smtp_code == 451


def test_next_hop_rejects_every_recipient_gives_5xx(serve, catcher):
    _handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(srv.port, message(), rcpts=["unknown@example.net"])
    assert (err.value.smtp_code, err.value.smtp_error) == (550, b"5.1.1 User unknown")


def test_next_hop_defers_one_recipient_defers_the_whole_message(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(srv.port, message(), rcpts=["bob@example.net", "busy@example.net"])
    assert err.value.smtp_code == 451
    # bob got a copy: the documented price of one DATA reply (a duplicate on retry, no loss)
    assert [r for _s, r, _m in handler.received] == [["bob@example.net"]]


def test_next_hop_mixed_permanent_failure_is_5xx_not_silent(serve, catcher):
    _handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(srv.port, message(), rcpts=["bob@example.net", "unknown@example.net"])
    assert err.value.smtp_code == 554
    assert b"1 of 2 recipients" in err.value.smtp_error


@pytest.mark.parametrize(("subject", "code", "text"), [
    ("Buy now!", 550, b"5.7.1 No spam please"),
    ("tempfail me", 451, b"4.7.1 Come back later"),
    ("crash me", 451, b"4.7.1 Temporary local problem, please try again later"),
])
def test_verdicts_at_data(serve, catcher, subject, code, text):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with pytest.raises(smtplib.SMTPDataError) as err:
        send(srv.port, message(subject=subject))
    assert (err.value.smtp_code, err.value.smtp_error) == (code, text)
    assert b"secret" not in err.value.smtp_error
    assert handler.received == []


def test_discard_answers_250_and_delivers_nothing(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    assert send(srv.port, message(subject="discard me")) == {}
    assert handler.received == []
    assert any("action=discard" in ln for ln in srv.lines)


def test_quarantine_stores_durably_then_250(serve, catcher, tmp_path):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    assert send(srv.port, message(subject="quarantine me", body=BODY_8BIT)) == {}
    assert handler.received == []
    qdir = tmp_path / "var" / "quarantine"
    [meta] = [p for p in qdir.iterdir() if p.suffix == ".json"]
    entry = json.loads(meta.read_text())
    assert entry["reason"] == "held for review" and entry["rcpts"] == ["bob@example.net"]
    assert body_of(meta.with_suffix(".eml").read_bytes()) == BODY_8BIT
    assert oct(os.stat(qdir).st_mode & 0o777) == "0o700"


def test_rcpt_stage_reject_is_per_recipient(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    refused = send(srv.port, message(),
                   rcpts=["bob@example.net", "nobody@example.net", "later@example.net"])
    assert refused == {"nobody@example.net": (550, b"5.1.1 No such user"),
                       "later@example.net": (450, b"4.2.0 Try later")}
    [(_s, rcpts, raw)] = handler.received
    assert rcpts == ["bob@example.net"]
    assert b"rcpts=bob@example.net" in raw


def test_null_sender_and_smtputf8(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    assert send(srv.port, message(), sender="") == {}
    assert send(srv.port, message(), rcpts=["j\u00f6rg@example.net"],
                mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    assert [(s, r) for s, r, _m in handler.received] == [
        ("<>", ["bob@example.net"]), ("alice@example.org", ["j\u00f6rg@example.net"])]
    assert b"from=<>" in handler.received[0][2]


def test_xforward_gives_filters_the_original_client(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.ehlo("postfix.local")
        assert client.has_extn("xforward")
        assert "ADDR" in client.esmtp_features["xforward"]
        assert client.docmd("XFORWARD", "NAME=mail.example.com ADDR=192.0.2.7 PORT=4711")[0] \
            == 250
        assert client.docmd("XFORWARD", "PROTO=ESMTP HELO=outside.example IDENT=4QxyZ1 "
                                        "SOURCE=REMOTE")[0] == 250
        client.sendmail("alice@example.org", ["bob@example.net"], message())
        # Postfix sends XFORWARD before each transaction; without it the attributes are gone
        client.sendmail("alice@example.org", ["bob@example.net"], message())
        assert client.docmd("XFORWARD", "ADDR=IPv6:2001:db8::5 NAME=[UNAVAILABLE]")[0] == 250
        client.sendmail("alice@example.org", ["bob@example.net"], message())
    first, second, third = (raw for _s, _r, raw in handler.received)
    probe = first.split(b"X-Serve-Probe: ", 1)[1].split(b"\r\nX-Spam")[0].replace(b"\r\n\t", b" ")
    assert probe.startswith(b"client=192.0.2.7 name=mail.example.com helo=outside.example "
                            b"queue=4QxyZ1 ")
    assert b"smtp.client=192.0.2.7" in first
    assert b"client=127.0.0.1 name=- helo=postfix.local" in second
    assert b"client=2001:db8::5 name=- helo=postfix.local" in third
    line = next(ln for ln in srv.lines if "4QxyZ1 mode=serve" in ln)
    assert "client=192.0.2.7" in line and "client_ip=xforward" in line


def test_xforward_client_runs_connect_stage_per_transaction(serve, catcher):
    _handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.ehlo("postfix.local")
        client.docmd("XFORWARD", "ADDR=192.0.2.66")
        assert client.mail("alice@example.org") == (554, b"5.7.1 Client blocked")
        client.rset()
        assert client.mail("alice@example.org")[0] == 250


@pytest.mark.parametrize(("arg", "code"), [
    ("ADDR=not-an-ip", 501), ("FOO=bar", 501), ("ADDR", 501), ("HELO=a\x01b", 501),
    ("NAME=ok+2Ename", 250),
])
def test_xforward_syntax(serve, catcher, arg, code):
    _h, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.ehlo()
        assert client.docmd("XFORWARD", arg)[0] == code


def test_xforward_not_offered_to_untrusted_clients(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", "--xforward-from", "10.0.0.0/8")
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.ehlo()
        assert not client.has_extn("xforward")
        assert client.docmd("XFORWARD", "ADDR=192.0.2.7")[0] == 550
        client.sendmail("alice@example.org", ["bob@example.net"], message())
    assert b"client=127.0.0.1" in handler.received[0][2]


def test_xforward_refused_inside_a_transaction(serve, catcher):
    _h, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.ehlo()
        client.mail("alice@example.org")
        assert client.docmd("XFORWARD", "ADDR=192.0.2.7")[0] == 503


def test_size_limit_552(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", "--max-size", "2000")
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "2000"
        assert client.mail("alice@example.org", ["SIZE=5000"])[0] == 552
    with pytest.raises(smtplib.SMTPDataError) as err:
        with smtplib.SMTP("127.0.0.1", srv.port) as client:
            client.ehlo()
            client.esmtp_features.pop("size")  # do not announce SIZE: the limit is at DATA
            client.sendmail("alice@example.org", ["bob@example.net"],
                            message(body=b"x" * 70 + b"\r\n") * 60)
    assert err.value.smtp_code == 552
    assert handler.received == []


def test_max_recipients_452(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", "--max-recipients", "2")
    refused = send(srv.port, message(), rcpts=["a@example.net", "b@example.net", "c@example.net"])
    assert refused == {"c@example.net": (452, b"4.5.3 Error: too many recipients")}
    assert handler.received[0][1] == ["a@example.net", "b@example.net"]


def test_max_sessions_421(serve, catcher):
    _h, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", "--max-sessions", "1")
    first = smtplib.SMTP("127.0.0.1", srv.port)
    try:
        first.ehlo()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as second:
            greeting = second.makefile("rb").readline()
        assert greeting.startswith(b"421 4.3.2")
    finally:
        first.close()


def test_sigterm_lets_open_transaction_finish(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}")
    client = smtplib.SMTP("127.0.0.1", srv.port)
    client.ehlo()
    client.mail("alice@example.org")
    client.rcpt("bob@example.net")
    idle = smtplib.SMTP("127.0.0.1", srv.port)
    idle.ehlo()
    srv.proc.terminate()
    srv.wait_for_line("shutting down")
    # while shutting down, a new transaction is refused with 421 and the connection closed
    assert idle.mail("alice@example.org") == (421, b"4.3.2 Service shutting down, closing "
                                                   b"transmission channel")
    idle.close()
    # the open transaction still completes and is answered after delivery
    code, _text = client.data(message())
    assert code == 250
    assert srv.proc.wait(30) == 0
    client.close()
    assert len(handler.received) == 1


def test_bad_destination_and_listen_exit_78(serve, catcher):
    srv = serve("--deliver", "nowhere:x", ready=False)
    assert srv.proc.wait(30) == 78
    assert "configuration error" in srv.stderr()
    srv = serve("--deliver", "maildir:/tmp/x", "--listen", "nonsense", ready=False)
    assert srv.proc.wait(30) == 78


def test_pipeline_config_is_used(serve, catcher):
    handler, port = catcher()
    config = PIPELINE.replace("[[filter]]\nuse = \"serve-probe\"",
                              "[[filter]]\nuse = \"serve-probe\"\nscore = 7.0") + \
        "\n[actions]\nadd_header = 5.0\n"
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", config=config)
    send(srv.port, message())
    assert b"X-Spam-Flag: YES" in handler.received[0][2]
