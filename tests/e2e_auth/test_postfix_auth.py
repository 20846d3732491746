"""End to end: a real Postfix with ``rohrpost milter`` doing SPF, DKIM, ARC and DMARC.

One Postfix (Debian's package) on loopback, SMTP AUTH through Dovecot's auth socket, one
``rohrpost milter`` process with one pipeline.toml (spf, dkim-verify, arc-verify, dmarc,
dkim-sign, arc-seal, authres), a loopback DNS server serving every SPF, DKIM and DMARC record
(DKIM keys made with ``rohrpost dkim keygen``), and an aiosmtpd catcher as the next hop. The
internet's DNS is never asked. Issue 3, "Done means": end to end on a real Postfix.

Only 127.0.0.2 (think: the webmail host) is a trusted network here, so a client on 127.0.0.1
counts as the internet unless it logs in (SMTP AUTH): that is what makes signing depend on
authentication alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest

from rohrpost.message import Message
from tests.dkim.dkimhelp import dkimpy_verify, opendkim_testmsg
from tests.support.daemons import (
    LOOPBACK,
    CaughtMessage,
    DovecotInstance,
    MailCatcher,
    PostfixInstance,
    daemon_dir,
    free_port,
    smtp_send,
    stop_process,
    wait_until,
)
from tests.support.dnsserver import TestDnsServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "bin" / "rohrpost"
# bin/rohrpost re-executes into ROOT/.venv when there is one; a worktree has none, so run it
# with the interpreter running the tests (which has dkimpy, pyspf, pymilter).
ENV = {**os.environ, "ROHRPOST_NO_VENV": "1", "PYTHONPATH": str(ROOT)}
AUTHSERV = "mx.rohrpost.test"
USER, PASSWORD = "alice@example.org", "s3cret-alice"
REMOTE_SPF = "v=spf1 ip4:127.0.0.1 -all"


def rohrpost(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``bin/rohrpost ARGS`` and return its output."""
    done = subprocess.run([sys.executable, str(BIN), *args], capture_output=True, text=True,
                          env=ENV, timeout=60, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"rohrpost {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}{done.stderr}")
    return done


def keygen(out: Path, domain: str, selector: str, kind: str) -> tuple[Path, str, str]:
    """``rohrpost dkim keygen``: the key file and the TXT record it prints (name, value)."""
    line = rohrpost("dkim", "keygen", "-d", domain, "-s", selector, "--type", kind,
                    "--out", str(out)).stdout
    name = line.split()[0].rstrip(".")
    value = "".join(re.findall(r'"([^"]*)"', line))
    assert name == f"{selector}._domainkey.{domain}" and value.startswith("v=DKIM1;"), line
    return out / f"{domain}.{selector}.pem", name, value


class MilterProc:
    """``bin/rohrpost milter`` as a subprocess; ready when its worker logs "ready"."""

    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.log_path = config.parent / "milter.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(BIN), "milter", "-c", str(self.config), "--socket",
                 f"inet:{self.port}@{LOOPBACK}", "--workers", "1"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=ENV,
                start_new_session=True)

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"rohrpost milter exited:\n{self.log()}")
            return " ready" in self.log()

        wait_until(ready, 30, f"rohrpost milter on {self.port}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        stop_process(self.proc)  # type: ignore[arg-type]


def pipeline_toml(tmp: Path, dns: TestDnsServer, keys: dict[str, Path]) -> str:
    return f'''
[pipeline]
authserv_id = "{AUTHSERV}"
hostname = "{AUTHSERV}"
var_dir = "{tmp}/var"
trusted_networks = ["127.0.0.2/32"]   # 127.0.0.1 is "the internet" unless it logs in

[dns]
servers = ["{dns.address}"]
timeout = 2.0

[state]
backend = "memory"

[[filter]]
use = "spf"
[[filter]]
use = "dkim-verify"
[[filter]]
use = "arc-verify"
[[filter]]
use = "dmarc"
[[filter]]
use = "dkim-sign"                       # trusted_networks: the [pipeline] ones
[[filter.key]]
domain = "example.org"
selector = "rsa2026"
key = "{keys["rsa2026"]}"
[[filter.key]]
domain = "example.org"
selector = "ed2026"
key = "{keys["ed2026"]}"
[[filter]]
use = "arc-seal"
domain = "lists.example.org"
selector = "arc2026"
key = "{keys["arc2026"]}"
[filter.when]
recipient_domains = ["lists.example.org"]
[[filter]]
use = "authres"
'''


@dataclass
class Stack:
    tmp: Path
    dns: TestDnsServer
    records: dict[str, str]
    remote_key: bytes
    catcher: MailCatcher
    postfix: PostfixInstance
    dovecot: DovecotInstance
    milter: MilterProc

    def arrived(self, marker: str, timeout: float = 30.0) -> CaughtMessage:
        """The one message carrying ``marker`` that reached the catcher."""
        wait_until(lambda: any(marker.encode() in m.data for m in self.catcher.messages),
                   timeout, f"message {marker} at the catcher")
        got = [m for m in self.catcher.messages if marker.encode() in m.data]
        assert len(got) == 1, f"{marker} arrived {len(got)} times"
        return got[0]

    def never_arrived(self, marker: str) -> None:
        """Prove ``marker`` did not arrive: a message sent after it arrives, and it did not."""
        control = f"<control-{time.monotonic_ns()}@example.net>"
        res = smtp_send(self.postfix.port, "x@example.net", ["y@example.net"],
                        message("Control", "Someone <x@example.net>", control))
        assert res.accepted, res
        self.arrived(control)
        self.postfix.wait_queue_empty()
        assert not [m for m in self.catcher.messages if marker.encode() in m.data]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    assert os.geteuid() == 0 and shutil.which("postfix") and shutil.which("dovecot"), \
        "needs root, Postfix and Dovecot (scripts/install-deps.sh)"
    tmp = daemon_dir("e2eauth")
    with contextlib.ExitStack() as stack:
        if os.environ.get("ROHRPOST_KEEP_DAEMON_DIRS") != "1":
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        keydir = tmp / "keys"
        keydir.mkdir()
        records = {}
        keys = {}
        for domain, selector, kind in (("example.org", "rsa2026", "rsa"),
                                       ("example.org", "ed2026", "ed25519"),
                                       ("lists.example.org", "arc2026", "rsa"),
                                       ("remote.test", "sel1", "rsa")):
            keys[selector], name, value = keygen(keydir, domain, selector, kind)
            records[name] = value
        dns = stack.enter_context(TestDnsServer())
        for name, value in records.items():
            dns.add(name, "TXT", value)
        for name, value in (
            ("remote.test", REMOTE_SPF),
            ("_dmarc.remote.test", "v=DMARC1; p=reject"),
            ("bank.test", "v=spf1 ip4:192.0.2.1 -all"),
            ("_dmarc.bank.test", "v=DMARC1; p=reject"),
            ("evil.test", "v=spf1 ip4:127.0.0.1 -all"),
            ("example.org", "v=spf1 ip4:192.0.2.0/24 -all"),
            ("_dmarc.example.org", "v=DMARC1; p=none"),
            ("_dmarc.shop.example.org", "v=DMARC1; p=reject"),
        ):
            dns.add(name, "TXT", value)
        config = tmp / "pipeline.toml"
        config.write_text(pipeline_toml(tmp, dns, keys))
        rohrpost("config", "check", "-c", str(config))
        milter = MilterProc(config, free_port())
        stack.callback(milter.stop)
        milter.start()
        catcher = stack.enter_context(MailCatcher())
        dovecot = stack.enter_context(DovecotInstance(
            daemon_dir("dc"), users=[(USER, PASSWORD)], imap=False, pop3=False, tls=False,
            auth_socket=True))
        stack.callback(shutil.rmtree, dovecot.dir, ignore_errors=True)
        postfix = stack.enter_context(PostfixInstance(
            daemon_dir("pf"), relay_port=catcher.port,
            milters=[f"inet:{LOOPBACK}:{milter.port}"],
            extra_main={
                "smtpd_sasl_auth_enable": "yes",
                "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": str(dovecot.auth_socket_path),  # smtpd is not chrooted
                "smtpd_tls_auth_only": "no",
                "smtpd_relay_restrictions": "permit_sasl_authenticated, permit_mynetworks, "
                                            "reject",
                # Postfix's default already lists {auth_authen}: the milter reads it at MAIL
                "milter_mail_macros": "i {auth_type} {auth_authen} {auth_author} {mail_addr}",
            }))
        stack.callback(shutil.rmtree, postfix.dir, ignore_errors=True)
        try:
            yield Stack(tmp, dns, records, keys["sel1"].read_bytes(), catcher, postfix,
                        dovecot, milter)
        finally:
            if os.environ.get("ROHRPOST_E2E_LOGS") == "1":
                print(postfix.log_text()[-6000:], milter.log()[-6000:], sep="\n")
    assert not dns.errors, dns.errors


def message(subject: str, sender: str, msgid: str, to: str = "Bob <bob@elsewhere.test>",
            extra: tuple[str, ...] = ()) -> bytes:
    head = [*extra, f"From: {sender}", f"To: {to}", f"Subject: {subject}",
            "Date: Mon, 2 Feb 2026 10:00:00 +0000", f"Message-ID: {msgid}",
            "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    return ("\r\n".join(head) + f"\r\n\r\nHello,\r\n{subject}.\r\n-- \r\n{msgid}\r\n").encode()


def remote_signed(raw: bytes, key: bytes, domain: bytes = b"remote.test") -> bytes:
    """A remote domain's DKIM signature (dkimpy, relaxed/relaxed, rsa-sha256) on top."""
    sig = dkim.sign(raw, b"sel1", domain, key, canonicalize=(b"relaxed", b"relaxed"))
    return sig + raw


def send_authenticated(port: int, mail_from: str, rcpts: list[str], data: bytes, *,
                       login: bool = True, source: str = LOOPBACK) -> tuple[int, str]:
    """Log in with AUTH PLAIN (unless not ``login``), send from ``source``, return the reply
    to the end of DATA."""
    with smtplib.SMTP(LOOPBACK, port, timeout=20, source_address=(source, 0)) as client:
        client.ehlo("laptop.example.org")
        assert client.has_extn("auth") and "PLAIN" in client.esmtp_features["auth"].upper()
        if login:
            client.user, client.password = USER, PASSWORD
            code, text = client.auth("PLAIN", client.auth_plain)
            assert code == 235, (code, text)
        assert client.mail(mail_from)[0] == 250
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] in (250, 251)
        code, text = client.data(data)
        return code, text.decode()


def our_results(msg: Message) -> str:
    """The value of the one Authentication-Results header with our authserv-id, unfolded."""
    ours = [" ".join(h.value.split()) for h in msg.get_all("Authentication-Results")
            if h.value.strip().lower().startswith(AUTHSERV)]
    assert len(ours) == 1, ours
    return ours[0]


def method_results(value: str) -> dict[str, list[str]]:
    """``{"spf": ["pass smtp.mailfrom=..."], ...}`` from one A-R value."""
    out: dict[str, list[str]] = {}
    for part in value.split(";")[1:]:
        method, _, rest = part.strip().partition("=")
        out.setdefault(method, []).append(rest)
    return out


def dkim_sigs(msg: Message) -> list[dict[str, str]]:
    sigs = []
    for h in msg.get_all("DKIM-Signature"):
        tags = dict(t.strip().split("=", 1) for t in "".join(h.value.split()).split(";")
                    if "=" in t)
        sigs.append(tags)
    return sigs


# -- 1. outgoing mail: signed for an authenticated user, not for an anonymous client --------


def test_authenticated_submission_is_signed_rsa_and_ed25519(stack: Stack) -> None:
    msgid = "<out-auth-1@example.org>"
    code, text = send_authenticated(stack.postfix.port, USER, ["bob@elsewhere.test"],
                                    message("Signed by us", "Alice <alice@example.org>", msgid))
    assert code == 250, text
    got = stack.arrived(msgid)
    assert f"sasl_method=PLAIN, sasl_username={USER}" in stack.postfix.log_text()
    msg = Message(got.data)
    sigs = dkim_sigs(msg)
    assert sorted((s["d"], s["s"], s["a"]) for s in sigs) == [
        ("example.org", "ed2026", "ed25519-sha256"), ("example.org", "rsa2026", "rsa-sha256")]
    assert all(s["c"] == "relaxed/relaxed" for s in sigs)
    for s in sigs:
        h = s["h"].lower().split(":")
        assert h.count("from") == 2 and h.count("subject") == 2  # oversigned
    # the bytes as delivered (with Postfix's Received and our A-R on top) verify with dkimpy
    assert dkimpy_verify(got.data, stack.records) == [True, True]
    # SPF and DMARC are skipped for authenticated users; the status header names the signing
    status = " ".join(msg.get("X-Spam-Status").split())
    assert "DKIM_SIGNED" in status, status
    # RFC 8601 2.7.4: the milter read {auth_authen}; authres reports it in our one header
    assert method_results(our_results(msg))["auth"] == [f"pass smtp.auth={USER}"]


def test_authenticated_submission_verifies_with_opendkim(stack: Stack, tmp_path: Path) -> None:
    msgid = "<out-auth-odkim@example.org>"
    code, text = send_authenticated(stack.postfix.port, USER, ["bob@elsewhere.test"],
                                    message("For OpenDKIM", "Alice <alice@example.org>", msgid))
    assert code == 250, text
    got = stack.arrived(msgid)
    done = opendkim_testmsg(got.data, stack.records, tmp_path)
    assert done.returncode == 0, done.stderr
    bad = opendkim_testmsg(got.data.replace(b"For OpenDKIM.", b"For OpenDKIM!"), stack.records,
                           tmp_path)
    assert bad.returncode != 0


def test_unauthenticated_client_is_not_signed(stack: Stack) -> None:
    """Same From domain, a key that fits, but no AUTH and 127.0.0.1 is not trusted: no sig."""
    msgid = "<out-anon-1@example.org>"
    res = smtp_send(stack.postfix.port, USER, ["bob@elsewhere.test"],
                    message("Not signed", "Alice <alice@example.org>", msgid))
    assert res.accepted, res  # relayed by Postfix (mynetworks), p=none: not refused
    msg = Message(stack.arrived(msgid).data)
    assert msg.get_all("DKIM-Signature") == []
    results = method_results(our_results(msg))
    # SPF for example.org allows only 192.0.2.0/24: the anonymous client is not the domain
    assert results["spf"][0].startswith("fail smtp.mailfrom=alice@example.org")
    assert results["dkim"] == ["none"]
    assert results["dmarc"][0].startswith("fail header.from=example.org")
    assert "auth" not in results  # no SMTP AUTH: no auth= result


def test_trusted_network_is_signed_and_not_judged_by_dmarc(stack: Stack) -> None:
    """A trusted host (127.0.0.2) without AUTH, From a p=reject domain of ours: signed, and
    not refused by DMARC, which runs before dkim-sign and would see it unsigned (OpenDMARC's
    IgnoreHosts default; our spf skips trusted networks the same way)."""
    msgid = "<trusted-1@shop.example.org>"
    code, text = send_authenticated(
        stack.postfix.port, "orders@shop.example.org", ["bob@elsewhere.test"],
        message("Your order", "Shop <orders@shop.example.org>", msgid), login=False,
        source="127.0.0.2")
    assert code == 250, text
    got = stack.arrived(msgid)
    assert "[127.0.0.2]" in Message(got.data).get("Received")
    sigs = dkim_sigs(Message(got.data))
    assert sorted(s["s"] for s in sigs) == ["ed2026", "rsa2026"]
    assert dkimpy_verify(got.data, stack.records) == [True, True]


# -- 2. incoming mail from a remote domain: spf=pass dkim=pass dmarc=pass ------------------


def test_incoming_signed_mail_gets_spf_dkim_dmarc_pass(stack: Stack) -> None:
    msgid = "<in-1@remote.test>"
    raw = remote_signed(message("Remote news", "News <news@remote.test>", msgid,
                                to="Bob <bob@example.org>"), stack.remote_key)
    # a forged result claiming our authserv-id, and another host's result
    forged = (f"Authentication-Results: {AUTHSERV}; dkim=pass header.d=bank.test\r\n"
              "Authentication-Results: relay.remote.test; spf=pass\r\n").encode()
    res = smtp_send(stack.postfix.port, "bounce@remote.test", ["bob@example.org"],
                    forged + raw, helo="mail.remote.test")
    assert res.accepted, res
    msg = Message(stack.arrived(msgid).data)
    assert msg.headers[0].name == "Authentication-Results"  # ours, on top
    assert msg.headers[0].value.strip().startswith(f"{AUTHSERV};")
    value = our_results(msg)  # exactly one: the forged copy is gone
    assert "bank.test" not in value
    results = method_results(value)
    assert results["spf"][0].startswith("pass smtp.mailfrom=bounce@remote.test"), value
    assert [r for r in results["dkim"] if r.startswith("pass header.d=remote.test")
            and "header.s=sel1" in r], value
    assert results["dmarc"][0].startswith("pass header.from=remote.test"), value
    assert results["arc"] == ["none"]
    assert "relay.remote.test; spf=pass" in " ".join(
        h.value for h in msg.get_all("Authentication-Results"))  # not ours: kept
    assert msg.get_all("DKIM-Signature") and len(dkim_sigs(msg)) == 1  # not re-signed by us
    assert msg.get_all("ARC-Seal") == []  # not to a forwarding domain: not sealed


# -- 3. forged From of a p=reject domain: 550 5.7.1 at end of DATA ------------------------


def test_forged_from_of_reject_domain_refused_while_connected(stack: Stack) -> None:
    msgid = "<forged-1@bank.test>"
    raw = message("Urgent wire transfer", "CEO <ceo@bank.test>", msgid, to="bob@example.org")
    # a signature for d=bank.test made with a key bank.test never published: not valid
    raw = remote_signed(raw, stack.remote_key, domain=b"bank.test")
    res = smtp_send(stack.postfix.port, "attacker@evil.test", ["bob@example.org"], raw,
                    helo="mail.evil.test")
    assert res.mail is not None and res.mail.code == 250  # SPF of evil.test passes...
    assert [r.code for r in res.rcpts] == [250]
    assert res.data is not None, res  # ...the refusal comes at the end of DATA
    assert res.data.code == 550 and res.data.text.startswith("5.7.1"), res.data
    log = stack.postfix.wait_log("milter-reject: END-OF-MESSAGE")
    assert "5.7.1" in log
    stack.never_arrived(msgid)


# -- 4. ARC: sealed when forwarded, and the seal verifies downstream ------------------------


DOWNSTREAM = '''
[pipeline]
authserv_id = "mx.downstream.test"
trusted_networks = []
[dns]
servers = ["{dns}"]
timeout = 2.0
[state]
backend = "memory"
[[filter]]
use = "dkim-verify"
[[filter]]
use = "arc-verify"
'''


def downstream_check(stack: Stack, data: bytes, name: str) -> dict[str, list[str]]:
    """``rohrpost check --json`` of a second pipeline: ``{filter: [auth results]}``."""
    conf = stack.tmp / "downstream.toml"
    conf.write_text(DOWNSTREAM.format(dns=stack.dns.address))
    path = stack.tmp / name
    path.write_bytes(data)
    out = rohrpost("check", "--json", "-c", str(conf), "--client-ip", "198.51.100.7",
                   "--sender", "list-bounces@lists.example.org", "-r", "carol@downstream.test",
                   str(path)).stdout
    (result,) = json.loads(out)
    return {f["name"]: f["auth"] for f in result["filters"]}


def test_forwarded_mail_is_arc_sealed_and_verifies_downstream(stack: Stack) -> None:
    msgid = "<arc-1@remote.test>"
    raw = remote_signed(message("To the list", "News <news@remote.test>", msgid,
                                to="list@lists.example.org"), stack.remote_key)
    res = smtp_send(stack.postfix.port, "bounce@remote.test", ["list@lists.example.org"], raw,
                    helo="mail.remote.test")
    assert res.accepted, res
    got = stack.arrived(msgid)
    msg = Message(got.data)
    for name in ("ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"):
        (one,) = msg.get_all(name)
        assert one.value.strip().startswith("i=1;"), (name, one.value)
    seal = "".join(msg.get("ARC-Seal").split())
    assert "cv=none" in seal and "d=lists.example.org" in seal and "s=arc2026" in seal
    aar = " ".join(msg.get("ARC-Authentication-Results").split())
    assert aar.startswith(f"i=1; {AUTHSERV};")
    for result in ("spf=pass", "dkim=pass", "dmarc=pass", "arc=none"):
        assert result in aar, aar
    # a second rohrpost, in pipe mode, validates the chain (and the remote DKIM still passes)
    auth = downstream_check(stack, got.data, "arc-ok.eml")
    assert auth["arc-verify"] == ["arc=pass"], auth
    assert any(a.startswith("dkim=pass header.d=remote.test") for a in auth["dkim-verify"])
    # negative control: a changed body breaks the ARC-Message-Signature
    tampered = got.data.replace(b"To the list.", b"To the list!")
    auth = downstream_check(stack, tampered, "arc-bad.eml")
    assert auth["arc-verify"][0].startswith("arc=fail"), auth
