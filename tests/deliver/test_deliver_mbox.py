"""mbox delivery: mboxrd quoting, locking against concurrent writers, no partial messages."""

import fcntl
import os
import resource
import signal
import time
from multiprocessing import get_context

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rohrpost.deliver import Destination, deliver, deliver_mbox
from rohrpost.deliver.mbox import from_line, mboxrd_quote, mboxrd_unquote, split_mbox
from rohrpost.envelope import Envelope

FIXED = 86400.0 * 365  # Fri Jan  1 00:00:00 1971 UTC


def test_from_line_format_and_null_sender():
    assert from_line("a@x", FIXED) == b"From a@x Fri Jan  1 00:00:00 1971\n"
    assert from_line("", FIXED) == b"From MAILER-DAEMON Fri Jan  1 00:00:00 1971\n"
    assert from_line("a b\n@x", FIXED) == b"From a_b@x Fri Jan  1 00:00:00 1971\n"


def test_mboxrd_quoting_table():
    body = b"From a\n>From b\n>>From c\nXFrom d\n From e\nFrom\n"
    assert mboxrd_quote(body) == b">From a\n>>From b\n>>>From c\nXFrom d\n From e\nFrom\n"
    assert mboxrd_unquote(mboxrd_quote(body)) == body


def test_deliver_two_messages_exact_file(tmp_path):
    path = str(tmp_path / "mbox")
    env = Envelope(mail_from="s@x", rcpts=("r@y",))
    dest = Destination("mbox", path=path)
    one = b"Subject: 1\r\n\r\nFrom the start\r\n>From quoted\r\n"
    two = b"Subject: 2\n\nno final newline"
    assert deliver(dest, one, env).ok
    assert deliver(dest, two, Envelope(), add_headers=False).ok
    data = (tmp_path / "mbox").read_bytes()
    first, second = data.split(b"\n\nFrom MAILER-DAEMON ")
    assert first.startswith(b"From s@x ")
    assert first.split(b"\n", 1)[1] == (b"Return-Path: <s@x>\nDelivered-To: r@y\nSubject: 1\n\n"
                                        b">From the start\n>>From quoted")  # split ate "\n"
    assert second.split(b"\n", 1)[1] == b"Subject: 2\n\nno final newline\n\n"
    assert split_mbox(data) == [
        b"Return-Path: <s@x>\nDelivered-To: r@y\nSubject: 1\n\nFrom the start\n>From quoted\n",
        b"Subject: 2\n\nno final newline\n",
    ]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert not os.path.exists(path + ".lock")


def test_blank_line_added_after_sloppy_previous_message(tmp_path):
    path = tmp_path / "mbox"
    path.write_bytes(b"From a@x Thu Jan  1 00:00:00 1970\nSubject: old\n\nno newline")
    assert deliver_mbox(str(path), b"Subject: new\n\nb\n", add_headers=False).code == 250
    assert split_mbox(path.read_bytes()) == [b"Subject: old\n\nno newline\n",
                                             b"Subject: new\n\nb\n"]


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(
    st.lists(st.sampled_from([b"From x", b">From y", b">>From z", b"", b"t", b"From", b" From "]),
             max_size=8).map(lambda ls: b"".join(line + b"\n" for line in ls)),
    min_size=1, max_size=4))
def test_property_mboxrd_round_trip(tmp_path_factory, bodies):
    path = str(tmp_path_factory.mktemp("mb") / "mbox")
    for body in bodies:
        raw = b"Subject: t\n\n" + body
        assert deliver_mbox(path, raw, add_headers=False, clock=lambda: FIXED).code == 250
    with open(path, "rb") as f:
        assert split_mbox(f.read()) == [b"Subject: t\n\n" + b for b in bodies]


def _writer(path, tag, count):
    for i in range(count):
        body = b"".join(b"%s line %d %d\n" % (tag, i, n) for n in range(200))
        reply = deliver_mbox(path, b"Subject: %s %d\n\n" % (tag, i) + body, add_headers=False)
        assert reply.code == 250, reply


def test_two_concurrent_writers_both_land_intact(tmp_path):
    path = str(tmp_path / "mbox")
    ctx = get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, tag, 25)) for tag in (b"A", b"B")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    messages = split_mbox((tmp_path / "mbox").read_bytes())
    assert len(messages) == 50
    for tag in (b"A", b"B"):
        mine = [m for m in messages if m.startswith(b"Subject: %s " % tag)]
        assert len(mine) == 25
        for i, m in enumerate(mine):
            expected = b"".join(b"%s line %d %d\n" % (tag, i, n) for n in range(200))
            assert m == b"Subject: %s %d\n\n" % (tag, i) + expected


def test_fresh_dotlock_is_honoured(tmp_path):
    path = tmp_path / "mbox"
    (tmp_path / "mbox.lock").write_bytes(b"123\n")
    start = time.monotonic()
    reply = deliver_mbox(str(path), b"S: x\n\nb\n", timeout=0.5)
    assert time.monotonic() - start >= 0.45
    assert (reply.code, reply.enhanced) == (451, "4.2.1")
    assert not path.exists() or path.read_bytes() == b""
    assert (tmp_path / "mbox.lock").read_bytes() == b"123\n"  # someone else's lock stays


def test_stale_dotlock_is_removed(tmp_path):
    lock = tmp_path / "mbox.lock"
    lock.write_bytes(b"123\n")
    old = time.time() - 301
    os.utime(lock, (old, old))
    assert deliver_mbox(str(tmp_path / "mbox"), b"S: x\n\nb\n", timeout=2).code == 250
    assert not lock.exists()


def _hold_fcntl_lock(path, seconds, ready):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    ready.set()
    time.sleep(seconds)
    os.close(fd)


def test_fcntl_lock_is_honoured_and_waited_for(tmp_path):
    path = str(tmp_path / "mbox")
    ctx = get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_fcntl_lock, args=(path, 1.0, ready))
    holder.start()
    assert ready.wait(10)
    busy = deliver_mbox(path, b"S: 1\n\nb\n", timeout=0.3)
    assert (busy.code, busy.enhanced) == (451, "4.2.1")
    start = time.monotonic()
    waited = deliver_mbox(path, b"S: 2\n\nb\n", timeout=10)
    assert waited.code == 250 and time.monotonic() - start > 0.2
    holder.join(10)
    assert split_mbox((tmp_path / "mbox").read_bytes()) == [b"S: 2\n\nb\n"]


def _append_with_fsize_limit(path, limit, queue):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    reply = deliver_mbox(path, b"Subject: big\n\n" + b"y\n" * 20_000, add_headers=False)
    queue.put((reply.code, reply.enhanced))


def test_failed_append_truncates_back(tmp_path):
    path = str(tmp_path / "mbox")
    assert deliver_mbox(path, b"Subject: keep\n\nbody\n", add_headers=False).code == 250
    before = (tmp_path / "mbox").read_bytes()
    ctx = get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_append_with_fsize_limit, args=(path, len(before) + 4096, queue))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert queue.get(timeout=5) == (452, "4.2.2")
    assert (tmp_path / "mbox").read_bytes() == before
    assert not os.path.exists(path + ".lock")


def test_mbox_in_missing_directory_is_permanent(tmp_path):
    blocker = tmp_path / "f"
    blocker.write_bytes(b"")
    report = deliver(Destination("mbox", path=str(blocker / "mbox")), b"x\n", Envelope())
    assert report.exit_code == 73
    assert report.outcomes[0].reply.enhanced == "5.2.0"


@pytest.mark.parametrize("rcpts", [(), ("a@x",), ("a@x", "b@x")])
def test_one_copy_and_one_outcome_per_rcpt(tmp_path, rcpts):
    path = tmp_path / "mbox"
    report = deliver(Destination("mbox", path=str(path)), b"S: x\n\nb\n", Envelope(rcpts=rcpts))
    assert [o.rcpt for o in report.outcomes] == list(rcpts or ("",))
    assert len(split_mbox(path.read_bytes())) == 1
