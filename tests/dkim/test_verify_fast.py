"""The fast DKIM/ARC verification (finding 20) gives dkimpy's answers, exactly.

Three layers, each against dkimpy's own code:

* ``rsa_verify`` (OpenSSL where it computes what dkimpy computes) against
  ``dkim.crypto.RSASSA_PKCS1_v1_5_verify``: valid, tampered, wrong-key, short-key and malformed
  signatures, odd exponents, signatures of any length and above the modulus;
* ``verify_dkim``/``arc_verify`` against the same functions with ``reference=True`` (dkimpy's
  unmodified ``DKIM``/``ARC`` classes and arithmetic) on every message of the DKIM test data,
  the whole ARC validation suite, and generated mutations of signed and sealed messages under
  every canonicalization, ``l=``, rsa-sha1, Ed25519 and every kind of key-lookup outcome;
* the record caches and the rule that decides when ``cryptography`` is imported.
"""

from __future__ import annotations

import hashlib
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import dkim
import dkim.crypto
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rohrpost.filters import _dkim_adapter as adapter
from rohrpost.filters import _dkim_fast as fast
from rohrpost.filters import _dkim_verifier as verifier

from rohrpost.dns import DnsPermError, DnsTempError
from tests.dkim.dkimhelp import ARC, CHASQUID, DKIMPY, MESSAGE, read_linked
from tests.support.dnsserver import TestDnsServer

# -- RSA keys of any shape, made here (OpenSSL and cryptography refuse the odd ones) -----------


def _is_prime(n: int, rnd: random.Random) -> bool:
    if n < 4:
        return n in (2, 3)
    if n % 2 == 0:
        return False
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(24):
        x = pow(rnd.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, rnd: random.Random, e: int) -> int:
    while True:
        p = rnd.getrandbits(bits) | (3 << (bits - 2)) | 1
        if (e % 2 == 0 or (p - 1) % e != 0) and _is_prime(p, rnd):
            return p


def rsa_numbers(bits: int, e: int = 65537, seed: int = 1) -> dict[str, int]:
    """A key with an exactly ``bits``-bit modulus, as dkimpy's ``parse_private_key`` gives it."""
    rnd = random.Random(f"{bits}-{e}-{seed}")
    while True:
        p, q = _prime(bits - bits // 2, rnd, e), _prime(bits // 2, rnd, e)
        n, phi = p * q, (p - 1) * (q - 1)
        if p != q and n.bit_length() == bits:
            break
    d = pow(e, -1, phi) if e % 2 == 1 and phi % e != 0 else 1
    return {"modulus": n, "publicExponent": e, "privateExponent": d, "prime1": p, "prime2": q,
            "exponent1": d % (p - 1), "exponent2": d % (q - 1), "coefficient": pow(q, -1, p)}


def _sha256(data: bytes) -> Any:
    return hashlib.sha256(data)


def _both(h: Any, sig: bytes, pk: dict[str, int]) -> tuple[object, object]:
    """(OpenSSL path, dkimpy) answers, a ``DigestTooLargeError`` as its name."""
    def answer(fn: Callable[[], bool]) -> object:
        try:
            return fn()
        except dkim.crypto.DigestTooLargeError:
            return "DigestTooLargeError"

    return (answer(lambda: verifier.rsa_verify(h, sig, pk, openssl=True)),
            answer(lambda: dkim.crypto.RSASSA_PKCS1_v1_5_verify(h, sig, pk)))


KEYS = {bits: rsa_numbers(bits) for bits in (488, 495, 496, 504, 512, 1024, 2048)}


def _variants(sig: bytes, n: int) -> list[bytes]:
    """The valid signature and what a hostile b= can make of it."""
    value = int.from_bytes(sig, "big")
    size = len(sig)
    flipped = bytearray(sig)
    flipped[len(flipped) // 2] ^= 0x01
    return [sig, bytes(flipped), b"", b"\x00", b"\x00" + sig, sig.lstrip(b"\x00") or b"\x00",
            sig[1:], sig + b"\x00", (value + n).to_bytes(size + 1, "big"),
            (value + 7 * n).to_bytes(size + 2, "big"), n.to_bytes(size, "big"),
            (n - 1).to_bytes(size, "big"), b"\xff" * (size + 1), b"\x01" * size]


@pytest.mark.parametrize("bits", sorted(KEYS))
def test_rsa_verify_agrees_with_dkimpy(bits: int) -> None:
    pk = KEYS[bits]
    other = rsa_numbers(bits, seed=2)
    h = _sha256(b"the header hash")
    try:
        sig = bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(h, pk))
    except dkim.crypto.DigestTooLargeError:  # below 62 bytes: nothing to sign
        sig = b"\x01" * ((bits + 7) // 8)
    for candidate in _variants(sig, pk["modulus"]):
        for key in (pk, other):  # the right key and a wrong one
            for digest in (h, _sha256(b"another header hash")):
                fast_answer, dkimpy_answer = _both(digest, candidate, key)
                assert fast_answer == dkimpy_answer, (bits, candidate.hex(), key is pk)
    if (bits + 7) // 8 >= 62:  # the shortest modulus dkimpy pads a SHA-256 DigestInfo for
        assert _both(h, sig, pk) == (True, True)
        assert fast.verify_sha256(pk["modulus"], pk["publicExponent"], sig, h.digest()) is True
    else:
        assert _both(h, sig, pk) == ("DigestTooLargeError", "DigestTooLargeError")


@pytest.mark.parametrize("e", [3, 17, 65537, 2**61 - 1])
def test_rsa_verify_other_public_exponents(e: int) -> None:
    pk = rsa_numbers(1024, e=e)
    h = _sha256(b"x")
    sig = bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(h, pk))
    assert fast.verifies_like_dkimpy(pk["modulus"], e)
    for candidate in _variants(sig, pk["modulus"]):
        fast_answer, dkimpy_answer = _both(h, candidate, pk)
        assert fast_answer == dkimpy_answer
    assert _both(h, sig, pk) == (True, True)


@pytest.mark.parametrize(("e", "even_n"), [(1, False), (2, False), (65538, False),
                                           (65537, True)])
def test_rsa_verify_keys_openssl_refuses(e: int, even_n: bool) -> None:
    """e below 3 or even, an even modulus: dkimpy's arithmetic answers, as before."""
    pk = dict(rsa_numbers(1024))
    pk["publicExponent"] = e
    if even_n:
        pk["modulus"] += 1
    assert not fast.verifies_like_dkimpy(pk["modulus"], e)
    h = _sha256(b"x")
    for candidate in (b"\x00\x01" + b"\xff" * 100, b"\x05" * 128, b""):
        assert _both(h, candidate, pk)[0] == _both(h, candidate, pk)[1]


def test_rsa_verify_large_exponent_on_large_modulus() -> None:
    """OpenSSL refuses e above 64 bits for n above 3072 bits; dkimpy verifies such a key.

    ``verifies_like_dkimpy`` keeps those keys on dkimpy's arithmetic: the answer stays True.
    """
    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.generate_private_key(65537, 3104).private_numbers()
    p, q = numbers.p, numbers.q
    e = 2**89 - 1  # a Mersenne prime: coprime to phi unless it divides p-1 or q-1
    d = pow(e, -1, (p - 1) * (q - 1))
    pk = {"modulus": p * q, "publicExponent": e, "privateExponent": d, "prime1": p,
          "prime2": q, "exponent1": d % (p - 1), "exponent2": d % (q - 1),
          "coefficient": pow(q, -1, p)}
    h = _sha256(b"x")
    sig = bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(h, pk))
    assert not fast.verifies_like_dkimpy(pk["modulus"], e)
    assert fast.verify_sha256(pk["modulus"], e, sig, h.digest()) is False  # why the rule exists
    assert _both(h, sig, pk) == (True, True)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(KEYS)), st.binary(max_size=300), st.binary(max_size=40))
def test_rsa_verify_random_signatures(bits: int, sig: bytes, data: bytes) -> None:
    fast_answer, dkimpy_answer = _both(_sha256(data), sig, KEYS[bits])
    assert fast_answer == dkimpy_answer


def test_rsa_verify_sha1_keeps_dkimpy() -> None:
    pk = KEYS[1024]
    h = hashlib.sha1(b"x")  # rsa-sha1 signatures exist (allow_sha1)
    sig = bytes(dkim.crypto.RSASSA_PKCS1_v1_5_sign(h, pk))
    assert _both(h, sig, pk) == (True, True)


def test_cryptography_is_imported_after_the_pure_verifications(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ski-rental rule: dkimpy's arithmetic for the first verifications of a process."""
    monkeypatch.delitem(sys.modules, verifier._CRYPTOGRAPHY, raising=False)
    monkeypatch.setattr(verifier, "_pure_left", [2])
    assert [verifier._openssl_now() for _ in range(4)] == [False, False, True, True]
    monkeypatch.setitem(sys.modules, verifier._CRYPTOGRAPHY, sys)  # already imported elsewhere
    monkeypatch.setattr(verifier, "_pure_left", [5])
    assert verifier._openssl_now() is True


# -- verify_dkim: fast against dkimpy's classes ------------------------------------------------

RECORDS_DKIMPY = {
    "brisbane._domainkey.football.example.com":
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    "test._domainkey.football.example.com": (DKIMPY / "test.txt").read_text().strip(),
    "test._domainkey.example.com": (DKIMPY / "ed25519test.dns").read_text().strip(),
}
CORPUS = sorted([*CHASQUID.glob("*.msg"), *(p for p in DKIMPY.iterdir() if p.suffix in (
    ".msg", ".message") or p.name.startswith("test.message"))])
POLICIES = [verifier.VerifyPolicy(now=time.time()),
            verifier.VerifyPolicy(now=1_528_637_909, min_rsa_bits=2048, allow_sha1=True),
            verifier.VerifyPolicy(now=2_000_000_000, clock_skew=0)]


def _outcome(fn: Callable[[], Any]) -> Any:
    """The result, or the exception's type and text (both paths must raise alike too)."""
    try:
        return fn()
    except Exception as exc:  # compared, not handled
        return type(exc).__name__, str(exc)


def _same(raw: bytes, lookup: Callable[[str], Any], policy: verifier.VerifyPolicy,
          max_signatures: int = 5) -> list[verifier.SignatureResult]:
    """verify_dkim's results; equal to dkimpy's (both paths, results or exceptions)."""
    got = _outcome(lambda: verifier.verify_dkim(raw, lookup, policy, max_signatures))
    want = _outcome(lambda: verifier.verify_dkim(raw, lookup, policy, max_signatures,
                                                 reference=True))
    assert got == want
    return got[0] if isinstance(got[0], list) else []


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: f"{p.parent.name[:7]}/{p.name}")
def test_verify_dkim_corpus_equals_dkimpy(path: Any, dns_server: TestDnsServer) -> None:
    dns = path.with_suffix(".dns")
    if path.parent == CHASQUID and dns.exists():
        dns_server.load_bind_file(dns)
    else:
        for name, value in RECORDS_DKIMPY.items():
            dns_server.add(name, "TXT", value)
    from rohrpost.dns import DnsConfig, Resolver

    resolver = Resolver(DnsConfig(servers=(dns_server.address,), timeout=1.0))

    def lookup(name: str) -> tuple[str, ...]:
        return resolver.query_sync(name, "TXT").records

    raw = read_linked(path)
    for policy in POLICIES:
        for max_signatures in (1, 5):
            _same(raw, lookup, policy, max_signatures)
            _same(raw.replace(b"\r\n", b"\n"), lookup, policy, max_signatures)


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    from rohrpost.cli.dkimcmd import _rsa_pem

    rsa_pem, small_pem = _rsa_pem(1024), _rsa_pem(512)
    ed = adapter.load_private_key(adapter.generate_ed25519())
    return {"rsa": rsa_pem, "small": small_pem, "ed": ed,
            "rsa_record": adapter.key_record(adapter.load_private_key(rsa_pem)),
            "small_record": adapter.key_record(adapter.load_private_key(small_pem)),
            "ed_record": adapter.key_record(ed)}


SIGNINGS = [(b"relaxed", b"relaxed", False, b"rsa-sha256"), (b"simple", b"simple", False,
            b"rsa-sha256"), (b"relaxed", b"simple", True, b"rsa-sha256"),
            (b"simple", b"relaxed", True, b"rsa-sha1"), (b"relaxed", b"relaxed", False,
            b"ed25519-sha256")]
BODY = (b"Hello  there,\t\r\n\r\nwith trailing space \r\nand\ttabs\t \r\n"
        b"-- \r\nBob\r\n\r\n\r\n")
MUTATIONS = [b" ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n ", b"x", b"From: Eve <eve@evil.example>\r\n",
             b"  ", b";", b"=", b"b=", b"AAAA", b"", b"\x00", b"\xe9", b"h=from", b"l=1",
             b"c=simple", b"a=rsa-sha1", b"t=99999999999", b"x=1", b"d=other.example", b"s=x"]


def _signed(keys: dict[str, Any], how: tuple[bytes, bytes, bool, bytes]) -> bytes:
    header, body, length, algorithm = how
    raw = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n" + BODY
    if algorithm == b"ed25519-sha256":
        seed = bytes(keys["ed"].key)
        import base64

        key = base64.b64encode(seed)
        selector = b"ed"
    else:
        key, selector = keys["rsa"], b"rsa"
    sig = dkim.sign(raw, selector, b"example.org", key, canonicalize=(header, body),
                    include_headers=[b"from", b"to", b"subject", b"from"], length=length,
                    signature_algorithm=algorithm)
    small = dkim.sign(raw, b"small", b"example.org", keys["small"], canonicalize=(header, body),
                      include_headers=[b"from", b"subject"]) if algorithm != b"rsa-sha1" else b""
    return sig + small + raw


LOOKUPS = ["ok", "temp", "perm", "none", "bad", "revoked", "wrong-k", "two-records"]


def _lookup(keys: dict[str, Any], kind: str) -> Callable[[str], list[str]]:
    records = {"rsa._domainkey.example.org": keys["rsa_record"],
               "small._domainkey.example.org": keys["small_record"],
               "ed._domainkey.example.org": keys["ed_record"]}

    def lookup(name: str) -> list[str]:
        if kind == "temp":
            raise DnsTempError(f"DNS timeout for TXT {name}")
        if kind == "perm":
            raise DnsPermError(f"malformed domain name {name!r}")
        if kind == "none" or name not in records:
            return []
        if kind == "bad":
            return ["v=DKIM1; k=rsa; p=not!base64"]
        if kind == "revoked":
            return ["v=DKIM1; k=rsa; p="]
        if kind == "wrong-k":
            record = records[name]
            return [record.replace("k=rsa", "k=ed25519") if "k=rsa" in record
                    else record.replace("k=ed25519", "k=rsa")]
        if kind == "two-records":
            return ["garbage", keys["ed_record"], records[name]]
        return [records[name]]

    return lookup


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(how=st.sampled_from(SIGNINGS), kind=st.sampled_from(LOOKUPS),
       edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from(MUTATIONS),
                                st.integers(0, 3)), max_size=3))
def test_verify_dkim_mutations_equal_dkimpy(keys: dict[str, Any],
                                            how: tuple[bytes, bytes, bool, bytes], kind: str,
                                            edits: list[tuple[float, bytes, int]]) -> None:
    raw = _signed(keys, how)
    for where, piece, drop in edits:
        at = int(where * len(raw))
        raw = raw[:at] + piece + raw[at + drop:]
    results = _same(raw, _lookup(keys, kind), verifier.VerifyPolicy(now=time.time(),
                                                                     allow_sha1=True))
    if not edits and kind == "ok":
        assert results[0].result == "pass"
        assert [r.result for r in results[1:]] in ([], ["policy"])  # the 512-bit key


# -- arc_verify ---------------------------------------------------------------------------------


def _arc_cases() -> list[tuple[str, bytes, dict[str, str]]]:
    out = []
    for scenario in yaml.safe_load_all((ARC / "arc-draft-validation-tests.yml").read_text()):
        records = {k: " ".join(str(v).split()) for k, v in scenario["txt-records"].items()}
        for test, case in scenario["tests"].items():
            raw = case["message"].replace("\r\n", "\n").replace("\n", "\r\n").encode()
            out.append((test, raw, records))
    return out


ARC_CASES = _arc_cases()


def _same_arc(raw: bytes, lookup: Callable[[str], Any]) -> verifier.ArcResult:
    got = verifier.arc_verify(raw, lookup)
    assert got == verifier.arc_verify(raw, lookup, reference=True)
    return got


@pytest.mark.parametrize(("test", "raw", "records"), ARC_CASES, ids=[c[0] for c in ARC_CASES])
def test_arc_suite_equals_dkimpy(test: str, raw: bytes, records: dict[str, str]) -> None:
    del test
    _same_arc(raw, lambda n: [records[n]] if n in records else [])
    _same_arc(raw, lambda n: [])

    def temp(name: str) -> list[str]:
        raise DnsTempError(f"DNS timeout for TXT {name}")

    _same_arc(raw, temp)


SEALED = [c for c in ARC_CASES if c[0].startswith(("cv_pass", "cv_base"))]


@settings(max_examples=200, deadline=None)
@given(case=st.sampled_from(SEALED),
       edits=st.lists(st.tuples(st.floats(0, 1), st.sampled_from(MUTATIONS),
                                st.integers(0, 3)), min_size=1, max_size=3))
def test_arc_mutations_equal_dkimpy(case: tuple[str, bytes, dict[str, str]],
                                    edits: list[tuple[float, bytes, int]]) -> None:
    _test, raw, records = case
    for where, piece, drop in edits:
        at = int(where * len(raw))
        raw = raw[:at] + piece + raw[at + drop:]
    _same_arc(raw, lambda n: [records[n]] if n in records else [])


def test_message_without_arc_is_none_and_unparseable_is_fail() -> None:
    assert _same_arc(MESSAGE, lambda n: []).cv == "none"
    assert _same_arc(b" continuation first\r\n" + MESSAGE, lambda n: []).cv == "fail"
    assert _same_arc(b"Bad header line\r\n" + MESSAGE, lambda n: []).cv == "fail"


# -- the record caches ---------------------------------------------------------------------


def test_evaluate_pk_is_kept_and_failures_are_not(keys: dict[str, Any]) -> None:
    record = keys["rsa_record"].encode()
    first = verifier.evaluate_pk(b"rsa._domainkey.example.org.", record)
    assert first == dkim.evaluate_pk(b"rsa._domainkey.example.org.", record)
    assert verifier.evaluate_pk(b"other.", record) is first
    for name in (b"a.", b"b."):
        with pytest.raises(dkim.KeyFormatError, match=f"missing public key: {name!r}"):
            verifier.evaluate_pk(name, b"")
        with pytest.raises(dkim.KeyFormatError):
            verifier.evaluate_pk(name, b"v=DKIM1; k=rsa; p=AAAA")


def test_record_tags_kept_per_text() -> None:
    assert verifier._record_tags("v=DKIM1; k=rsa; p=AB") == {b"v": b"DKIM1", b"k": b"rsa",
                                                             b"p": b"AB"}
    assert verifier._record_tags("not a tag list") is None
    with pytest.raises(UnicodeEncodeError):
        verifier._record_tags("v=DKIM1; p=\u20ac")


def test_last_message_split_is_shared_not_aliased() -> None:
    """dkim-verify and arc-verify get the same bytes object: the second reuses the split."""
    raw = b"".join([MESSAGE])
    headers, body, bodies = verifier._parsed(raw)
    again, body2, bodies2 = verifier._parsed(raw)
    assert again == headers and again is not headers and again[0] is not headers[0]
    assert body2 is body and bodies2 is bodies
    copy = bytes(bytearray(raw))  # equal bytes, another object: parsed afresh
    assert verifier._parsed(copy)[2] is not bodies
    with pytest.raises(dkim.MessageFormatError, match="Unexpected characters"):
        verifier._parsed(b"no colon here\r\n\r\n")


def test_l_tag_with_a_bad_c_tag_is_a_permerror_not_an_exception() -> None:
    """Such a signature once raised out of verify_dkim, so the filter's on_error (tempfail by
    default) kept the mail coming back forever; it is that signature's permerror."""
    raw = (b"DKIM-Signature: v=1; a=rsa-sha256; c=bogus/worse; d=football.example.com;\r\n"
           b" s=test; l=5; h=from; bh=AAAA; b=AAAA\r\nFrom: a@football.example.com\r\n"
           b"\r\nbody\r\n")
    record = RECORDS_DKIMPY["test._domainkey.football.example.com"]

    def lookup(name: str) -> list[str]:  # a real key: the check reaches l= and c=
        assert name == "test._domainkey.football.example.com"
        return [record]

    for reference in (False, True):
        results, count = verifier.verify_dkim(raw, lookup, POLICIES[0], 5, reference=reference)
        assert count == 1
        assert results[0].result == "permerror", results[0]
