"""The OpenSSL signing path (``_dkim_fast``) gives dkimpy's bytes, and its output verifies.

Three references, over random messages (CRLF and LF, folded and long header fields, long
lines, trailing white space, 8-bit bytes, repeated and absent fields in h=):
* ``sign_dkim(reference=True)``: our tag layout with dkimpy's pure-Python RSA; the whole
  DKIM-Signature value must be equal byte for byte;
* dkimpy's own ``DKIM.sign`` (its tag layout, its clock, any canonicalization): the fast path
  recomputes b= over dkimpy's header value and must get dkimpy's b=;
* dkimpy's and OpenDKIM's verifiers accept what the fast path signs.
Plus the key checks of ``_dkim_fast.rsa_key``.
"""

from __future__ import annotations

import base64
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dkim
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rohrpost.filters import _dkim_adapter as adapter
from rohrpost.filters import _dkim_fast as fast

from rohrpost.cli.dkimcmd import _rsa_pem
from tests.dkim.dkimhelp import DKIMPY, NOW, opendkim_testmsg, read_linked

# keys: the session's 2048-bit one (conftest), a 3072-bit one, dkimpy's 1024/2048-bit PKCS#1
# and PKCS#8 test keys, and Ed25519 (PKCS#8 and dkimpy's bare seed)
KEY_FILES = ["1024_testkey.key", "2048_testkey.key", "2048_testkey_PKCS8.key", "test.private",
             "test2.private", "ed25519test.key", "rfc8032_7_1.key"]
_KEYS: dict[str, adapter.PrivateKey] = {}


def key(name: str, rsa_pem: bytes) -> adapter.PrivateKey:
    if name not in _KEYS:
        if name == "session-2048":
            data = rsa_pem
        elif name == "generated-3072":
            data = _rsa_pem(3072)
        else:
            data = (DKIMPY / name).read_bytes()
        _KEYS[name] = adapter.load_private_key(data)
    return _KEYS[name]


KEY_NAMES = ["session-2048", "generated-3072", *KEY_FILES]
SHOULD_NOT = {n.decode() for n in dkim.DKIM.SHOULD_NOT}
NAMES = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "MIME-Version",
         "Content-Type", "X-Mailer", "Received", "List-Id", "references", "SUBJECT"]

_chars = st.characters(min_codepoint=32, max_codepoint=0x4FF, blacklist_characters="\x7f")
_ws = st.sampled_from([" ", "  ", "\t", " \t "])
_value = st.lists(st.text(_chars, max_size=40), min_size=1, max_size=4)
_line = st.one_of(st.text(_chars | st.sampled_from([" ", "\t"]), max_size=80),
                  st.text(st.sampled_from("ab \t."), min_size=900, max_size=1200),  # long line
                  st.just(""))


@st.composite
def messages(draw: st.DrawFn) -> tuple[bytes, str]:
    """A message and its line end: one From, random fields (some folded), a random body."""
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    fields = [("From", draw(_value))]
    fields += draw(st.lists(st.tuples(st.sampled_from(NAMES[1:]), _value), max_size=8))
    fields = draw(st.permutations(fields))
    lines = []
    for name, parts in fields:
        sep = draw(st.sampled_from([":", ": ", ":\t", ":  "]))
        folded = (eol + draw(_ws)).join(p for p in parts)
        lines.append(f"{name}{sep}{folded}")
    body = draw(st.lists(_line, max_size=12))
    end = draw(st.sampled_from([eol, "", eol * 3]))
    text = eol.join(lines) + eol + eol + eol.join(body) + (end if body else "")
    encoding = draw(st.sampled_from(["utf-8", "latin-1"]))
    return text.encode(encoding, "replace"), eol


@st.composite
def header_lists(draw: st.DrawFn, raw: bytes) -> list[str]:
    """h=: from, present fields, absent ones, some oversigned; never dkimpy's SHOULD_NOT."""
    headers, _body = adapter.parse_message(raw)
    present = sorted({h[0].decode("latin-1").lower() for h in headers} - SHOULD_NOT)
    pool = [*present, "cc", "in-reply-to", "x-absent"]
    names = draw(st.lists(st.sampled_from(pool), max_size=10))
    return draw(st.permutations(["from", *names]))


def records_for(k: adapter.PrivateKey) -> dict[str, str]:
    return {"sel._domainkey.example.org": adapter.key_record(k)}


def dkimpy_verifies(signed: bytes, k: adapter.PrivateKey) -> bool:
    recs = records_for(k)

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = recs.get(name.decode().rstrip("."))
        return value.encode() if value else None

    return bool(dkim.verify(signed, dnsfunc=dnsfunc))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(KEY_NAMES), expire=st.booleans())
def test_fast_value_equals_reference_and_verifies(rsa_pem: bytes, data: st.DataObject,
                                                  name: str, expire: bool) -> None:
    k = key(name, rsa_pem)
    raw, eol = data.draw(messages())
    include = data.draw(header_lists(raw))
    parsed = adapter.parse_message(raw)
    now = int(time.time())  # dkimpy's verify checks t= and x= against the wall clock
    kw = {"domain": "example.org", "selector": "sel", "key": k, "headers": include,
          "timestamp": now, "expire": now + 86400 if expire else None}
    value = adapter.sign_dkim(parsed, **kw)
    assert value == adapter.sign_dkim(parsed, reference=True, **kw)
    signed = f"DKIM-Signature: {value}{eol}".encode() + raw
    assert dkimpy_verifies(signed, k)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(KEY_NAMES),
       canon=st.sampled_from([(b"relaxed", b"relaxed"), (b"relaxed", b"simple"),
                              (b"simple", b"simple"), (b"simple", b"relaxed")]))
def test_fast_b_equals_dkimpy_sign(rsa_pem: bytes, data: st.DataObject, name: str,
                                   canon: tuple[bytes, bytes]) -> None:
    """dkimpy's DKIM.sign (its layout: i=, q=, folded h=, its own t=): same b= from us."""
    k = key(name, rsa_pem)
    raw, _eol = data.draw(messages())
    include = data.draw(header_lists(raw))
    if k.kind == "rsa":
        priv, algo = k.pem, b"rsa-sha256"
    else:
        priv, algo = base64.b64encode(bytes(k.key)), b"ed25519-sha256"
    line = dkim.DKIM(raw).sign(b"sel", b"example.org", priv, signature_algorithm=algo,
                               canonicalize=canon, include_headers=[h.encode() for h in include])
    value = line[len(b"DKIM-Signature:"):]
    want = re.sub(rb"\s+", b"", dkim.util.parse_tag_value(value)[b"b"]).decode()
    got = adapter.compute_b(adapter.parse_message(raw), k, canon=b"/".join(canon).decode(),
                            value=value, include=include)
    assert got == want


OPENDKIM_CASES = {
    "crlf": b"From: Bob <bob@example.org>\r\nTo: a@example.net\r\nSubject: hi\r\n\r\nbody\r\n",
    "lf": b"From: Bob <bob@example.org>\nTo: a@example.net\nSubject: hi\n\nbody  \t\n\n\n",
    "folded": (b"From: Bob\r\n <bob@example.org>\r\nSubject:  many   spaces\r\n\tand a fold\r\n"
               b"Cc: c@example.net\r\n\r\n \tleading white space\r\n"),
    "8bit": ("From: Jürgen <j@example.org>\r\nSubject: Grüße, ½ €\r\nContent-Type: text/plain;"
             " charset=utf-8\r\n\r\nÄrger über Öl\r\n").encode() + b"latin-1 \xe4\xf6\xfc\r\n",
    "long-lines": (b"From: b@example.org\r\nSubject: " + b"x" * 900 + b"\r\n\r\n"
                   + (b"y" * 1990 + b"\r\n") * 3),
    "empty-body": b"From: b@example.org\r\nSubject: nothing\r\n\r\n",
    # repeated field signed bottom-up and oversigned (two To would be refused by OpenDKIM
    # as RFC 5322-invalid before any DKIM check)
    "repeated": b"From: b@example.org\r\nX-Tag: one\r\nTo: x@example.net\r\nX-Tag: two\r\n\r\nhi\r\n",
}


@pytest.mark.parametrize("case", sorted(OPENDKIM_CASES))  # +Date: opendkim-testmsg needs one
@pytest.mark.parametrize("name", ["session-2048", "generated-3072", "test.private",
                                  "ed25519test.key"])
def test_opendkim_verifies_fast_signatures(rsa_pem: bytes, tmp_path: Path, case: str,
                                           name: str) -> None:
    k = key(name, rsa_pem)
    raw = OPENDKIM_CASES[case]
    eol = b"\n" if case == "lf" else b"\r\n"
    raw = b"Date: Mon, 2 Feb 2026 10:00:00 +0000" + eol + raw
    headers = ["from", "from", "to", "to", "subject", "subject", "cc", "content-type", "x-tag",
               "x-tag", "x-tag"]
    value = adapter.sign_dkim(adapter.parse_message(raw), domain="example.org", selector="sel",
                              key=k, headers=headers, timestamp=int(NOW))
    assert value == adapter.sign_dkim(adapter.parse_message(raw), domain="example.org",
                                      selector="sel", key=k, headers=headers,
                                      timestamp=int(NOW), reference=True)
    signed = b"DKIM-Signature: " + value.encode() + eol + raw
    assert dkimpy_verifies(signed, k)
    done = opendkim_testmsg(signed, records_for(k), tmp_path)
    assert done.returncode == 0, done.stderr
    bad = opendkim_testmsg(signed.replace(b"From: ", b"From: X"), records_for(k), tmp_path)
    assert bad.returncode != 0


@pytest.mark.parametrize(("source", "index"), [
    ("dkimpy:rfc6376.signed.msg", 0), ("dkimpy:rfc6376.signed.msg", 1),
    ("dkimpy:rfc6376.signed.rsa.msg", 0), ("chasquid:01-rfc8463.msg", 1)])
def test_published_vectors_fast_equals_reference(source: str, index: int) -> None:
    """RFC 6376/8463 vectors: fast and reference paths both give the published b=."""
    from tests.dkim.test_dkim_conformance import CHASQUID, KEYS, _reference

    folder, fname = source.split(":")
    raw = read_linked((CHASQUID if folder == "chasquid" else DKIMPY) / fname)
    value, tags = _reference(raw)[index]
    k = adapter.load_private_key((DKIMPY / KEYS[tags[b"s"].decode()]).read_bytes())
    unsigned = adapter.parse_message((DKIMPY / "rfc6376.msg").read_bytes())
    include = [h.decode() for h in re.split(rb"\s*:\s*", tags[b"h"])]
    want = re.sub(r"\s", "", tags[b"b"].decode())
    for reference in (False, True):
        assert adapter.compute_b(unsigned, k, canon=tags[b"c"].decode(), value=value,
                                 include=include, reference=reference) == want


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["1024_testkey.key", "2048_testkey.key",
                                  "2048_testkey_PKCS8.key", "test.private", "test2.private"])
def test_openssl_key_has_dkimpys_numbers(name: str) -> None:
    k = adapter.load_private_key((DKIMPY / name).read_bytes())
    assert k.openssl is not None
    numbers = k.openssl.private_numbers()
    assert (numbers.public_numbers.n, numbers.public_numbers.e, numbers.d, numbers.p,
            numbers.q) == (k.key["modulus"], k.key["publicExponent"], k.key["privateExponent"],
                           k.key["prime1"], k.key["prime2"])


def test_pkcs1_and_pkcs8_give_the_same_signature() -> None:
    """The same key as PKCS#1 (dkimpy's file) and as PKCS#8 (openssl pkcs8 -topk8)."""
    pkcs1 = (DKIMPY / "2048_testkey.key").read_bytes()
    pkcs8 = subprocess.run(["openssl", "pkcs8", "-topk8", "-nocrypt"], input=pkcs1,
                           capture_output=True, check=True).stdout
    assert b"BEGIN PRIVATE KEY" in pkcs8 and b"BEGIN RSA PRIVATE KEY" in pkcs1
    one, eight = adapter.load_private_key(pkcs1), adapter.load_private_key(pkcs8)
    parsed = adapter.parse_message(OPENDKIM_CASES["crlf"])
    kw = {"domain": "example.org", "selector": "s", "headers": ["from"], "timestamp": 1}
    assert one.public == eight.public
    assert adapter.sign_dkim(parsed, key=one, **kw) == adapter.sign_dkim(parsed, key=eight, **kw)


def test_ed25519_has_no_openssl_key() -> None:
    assert adapter.load_private_key((DKIMPY / "ed25519test.key").read_bytes()).openssl is None


@pytest.mark.parametrize(("field", "why"), [
    ("modulus", "not prime1 \\* prime2"), ("prime1", "not prime1 \\* prime2"),
    ("exponent1", "CRT"), ("exponent2", "CRT"), ("coefficient", "CRT"),
    ("privateExponent", "CRT")])
def test_inconsistent_rsa_numbers_are_refused(field: str, why: str) -> None:
    """A key file whose numbers disagree would make dkimpy's CRT emit bad signatures."""
    numbers = dict(dkim.crypto.parse_pem_private_key((DKIMPY / "test.private").read_bytes()))
    numbers[field] += 2
    with pytest.raises(adapter.DkimKeyError, match=why):
        fast.rsa_key(numbers)


def test_wrong_private_exponent_with_matching_crt_is_refused() -> None:
    """d, dp, dq consistent with each other but not with e: the e*d check catches it."""
    n = dkim.crypto.parse_pem_private_key((DKIMPY / "test.private").read_bytes())
    p, q = n["prime1"], n["prime2"]
    lam = (p - 1) * (q - 1)
    d = pow(65539, -1, lam)  # the inverse of another exponent
    numbers = {**n, "privateExponent": d, "exponent1": d % (p - 1), "exponent2": d % (q - 1)}
    with pytest.raises(adapter.DkimKeyError, match="private exponent"):
        fast.rsa_key(numbers)


def test_one_key_object_signs_from_many_threads(rsa_pem: bytes) -> None:
    """The milter signs in worker threads (ctx.run_blocking) with one shared OpenSSL key."""
    k = key("session-2048", rsa_pem)
    raws = [OPENDKIM_CASES[c] for c in sorted(OPENDKIM_CASES)] * 6

    def sign(raw: bytes, reference: bool = False) -> str:
        return adapter.sign_dkim(adapter.parse_message(raw), domain="example.org",
                                 selector="sel", key=k, headers=["from", "subject"],
                                 timestamp=int(NOW), reference=reference)

    want = [sign(raw, reference=True) for raw in raws]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(sign, raws)) == want


def test_key_table_keeps_the_openssl_key(tmp_path: Path, rsa_pem: bytes) -> None:
    """Keys are parsed once when the filter is built; signing uses that OpenSSL object."""
    from rohrpost.filters._dkim_keys import KeySpec
    from rohrpost.filters.dkim_sign import DkimSign, DkimSignOptions

    path = tmp_path / "k.pem"
    path.write_bytes(rsa_pem)
    path.chmod(0o600)
    flt = DkimSign(DkimSignOptions(key=[KeySpec("example.org", "s", str(path))]))
    assert flt.keys[0].key.openssl is not None
    assert flt.keys[0].key.openssl is flt.keys[0].key.openssl  # not rebuilt per access
