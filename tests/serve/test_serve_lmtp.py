"""rohrpost serve --lmtp: final delivery with one reply per accepted recipient, and crash safety."""

import os
import re
import smtplib
import threading

from serve_support import lmtp_transaction, message


def files(maildir, sub="new"):
    path = maildir / sub
    return sorted(path.iterdir()) if path.exists() else []


def test_lmtp_to_maildir_one_reply_per_recipient(serve, maildir):
    srv = serve("--lmtp", "--deliver", f"maildir:{maildir}")
    body = b"8-bit \xc3\xa4\xff\r\n.dot\r\n"
    rcpt, data = lmtp_transaction(srv.port, "alice@example.org",
                                  ["bob@example.net", "nobody@example.net", "carol@example.net"],
                                  message(body=body))
    assert [c for c, _t in rcpt] == [250, 550, 250]
    assert len(data) == 2 and all(c == 250 for c, _t in data)
    assert all(b"delivered to maildir" in t for _c, t in data)
    [path] = files(maildir)
    raw = path.read_bytes()
    assert raw.startswith(b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\n"
                          b"Delivered-To: carol@example.net\n")
    assert raw.endswith(b"\n\n" + body.replace(b"\r\n", b"\n"))
    assert b"X-Rohrpost-Result: action=accept" in raw
    assert any(" mode=lmtp " in line for line in srv.lines)


def test_lmtp_reject_answers_every_recipient(serve, maildir):
    srv = serve("--lmtp", "--deliver", f"maildir:{maildir}")
    _rcpt, data = lmtp_transaction(srv.port, "alice@example.org",
                                   ["bob@example.net", "carol@example.net"],
                                   message(subject="buy now"))
    assert data == [(550, b"5.7.1 No spam please")] * 2
    assert files(maildir) == []


def test_lmtp_next_hop_outcomes_stay_per_recipient(serve, catcher):
    handler, port = catcher(lmtp=True)
    srv = serve("--lmtp", "--deliver", f"lmtp:127.0.0.1:{port}")
    rcpt, data = lmtp_transaction(srv.port, "alice@example.org",
                                  ["bob@example.net", "busy@example.net", "unknown@example.net",
                                   "carol@example.net"], message())
    assert [c for c, _t in rcpt] == [250, 250, 250, 250]
    assert [c for c, _t in data] == [250, 450, 550, 250]
    assert data[1] == (450, b"4.2.1 Mailbox busy")
    assert handler.received[0][1] == ["bob@example.net", "carol@example.net"]


def test_lmtp_xforward_and_smtplib_single_recipient(serve, maildir):
    srv = serve("--lmtp", "--deliver", f"maildir:{maildir}")
    _rcpt, data = lmtp_transaction(srv.port, "", ["bob@example.net"], message(),
                                   xforward="ADDR=198.51.100.9 HELO=remote.example IDENT=LQ1")
    assert data[0][0] == 250
    raw = files(maildir)[0].read_bytes()
    assert raw.startswith(b"Return-Path: <>\n")
    assert b"client=198.51.100.9" in raw and b"proto=LMTP" in raw
    with smtplib.LMTP("127.0.0.1", srv.port) as client:
        assert client.sendmail("a@example.org", ["bob@example.net"], message()) == {}
    assert len(files(maildir)) == 2


def test_kill_9_mid_stream_loses_nothing_acknowledged(serve, maildir):
    """50 messages from 5 threads; SIGKILL mid-stream: every 250 is in new/ exactly once."""
    srv = serve("--lmtp", "--deliver", f"maildir:{maildir}")
    acked: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()
    filler = b"".join(b"line %05d of a long enough body to take some time\r\n" % i
                      for i in range(3000))

    def body(seq):
        return filler + b"END-OF-MESSAGE-%03d\r\n" % seq

    def worker(first):
        try:
            client = smtplib.LMTP("127.0.0.1", srv.port)
            for seq in range(first, first + 10):
                client.sendmail("alice@example.org", ["bob@example.net"],
                                message(subject=f"seq {seq}", body=body(seq)))
                with lock:
                    acked.append(seq)
                    if len(acked) >= 12:
                        enough.set()
        except (smtplib.SMTPException, OSError):
            return

    threads = [threading.Thread(target=worker, args=(k * 10,)) for k in range(5)]
    for t in threads:
        t.start()
    assert enough.wait(120), "too few messages acknowledged before the kill"
    srv.kill()
    for t in threads:
        t.join(60)
    assert 12 <= len(acked) < 50
    seen: dict[int, int] = {}
    for path in files(maildir):
        raw = path.read_bytes()
        m = re.search(rb"Subject: seq (\d+)\n", raw)
        assert m, path
        seq = int(m.group(1))
        # complete: the whole body is there and ends where the sender ended it
        assert raw.endswith(body(seq).replace(b"\r\n", b"\n")), f"partial file {path}"
        seen[seq] = seen.get(seq, 0) + 1
    for seq in acked:
        assert seen.get(seq) == 1, f"acknowledged message {seq} found {seen.get(seq, 0)} times"
    assert all(n == 1 for n in seen.values())
    # what was cut off may be left in tmp/, never in new/
    assert all(os.path.getsize(p) >= 0 for p in files(maildir, "tmp"))
