"""fetchmail, getmail6 and procmail calling rohrpost, against Dovecot POP3/IMAP with TLS.

Each test reads the result back from the Maildir, and the procmail test also over Dovecot
IMAP (the delivery goes into another Dovecot user's Maildir)."""

from __future__ import annotations

import email
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fetch.helpers import BIN, chown_tree, maildir_messages, make_message, seed
from tests.support.daemons import DovecotInstance

pytestmark = pytest.mark.integration
ROHRPOST = " ".join(shlex.quote(p) for p in BIN)


def _pipeline(workdir: Path, deliver: bool = False) -> Path:
    cfg = workdir / "pipeline.toml"
    text = f'[pipeline]\nvar_dir = "{workdir}/var"\nhostname = "filter.test"\n'
    if deliver:
        text += '[deliver]\nplus_folders = true\n'
    cfg.write_text(text)
    return cfg


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed (scripts/install-deps.sh)")
    return path


def _subjects(messages: list[bytes]) -> list[str]:
    return sorted(str(email.message_from_bytes(m)["Subject"]) for m in messages)


def test_fetchmail_mda_rohrpost(pop_imap: DovecotInstance, workdir: Path) -> None:
    fetchmail = _need("fetchmail")
    seed(pop_imap, "alice@example.test", [make_message(i) for i in range(3)])
    cfg = _pipeline(workdir)
    box = workdir / "Maildir"
    rc = workdir / "fetchmailrc"
    rc.write_text(
        "set no bouncemail\n"
        f"poll localhost via 127.0.0.1 with proto POP3 port {pop_imap.pop3s_port}\n"
        f'  user "alice@example.test" there with password "{DovecotInstance.PASSWORD}"'
        " is root here\n"
        f'  ssl sslcertck sslcommonname localhost sslcertfile "{pop_imap.cert_file}"\n'
        "  keep\n"
        f'  mda "{ROHRPOST} run -c {cfg} --deliver maildir:{box}"\n')
    rc.chmod(0o600)
    env = {**os.environ, "FETCHMAILHOME": str(workdir)}
    done = subprocess.run([fetchmail, "-f", str(rc), "-N", "--nosyslog", "-v"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    got = maildir_messages(box)
    assert _subjects(got) == [f"message {i}" for i in range(3)]
    assert all(b"X-Rohrpost-Result: action=accept" in m for m in got)


def test_getmail_mda_external_rohrpost(pop_imap: DovecotInstance, workdir: Path) -> None:
    getmail = _need("getmail")
    seed(pop_imap, "alice@example.test", [make_message(i) for i in range(2)])
    cfg = _pipeline(workdir)
    box = workdir / "Maildir"
    args = ", ".join(f'"{a}"' for a in [*BIN[1:], "run", "-c", str(cfg), "--deliver",
                                        f"maildir:{box}"])
    rc = workdir / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = 127.0.0.1\n"
        f"port = {pop_imap.pop3s_port}\nusername = alice@example.test\n"
        f"password = {DovecotInstance.PASSWORD}\nca_certs = {pop_imap.cert_file}\n"
        "ssl_cert_hostname = localhost\n"
        f"[destination]\ntype = MDA_external\npath = {BIN[0]}\narguments = ({args},)\n"
        "allow_root_commands = true\nignore_stderr = true\n"
        "[options]\nread_all = true\ndelete = false\nverbose = 0\n")
    done = subprocess.run([getmail, "--getmaildir", str(workdir), "--rcfile", str(rc)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    got = maildir_messages(box)
    assert _subjects(got) == ["message 0", "message 1"]
    assert all(b"X-Rohrpost-Result:" in m for m in got)


def test_procmail_filter_and_delivery_read_back_over_imap(pop_imap: DovecotInstance,
                                                          workdir: Path) -> None:
    procmail, fetchmail = _need("procmail"), _need("fetchmail")
    seed(pop_imap, "alice@example.test",
         [make_message(1), make_message(2, msgid="<dup@example.org>"),
          make_message(3, msgid="<dup@example.org>"), make_message(1)])
    cfg = _pipeline(workdir, deliver=True)
    bob_box = pop_imap.maildir_of("bob@example.test")
    prc = workdir / "procmailrc"
    prc.write_text(
        "SHELL=/bin/sh\n"
        f"LOGFILE={workdir}/procmail.log\n"
        "# filter through the rohrpost pipeline (rewrites the message)\n"
        f":0 fw\n| {ROHRPOST} run -c {cfg}\n"
        "# rohrpost as the delivery agent (sorting, duplicate suppression)\n"
        f":0 w\n| {ROHRPOST} deliver -c {cfg} maildir:{bob_box}\n")
    rc = workdir / "fetchmailrc"
    rc.write_text(
        f"poll localhost via 127.0.0.1 with proto IMAP port {pop_imap.imaps_port}\n"
        f'  user "alice@example.test" there with password "{DovecotInstance.PASSWORD}"'
        " is root here\n"
        f'  ssl sslcertck sslcommonname localhost sslcertfile "{pop_imap.cert_file}"\n  keep\n'
        f'  mda "{procmail} -m {prc}"\n')
    rc.chmod(0o600)
    env = {**os.environ, "FETCHMAILHOME": str(workdir)}
    done = subprocess.run([fetchmail, "-f", str(rc), "-N", "--nosyslog"], capture_output=True,
                          text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    on_disk = maildir_messages(bob_box)
    # the second copy of message 1 is suppressed (formail -D habit); message 3 has the
    # Message-ID of message 2 but another body, so it is not a duplicate
    assert _subjects(on_disk) == ["message 1", "message 2", "message 3"]
    chown_tree(pop_imap.mail_dir, pop_imap.mail_uid, pop_imap.mail_gid)
    over_imap = pop_imap.imap_fetch_all("bob@example.test")
    assert _subjects(over_imap) == _subjects(on_disk)
    assert all(b"X-Rohrpost-Result: action=accept" in m for m in over_imap)
