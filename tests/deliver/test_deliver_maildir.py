"""Maildir delivery: files land complete in new/, nothing stays in tmp/, names are safe."""

import os
import resource
import signal
from multiprocessing import get_context

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rohrpost.deliver import Destination, deliver, deliver_maildir, parse_destination
from rohrpost.deliver.maildir import UniqueNames, folder_dirname, sanitize_host
from rohrpost.envelope import Envelope

MSG = b"Subject: hi\r\nFrom: a@example.org\r\n\r\nbody line\r\n.\r\nFrom here\r\n"


def files(path, sub):
    d = os.path.join(path, sub)
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def only_new(path):
    names = files(path, "new")
    assert len(names) == 1, names
    assert files(path, "tmp") == []
    with open(os.path.join(path, "new", names[0]), "rb") as f:
        return names[0], f.read()


def test_creates_maildir_and_writes_exact_content(tmp_path):
    md = str(tmp_path / "Maildir")
    env = Envelope(mail_from="a@example.org", rcpts=("b@example.net",))
    report = deliver(parse_destination(f"maildir:{md}"), MSG, env)
    assert report.ok and report.exit_code == 0
    assert [o.rcpt for o in report.outcomes] == ["b@example.net"]
    name, content = only_new(md)
    assert content == (b"Return-Path: <a@example.org>\nDelivered-To: b@example.net\n"
                       b"Subject: hi\nFrom: a@example.org\n\nbody line\n.\nFrom here\n")
    assert files(md, "cur") == []
    assert oct(os.stat(os.path.join(md, "new", name)).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.join(md, "tmp")).st_mode & 0o777) == "0o700"


def test_no_rcpts_gives_one_outcome_and_strips_from_line(tmp_path):
    md = str(tmp_path / "M")
    raw = b"From someone@x Thu Jan  1 00:00:00 1970\nSubject: x\n\nbody\n"
    report = deliver(Destination("maildir", path=md), raw, Envelope())
    assert [(o.rcpt, o.reply.code) for o in report.outcomes] == [("", 250)]
    assert only_new(md)[1] == b"Subject: x\n\nbody\n"


def test_null_sender_known_gives_empty_return_path(tmp_path):
    md = str(tmp_path / "M")
    env = Envelope(mail_from="", rcpts=("u@x",), sources={"mail_from": "argument"})
    deliver(Destination("maildir", path=md), b"S: 1\n\nb\n", env)
    assert only_new(md)[1].startswith(b"Return-Path: <>\nDelivered-To: u@x\n")


def test_add_headers_off(tmp_path):
    md = str(tmp_path / "M")
    env = Envelope(mail_from="a@x", rcpts=("u@x", "v@x"))
    report = deliver(Destination("maildir", path=md), b"S: 1\n\nb\n", env, add_headers=False)
    assert [o.rcpt for o in report.outcomes] == ["u@x", "v@x"]
    assert only_new(md)[1] == b"S: 1\n\nb\n"


def test_header_injection_in_envelope_is_neutralised(tmp_path):
    md = str(tmp_path / "M")
    env = Envelope(mail_from="a@x>\r\nBcc: evil@x", rcpts=("u@x\nX-Evil: 1",))
    deliver(Destination("maildir", path=md), b"S: 1\n\nb\n", env)
    head = only_new(md)[1].split(b"\n\n")[0].split(b"\n")
    assert head == [b"Return-Path: <a@x>Bcc: evil@x>", b"Delivered-To: u@xX-Evil: 1", b"S: 1"]


def test_maildirpp_folder_created_with_marker(tmp_path):
    md = str(tmp_path / "M")
    reply = deliver_maildir(md, b"S: j\n\nb\n", "Junk")
    assert reply.code == 250
    assert only_new(str(tmp_path / "M" / ".Junk"))[1] == b"S: j\n\nb\n"
    assert (tmp_path / "M" / ".Junk" / "maildirfolder").is_file()
    assert files(md, "new") == [] and os.path.isdir(os.path.join(md, "cur"))
    assert deliver_maildir(md, b"S: a\n\nb\n", "Archive.2024").code == 250
    assert (tmp_path / "M" / ".Archive.2024" / "new").is_dir()
    assert deliver_maildir(md, b"S: i\n\nb\n", "INBOX").code == 250
    assert len(files(md, "new")) == 1


def test_folder_via_destination_field(tmp_path):
    dest = Destination("maildir", path=str(tmp_path / "M"), folder="Spam")
    assert deliver(dest, b"S: s\n\nb\n", Envelope(rcpts=("u@x",))).ok
    assert only_new(str(tmp_path / "M" / ".Spam"))[1].startswith(b"Delivered-To: u@x\n")


@pytest.mark.parametrize(
    "bad", ["../x", "..", ".", ".hidden", "a/b", "a\\b", "x..y", "x.", "", "a\nb", "a\x00b",
            "\u2028", "a" * 300, "../../etc"],
)
def test_folder_sanitisation_refuses(tmp_path, bad):
    md = tmp_path / "M"
    reply = deliver_maildir(str(md), b"S: x\n\nb\n", bad)
    assert reply.code == 554 and reply.enhanced == "5.3.5"
    assert not md.exists()
    assert list(tmp_path.iterdir()) == []


def test_bad_folder_report_exit_code(tmp_path):
    dest = Destination("maildir", path=str(tmp_path / "M"), folder="../x")
    report = deliver(dest, b"S: x\n\nb\n", Envelope(rcpts=("u@x",)))
    assert report.permanent and report.exit_code == 69


def test_folder_dirname_accepts_unicode():
    assert folder_dirname("Entwürfe") == ".Entwürfe"


def test_unique_names_format_and_sanitised_host():
    names = UniqueNames(clock=lambda: 1700000000.25, hostname="mx/1:a\nb")
    first, second = names.next(), names.next()
    assert first == f"1700000000.M250000P{os.getpid()}Q1.mx\\0571\\072a\\012b"
    assert second.startswith(f"1700000000.M250000P{os.getpid()}Q2.")
    assert sanitize_host("") == "localhost"


def test_name_collision_retries_never_overwrites(tmp_path):
    md = str(tmp_path / "M")
    fixed = UniqueNames(clock=lambda: 1.0, hostname="h")
    assert deliver_maildir(md, b"one\n", names=fixed).code == 250
    again = UniqueNames(clock=lambda: 1.0, hostname="h")  # starts at Q1 again: collides
    assert deliver_maildir(md, b"two\n", names=again).code == 250
    contents = sorted((tmp_path / "M" / "new" / n).read_bytes() for n in files(md, "new"))
    assert contents == [b"one\n", b"two\n"]
    assert files(md, "tmp") == []


def _deliver_with_fsize_limit(md, limit, size, queue):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    reply = deliver_maildir(md, b"S: big\n\n" + b"x" * size)
    queue.put((reply.code, reply.enhanced))


def test_write_failure_leaves_nothing_in_tmp_or_new(tmp_path):
    md = str(tmp_path / "M")
    ctx = get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_deliver_with_fsize_limit, args=(md, 1000, 50_000, queue))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 0
    assert queue.get(timeout=5) == (452, "4.2.2")  # EFBIG: like a quota, try later
    assert files(md, "new") == [] and files(md, "tmp") == []


def test_unwritable_location_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    reply = deliver_maildir(str(blocker / "M"), b"x\n")
    assert reply.code == 550 and reply.enhanced == "5.2.0"  # ENOTDIR: retry cannot fix it


PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(body=st.binary(max_size=3000))
def test_property_arbitrary_bytes_round_trip(tmp_path_factory, body):
    raw = b"X" + body  # any bytes; "X" only keeps a first line from being an mbox From_ line
    md = str(tmp_path_factory.mktemp("md"))
    assert deliver_maildir(md, raw, add_headers=False).code == 250
    got = only_new(md)[1]
    assert got == raw.replace(b"\r\n", b"\n")
    if b"\r\n" not in raw:
        assert got == raw  # byte for byte, NUL and 8-bit included


@PROPERTY
@given(lines=st.lists(st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")),
                      max_size=30),
       crlf=st.booleans())
def test_property_crlf_becomes_lf(tmp_path_factory, lines, crlf):
    # lines hold any bytes but LF and a final CR, so the only CRLFs are the line ends we add
    lf_body = b"".join(b"H" + line + b"\n" for line in lines)  # "H": never a From_ line
    raw = lf_body.replace(b"\n", b"\r\n") if crlf else lf_body
    md = str(tmp_path_factory.mktemp("md"))
    assert deliver_maildir(md, raw, add_headers=False).code == 250
    assert only_new(md)[1] == lf_body
