"""lmtp: delivery to a real Dovecot LMTP server started in a temporary directory.

Dovecot refuses uid 0 for mail, so when the tests run as root the mailboxes belong to
``nobody``; otherwise to the current user. Unknown users get Dovecot's own 550 5.1.1.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from rohrpost.deliver import Destination, deliver, parse_destination
from rohrpost.envelope import Envelope

CONF = """\
protocols = lmtp
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
listen = 127.0.0.1, ::1
ssl = no
first_valid_uid = {uid}
mail_location = maildir:{root}/mail/%n/Maildir
passdb {{
  driver = passwd-file
  args = username_format=%n {root}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {root}/users
  default_fields = uid={uid} gid={gid}
}}
service lmtp {{
  inet_listener lmtp {{
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0666
  }}
}}
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mail_ids():
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid


def _wait_for_port(proc, port, log, deadline_s=20.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dovecot exited with {proc.returncode}: {_read(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"dovecot did not accept on port {port} within {deadline_s} s: {_read(log)}")


def _read(path):
    if not os.path.exists(path):
        return "(no log)"
    with open(path) as f:
        return f.read()


@pytest.fixture(scope="module")
def dovecot():
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.path.exists(binary):
        pytest.fail("dovecot is not installed (Debian package dovecot-lmtpd); cannot test LMTP")
    root = tempfile.mkdtemp(prefix="rohrpost-dovecot-")  # not under pytest's 0700 tmp dirs
    os.chmod(root, 0o755)
    uid, gid = _mail_ids()
    for sub in ("run", "state", "mail"):
        os.mkdir(os.path.join(root, sub))
    os.chown(os.path.join(root, "mail"), uid, gid)
    with open(os.path.join(root, "users"), "w") as f:
        f.write("".join(f"{u}:{{PLAIN}}x::::{root}/mail/{u}::\n" for u in ("alice", "bob")))
    port = _free_port()
    conf = os.path.join(root, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(root=root, uid=uid, gid=gid, port=port))
    log = os.path.join(root, "dovecot.log")
    proc = subprocess.Popen([binary, "-F", "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_for_port(proc, port, log)
        yield {"root": root, "port": port, "log": log}
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        shutil.rmtree(root, ignore_errors=True)


def _inbox(dv, user):
    new = os.path.join(dv["root"], "mail", user, "Maildir", "new")
    if not os.path.isdir(new):
        return []
    out = []
    for name in sorted(os.listdir(new)):
        with open(os.path.join(new, name), "rb") as f:
            out.append(f.read())
    return out


def test_two_recipients_and_one_unknown(dovecot):
    dest = parse_destination(f"lmtp:127.0.0.1:{dovecot['port']}")
    msg = b"Subject: lmtp test 1\r\nMessage-ID: <t1@x>\r\n\r\n.dot line\r\nbody\r\n"
    env = Envelope(mail_from="s@example.org",
                   rcpts=("alice@example.org", "nobody@example.org", "bob@example.org"))
    report = deliver(dest, msg, env, timeout=30)
    got = [(o.rcpt, o.reply.code, o.reply.enhanced) for o in report.outcomes]
    assert got == [("alice@example.org", 250, "2.0.0"), ("nobody@example.org", 550, "5.1.1"),
                   ("bob@example.org", 250, "2.0.0")], report.summary
    assert "Saved" in report.outcomes[0].reply.text
    assert "User doesn't exist" in report.outcomes[1].reply.text
    assert report.permanent and report.exit_code == 67  # mixed 2xx/5xx: the 5xx decides
    for user in ("alice", "bob"):
        [stored] = [m for m in _inbox(dovecot, user) if b"<t1@x>" in m]
        assert stored.endswith(b"Subject: lmtp test 1\nMessage-ID: <t1@x>\n\n.dot line\nbody\n")
        assert stored.startswith(b"Return-Path: <s@example.org>\n")
        assert b"with LMTP" in stored  # Dovecot's own Received: header, so Dovecot stored it


def test_all_good_8bit_over_unix_socket(dovecot):
    dest = Destination("lmtp", path=os.path.join(dovecot["root"], "run", "lmtp"))
    assert str(dest) == f"lmtp:unix:{dovecot['root']}/run/lmtp"
    msg = "Subject: Grüße\nMessage-ID: <t2@x>\nContent-Type: text/plain; charset=utf-8\n" \
          "Content-Transfer-Encoding: 8bit\n\nÄpfel\n".encode()
    env = Envelope(mail_from="", rcpts=("alice@example.org", "bob@example.org"))
    report = deliver(dest, msg, env, timeout=30)
    assert report.ok and report.exit_code == 0, report.summary
    [stored] = [m for m in _inbox(dovecot, "bob") if b"<t2@x>" in m]
    assert stored.endswith(msg)
    assert stored.startswith(b"Return-Path: <>\n")


def test_ipv6_loopback(dovecot):
    dest = parse_destination(f"lmtp:[::1]:{dovecot['port']}")
    report = deliver(dest, b"Subject: v6\r\nMessage-ID: <t3@x>\r\n\r\nb\r\n",
                     Envelope(mail_from="s@x", rcpts=("alice@example.org",)), timeout=30)
    assert report.ok, report.summary
    assert [m for m in _inbox(dovecot, "alice") if b"<t3@x>" in m]


def test_only_unknown_recipients_no_data(dovecot):
    dest = parse_destination(f"lmtp:127.0.0.1:{dovecot['port']}")
    report = deliver(dest, b"Subject: none\r\n\r\nb\r\n",
                     Envelope(mail_from="s@x", rcpts=("ghost@example.org",)), timeout=30)
    assert [(o.reply.code, o.reply.enhanced) for o in report.outcomes] == [(550, "5.1.1")]
    assert "transaction complete" in report.detail
