"""dkim-sign: the contract configuration, round trips through the pipe output bytes (runner and
``bin/rohrpost run`` as a subprocess), interop with dkimpy and OpenDKIM both ways, who gets
signed, oversigning, and a property test that sign -> verify holds for arbitrary text."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rohrpost.filters import _dkim_adapter as adapter

from rohrpost.config import ConfigError, parse_config
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from tests.dkim.dkimhelp import (
    MESSAGE,
    NOW,
    ROOT,
    VERIFY_TOML,
    dkimpy_verify,
    make_services,
    opendkim_sign,
    opendkim_testmsg,
    run,
    write_key,
)
from tests.support.dnsserver import TestDnsServer

KEY_TOML = ('[[filter]]\nuse = "dkim-sign"\n[[filter.key]]\ndomain = "e.org"\nselector = "s"\n'
            'key = "{path}"\n')
AUTH = Envelope(auth_user="bob", mail_from="bob@example.org", rcpts=("alice@example.net",))


def records(signing: dict[str, Any]) -> dict[str, str]:
    out = {}
    for sel in ("rsa2026", "ed2026"):
        key = adapter.load_private_key(Path(signing["dir"], f"example.org.{sel}.pem").read_bytes())
        out[f"{sel}._domainkey.example.org"] = adapter.key_record(key)
    return out


def signed_output(signing: dict[str, Any], dns_server: TestDnsServer,
                  raw: bytes = MESSAGE, envelope: Envelope = AUTH) -> bytes:
    done = run(str(signing["toml"]), raw, make_services(dns_server, lambda: NOW), envelope)
    return done.message.raw


def verify_results(raw: bytes, dns_server: TestDnsServer) -> list[str]:
    done = run(VERIFY_TOML, raw, make_services(dns_server))
    return [r["result"] for r in done.outcome.runs[0].result.facts["dkim.results"]]


def test_contract_config_signs_with_both_keys(signing: dict[str, Any],
                                              dns_server: TestDnsServer) -> None:
    out = signed_output(signing, dns_server)
    msg = Message(out)
    sigs = msg.get_all("DKIM-Signature")
    assert len(sigs) == 2 and msg.headers[0].name == "DKIM-Signature"
    values = [s.value for s in sigs]
    assert "a=rsa-sha256" in values[0] and "s=rsa2026" in values[0]
    assert "a=ed25519-sha256" in values[1] and "s=ed2026" in values[1]
    for v in values:
        assert "c=relaxed/relaxed" in v and f"t={int(NOW)}" in v and "d=example.org" in v
        h = "".join(v.split("h=")[1].split(";")[0].split()).split(":")
        for name in ("from", "to", "subject", "date", "message-id"):
            assert h.count(name) == 2, (name, h)  # present once, oversigned once
    assert all(len(line) <= 78 for line in out.split(b"\r\n"))
    assert verify_results(out, dns_server) == ["pass", "pass"]
    assert dkimpy_verify(out, records(signing)) == [True, True]


def test_opendkim_verifies_our_signatures(signing: dict[str, Any], dns_server: TestDnsServer,
                                          tmp_path: Path) -> None:
    out = signed_output(signing, dns_server)
    recs = records(signing)
    both = opendkim_testmsg(out, recs, tmp_path)
    assert both.returncode == 0, both.stderr
    # each signature alone (opendkim-testmsg reports only a failing message)
    msg = Message(out)
    for i in range(2):
        keep = b"".join(h.raw for j, h in enumerate(msg.headers) if j != i)
        one = opendkim_testmsg(keep + b"\r\n" + msg.body, recs, tmp_path)
        assert one.returncode == 0, one.stderr
    tampered = out.replace(b"Shall we?", b"Shall we not?")
    bad = opendkim_testmsg(tampered, recs, tmp_path)
    assert bad.returncode != 0


@pytest.mark.parametrize(("algorithm", "selector"), [("rsa-sha256", "rsa2026"),
                                                     ("ed25519-sha256", "ed2026")])
def test_opendkim_signed_mail_verifies_in_rohrpost(signing: dict[str, Any],
                                                   dns_server: TestDnsServer, tmp_path: Path,
                                                   algorithm: str, selector: str) -> None:
    key = signing["rsa"] if selector == "rsa2026" else signing["ed"]
    signed = opendkim_sign(MESSAGE, tmp_path, domain="example.org", selector=selector,
                           key=Path(str(key)), algorithm=algorithm)
    assert f"a={algorithm}".encode() in signed
    assert verify_results(signed, dns_server) == ["pass"]


def test_opendkim_testmsg_rsa_sha1_is_refused_by_default(signing: dict[str, Any],
                                                         dns_server: TestDnsServer,
                                                         tmp_path: Path) -> None:
    """opendkim-testmsg signs with rsa-sha1 only: RFC 8301 permerror, pass with allow_sha1."""
    done = opendkim_testmsg(MESSAGE, {}, tmp_path,
                            ("-C", "-d", "example.org", "-s", "rsa2026", "-k", str(signing["rsa"])))
    assert done.returncode == 0, done.stderr
    assert b"a=rsa-sha1" in done.stdout
    assert verify_results(done.stdout, dns_server) == ["permerror"]
    sha1 = VERIFY_TOML + "allow_sha1 = true\n"
    res = run(sha1, done.stdout, make_services(dns_server)).outcome.runs[0].result
    assert [r["result"] for r in res.facts["dkim.results"]] == ["pass"]


def test_pipe_subprocess_auth_user(signing: dict[str, Any], dns_server: TestDnsServer,
                                   tmp_path: Path) -> None:
    conf = tmp_path / "pipeline.toml"
    conf.write_text(str(signing["toml"]))
    env = {**os.environ, "ROHRPOST_NO_VENV": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(ROOT / "bin" / "rohrpost"), "run", "-c", str(conf),
           "--auth-user", "bob", "--sender", "bob@example.org", "--recipient", "a@example.net"]
    done = subprocess.run(cmd, input=MESSAGE, capture_output=True, env=env, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(b"DKIM-Signature:") == 2
    assert verify_results(done.stdout, dns_server) == ["pass", "pass"]
    assert dkimpy_verify(done.stdout, records(signing)) == [True, True]
    unauth = subprocess.run([*cmd[:-6], "--sender", "bob@example.org"], input=MESSAGE,
                            capture_output=True, env=env, timeout=60, check=False)
    assert unauth.returncode == 0 and b"DKIM-Signature" not in unauth.stdout


@pytest.mark.parametrize(("envelope", "signed"), [
    (Envelope(auth_user="bob"), True),
    (Envelope(client_ip="127.0.0.1"), True),       # trusted network
    (Envelope(client_ip="192.0.2.7"), False),      # neither authenticated nor trusted
    (Envelope(), False),
])
def test_signs_only_authenticated_or_trusted(signing: dict[str, Any], dns_server: TestDnsServer,
                                             envelope: Envelope, signed: bool) -> None:
    out = signed_output(signing, dns_server, envelope=envelope)
    assert (b"DKIM-Signature" in out) is signed


def test_key_table_senders_users_and_fallback(tmp_path: Path, rsa_pem: bytes,
                                              dns_server: TestDnsServer) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(rsa_pem)
    key.chmod(0o600)
    toml = f'''
[[filter]]
use = "dkim-sign"
[[filter.key]]
domain = "example.org"
selector = "a"
key = "{key}"
senders = ["bob@sub.example.org"]
users = ["bob"]
[[filter.key]]
domain = "other.example"
selector = "b"
key = "{key}"
'''
    services = make_services(dns_server, lambda: NOW)

    def selectors(raw: bytes, env: Envelope) -> list[str]:
        out = Message(run(toml, raw, services, env).message.raw)
        return [v.value.split("s=")[1].split(";")[0] for v in out.get_all("DKIM-Signature")]

    sub = MESSAGE.replace(b"bob@example.org", b"bob@sub.example.org")
    assert selectors(sub, Envelope(auth_user="bob")) == ["a"]
    assert selectors(sub, Envelope(auth_user="eve")) == []            # users list
    assert selectors(MESSAGE, Envelope(auth_user="bob")) == []        # senders pattern
    fallback = Envelope(auth_user="bob", mail_from="x@mail.other.example")
    assert selectors(MESSAGE, fallback) == ["b"]                      # envelope sender fallback


def test_key_errors_are_option_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(b"not a key")
    bad.chmod(0o600)
    for path, words in ((tmp_path / "missing.pem", "cannot read"), (bad, "neither PEM")):
        toml = KEY_TOML.format(path=path)
        with pytest.raises(ConfigError, match=words):
            Pipeline.build(parse_config(toml, "t.toml"))


def test_group_readable_key_warns(tmp_path: Path, ed_pem: bytes,
                                  caplog: pytest.LogCaptureFixture) -> None:
    key = tmp_path / "k.pem"
    key.write_bytes(ed_pem)
    key.chmod(0o640)
    toml = KEY_TOML.format(path=key)
    Pipeline.build(parse_config(toml, "t.toml"))
    assert "readable by group or others" in caplog.text


def test_expire_sets_x(signing: dict[str, Any], dns_server: TestDnsServer) -> None:
    toml = str(signing["toml"]).replace('trusted_networks = ["127.0.0.0/8"]',
                                        'trusted_networks = ["127.0.0.0/8"]\nexpire = 3600')
    out = Message(run(toml, MESSAGE, make_services(dns_server, lambda: NOW), AUTH).message.raw)
    assert f"x={int(NOW) + 3600}" in out.get("DKIM-Signature")


def test_signature_covers_earlier_filters_changes(signing: dict[str, Any],
                                                  dns_server: TestDnsServer) -> None:
    """A header added by an earlier filter is in the signed message (h= sees it)."""
    toml = str(signing["toml"]).replace(
        "[[filter]]\nuse = \"dkim-sign\"",
        "[[filter]]\nuse = \"dkim-verify\"\n[[filter]]\nuse = \"dkim-sign\"", 1)
    out = signed_output({**signing, "toml": toml}, dns_server)
    assert verify_results(out, dns_server) == ["pass", "pass"]


_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters=":"),
                min_size=0, max_size=60)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=_text, body=st.lists(_text, max_size=6), crlf=st.booleans(),
       extra=st.lists(st.tuples(st.sampled_from(["X-Tag", "Cc", "Reply-To", "Keywords"]), _text),
                      max_size=3))
def test_property_sign_then_verify(signing: dict[str, Any], dns_server: TestDnsServer,
                                   subject: str, body: list[str], crlf: bool,
                                   extra: list[tuple[str, str]]) -> None:
    eol = "\r\n" if crlf else "\n"
    head = ["From: bob@example.org", f"Subject: {subject}", "To: a@example.net"]
    head += [f"{n}: {v}" for n, v in extra]
    raw = (eol.join(head) + eol + eol + eol.join(body) + eol).encode()
    out = signed_output(signing, dns_server, raw=raw)
    assert verify_results(out, dns_server) == ["pass", "pass"]


@pytest.mark.parametrize(("use", "table", "fragment"), [
    ("dkim-sign", '[[filter.key]]\ndomain = "example.org"\nselector = "a b/../x"\n',
     "selector"),
    ("dkim-sign", '[[filter.key]]\ndomain = "exa;mple.org"\nselector = "s"\n', "domain"),
    ("arc-seal", 'domain = ""\nselector = "s"\n', "domain"),
    ("arc-seal", 'domain = "example.org"\nselector = "s=1"\n', "selector"),
])
def test_key_names_must_be_dns_names(tmp_path: Path, rsa_pem: bytes, use: str, table: str,
                                     fragment: str) -> None:
    """A selector or domain that is no DNS name would give signatures nobody can verify (and
    arc-seal with an empty domain crashed 'config check' with a ValueError traceback)."""
    key = write_key(tmp_path, "k.pem", rsa_pem)
    toml = f'[[filter]]\nuse = "{use}"\n{table}key = "{key}"\n'
    with pytest.raises(ConfigError, match=fragment) as info:
        Pipeline.build(parse_config(toml, "t.toml"))
    assert info.value.line > 0  # located in the file


def test_key_file_errors_name_the_filter_and_line(tmp_path: Path) -> None:
    toml = ('[[filter]]\nuse = "dkim-verify"\n[[filter]]\nuse = "dkim-sign"\n'
            '[[filter.key]]\ndomain = "example.org"\nselector = "s"\n'
            f'key = "{tmp_path}/missing.pem"\n')
    with pytest.raises(ConfigError) as info:
        Pipeline.build(parse_config(toml, "t.toml"))
    assert info.value.key == "filter[1].key[0].key"
    assert info.value.line == 8
