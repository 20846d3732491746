"""DKIM and ARC through dkimpy: the one module that imports ``dkim`` (and PyNaCl through it).

Owns key loading (RSA PKCS#1/PKCS#8 PEM, Ed25519 PKCS#8 PEM or dkimpy's bare base64 seed),
DKIM verification with an exact result per signature, DKIM signing with keys parsed once, ARC
verification and sealing, and the DNS key record text. The filters (``dkim-verify``,
``dkim-sign``, ``arc-verify``, ``arc-seal``) and ``rohrpost dkim`` call this module and never
import ``dkim`` themselves; this module must not touch rohrpost's message model or results.

Why not ``dkim.verify()`` or even ``DKIM.verify()``: both turn a DNS timeout and a malformed
key record into ``False`` (``DomainSigner.verify_sig`` catches ``DnsTimeoutError`` and
``KeyFormatError``), so temperror, permerror and fail cannot be told apart. We therefore fetch
and parse the key ourselves through the injected lookup, then call dkimpy's
``verify_sig_process`` for canonicalization, body hash and the signature check. Signing builds
the tag list itself (``t=`` from the injected clock, optional ``x=``, no ``i=``) and uses
dkimpy's header hashing and RSA code with a key parsed once at start-up: dkimpy's
``DKIM.sign`` re-parses the PEM on every call and reads the wall clock.

dkimpy's own ``t=``/``x=`` checks read ``time.time()``; we strip those tags before calling its
field validation and check them against the injected clock instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dkim
import dkim.crypto
import dkim.util
import nacl.exceptions
import nacl.signing
from dkim.canonicalization import CanonicalizationPolicy

from rohrpost.dns import DnsPermError, DnsTempError

__all__ = [
    "ArcResult",
    "DkimKeyError",
    "PrivateKey",
    "SignatureResult",
    "VerifyPolicy",
    "arc_seal",
    "arc_verify",
    "key_record",
    "load_private_key",
    "record_matches",
    "sign_dkim",
    "verify_dkim",
]

TxtLookup = Callable[[str], Sequence[str]]
"""Return the TXT records of a name ([] when none); raise DnsTempError / DnsPermError."""

_ED25519_OID = bytes.fromhex("06032b6570")
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_RSA_OID = bytes.fromhex("06092a864886f70d0101010500")


class DkimKeyError(ValueError):
    """A private key or key record that cannot be used (message says why)."""


class _QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """dkimpy logs hostile input at ERROR; for us that is a result, so log it at DEBUG."""

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_LOG = _QuietLog(logging.getLogger("rohrpost.dkimpy"), {})


# -- keys ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateKey:
    """A parsed signing key: ``kind`` rsa or ed25519, dkimpy/NaCl key object, public p= value."""

    kind: str
    key: Any
    public: str
    bits: int
    pem: bytes

    @property
    def algorithm(self) -> str:
        """The DKIM ``a=`` value this key signs with."""
        return "rsa-sha256" if self.kind == "rsa" else "ed25519-sha256"


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _der_int(n: int) -> bytes:
    raw = n.to_bytes(n.bit_length() // 8 + 1, "big")
    return _der(0x02, raw)


def _rsa_spki(modulus: int, exponent: int) -> bytes:
    """SubjectPublicKeyInfo DER for an RSA key (what DKIM's ``p=`` carries for k=rsa)."""
    rsa_public = _der(0x30, _der_int(modulus) + _der_int(exponent))
    return _der(0x30, _der(0x30, _RSA_OID) + _der(0x03, b"\x00" + rsa_public))


def _pem_body(data: bytes) -> tuple[str, bytes]:
    m = re.search(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", data, re.S)
    if m is None:
        raise DkimKeyError("no PEM block found")
    try:
        return m.group(1).decode(), base64.b64decode(b"".join(m.group(2).split()), validate=True)
    except binascii.Error as exc:
        raise DkimKeyError(f"PEM body is not base64: {exc}") from None


def _ed25519(seed: bytes, pem: bytes) -> PrivateKey:
    key = nacl.signing.SigningKey(seed)
    public = base64.b64encode(bytes(key.verify_key)).decode()
    return PrivateKey("ed25519", key, public, 256, pem)


def load_private_key(data: bytes) -> PrivateKey:
    """Parse a private key file's bytes.

    Accepted: RSA in PKCS#1 (``BEGIN RSA PRIVATE KEY``) or PKCS#8 (``BEGIN PRIVATE KEY``) PEM;
    Ed25519 as PKCS#8 PEM (OpenSSL, OpenDKIM, ``rohrpost dkim keygen``) or as dkimpy's bare
    base64 32-byte seed (``dknewkey``).

    :raises DkimKeyError: for anything else (encrypted keys, garbage), with the reason.
    """
    if b"-----BEGIN" not in data:
        try:
            seed = base64.b64decode(b"".join(data.split()), validate=True)
        except binascii.Error:
            raise DkimKeyError("neither PEM nor a base64 Ed25519 seed") from None
        if len(seed) != 32:
            raise DkimKeyError("a bare base64 key must be a 32-byte Ed25519 seed")
        return _ed25519(seed, data)
    label, der = _pem_body(data)
    if "ENCRYPTED" in label:
        raise DkimKeyError("encrypted private keys are not supported")
    if label == "PRIVATE KEY" and der.startswith(_ED25519_PKCS8_PREFIX) and len(der) == 48:
        return _ed25519(der[-32:], data)
    if label == "PRIVATE KEY" and _ED25519_OID in der[:16]:
        raise DkimKeyError("unsupported Ed25519 PKCS#8 encoding")
    try:
        pk = dkim.crypto.parse_private_key(der)
    except dkim.crypto.UnparsableKeyError as exc:
        raise DkimKeyError(f"not an RSA or Ed25519 private key: {exc}") from None
    public = base64.b64encode(_rsa_spki(pk["modulus"], pk["publicExponent"])).decode()
    return PrivateKey("rsa", pk, public, pk["modulus"].bit_length(), data)


def ed25519_pem(seed: bytes) -> bytes:
    """PKCS#8 PEM for an Ed25519 seed (what ``openssl genpkey -algorithm ed25519`` writes)."""
    body = base64.b64encode(_ED25519_PKCS8_PREFIX + seed).decode()
    return f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n".encode()


def generate_ed25519() -> bytes:
    """Generate a new Ed25519 key as PKCS#8 PEM."""
    return ed25519_pem(bytes(nacl.signing.SigningKey.generate()))


def key_record(key: PrivateKey) -> str:
    """Return the DNS TXT value that publishes ``key``: ``v=DKIM1; k=rsa; p=...``."""
    return f"v=DKIM1; k={key.kind}; p={key.public}"


def record_matches(key: PrivateKey, record: str) -> tuple[bool, str]:
    """Whether a published key record carries ``key``'s public key; with the reason."""
    try:
        tags = dkim.util.parse_tag_value(record.encode("latin-1"))
    except dkim.util.InvalidTagValueList as exc:
        return False, f"record is not a tag list: {exc}"
    kind = tags.get(b"k", b"rsa").decode("latin-1").lower()
    p = re.sub(rb"\s+", b"", tags.get(b"p", b""))
    if not p:
        return False, "record has an empty p= (key revoked)" if b"p" in tags else "record has no p="
    if kind != key.kind:
        return False, f"record is k={kind}, the key is {key.kind}"
    if kind == "ed25519":
        return (p.decode("latin-1") == key.public, "public key differs")
    try:
        published = dkim.crypto.parse_public_key(base64.b64decode(p))
    except (binascii.Error, dkim.crypto.UnparsableKeyError) as exc:
        return False, f"p= does not parse: {exc}"
    same = (published["modulus"], published["publicExponent"]) == (
        key.key["modulus"], key.key["publicExponent"])
    return same, "public key differs"


# -- verification -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyPolicy:
    """What the verifier accepts.

    :param now: the current time (injected clock), for ``t=`` and ``x=``.
    :param min_rsa_bits: smaller RSA keys give ``policy`` (RFC 8301: < 1024 is never valid).
    :param clock_skew: seconds a ``t=`` may lie in the future, and ``x=`` in the past.
    :param allow_sha1: accept rsa-sha1 (RFC 8301 forbids it; off by default).
    """

    now: float
    min_rsa_bits: int = 1024
    clock_skew: int = 300
    allow_sha1: bool = False


@dataclass(frozen=True)
class SignatureResult:
    """The outcome of one DKIM-Signature (RFC 8601 result words)."""

    domain: str
    selector: str
    result: str
    algorithm: str
    reason: str = ""
    b: str = ""
    identity: str = ""
    key_bits: int = 0
    unsigned_body: bool = False

    def fact(self) -> dict[str, str]:
        """Return the dict published in the ``dkim.results`` fact."""
        return {"domain": self.domain, "selector": self.selector, "result": self.result,
                "algorithm": self.algorithm, "reason": self.reason}


class _Outcome(Exception):  # noqa: N818 - internal control flow, not an error
    def __init__(self, result: str, reason: str, bits: int = 0) -> None:
        super().__init__(reason)
        self.result, self.reason, self.bits = result, reason, bits


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")


def verify_dkim(raw: bytes, lookup: TxtLookup, policy: VerifyPolicy,
                max_signatures: int) -> tuple[list[SignatureResult], int]:
    """Verify the first ``max_signatures`` DKIM-Signature headers of ``raw``.

    :returns: one result per evaluated signature (top first) and how many signatures exist.
    """
    try:
        signer = dkim.DKIM(raw, logger=_LOG, minkey=policy.min_rsa_bits)
    except (dkim.DKIMException, IndexError) as exc:
        count = len(re.findall(rb"(?im)^dkim-signature[ \t]*:", raw.split(b"\n\n")[0]))
        why = f"message does not parse: {exc}"
        return [SignatureResult("", "", "permerror", "", why)] * min(count, max_signatures), count
    sigs = [(n, v) for n, v in signer.headers if n.lower() == b"dkim-signature"]
    results = [_verify_one(signer, name, value, lookup, policy)
               for name, value in sigs[:max_signatures]]
    return results, len(sigs)


def _verify_one(signer: Any, name: bytes, value: bytes, lookup: TxtLookup,
                policy: VerifyPolicy) -> SignatureResult:
    sig: dict[bytes, bytes] = {}
    bits, unsigned = 0, False
    try:
        try:
            sig = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList as exc:
            raise _Outcome("permerror", f"malformed signature: {exc}") from None
        include = _check_fields(sig, policy)
        pk, bits, ktag, tlsrpt = _fetch_key(sig, lookup)
        signer.pk, signer.keysize, signer.ktag, signer.seqtlsrpt = pk, bits, ktag, tlsrpt
        signer.signature_fields = sig
        unsigned = _unsigned_body(signer.body, sig)
        ok = signer.verify_sig_process(sig, include, (name, value), None)
        outcome = ("pass", "") if ok else ("fail", "signature did not verify")
    except _Outcome as exc:
        outcome = (exc.result, exc.reason)
        bits = exc.bits or bits
    except dkim.KeyFormatError as exc:
        weak = "too small" in str(exc)
        outcome = ("policy", f"RSA key of {bits} bits is too weak") if weak else (
            "permerror", f"bad key: {exc}")
    except dkim.ValidationError as exc:
        outcome = ("fail", str(exc))
    except (dkim.DKIMException, binascii.Error, ValueError, KeyError) as exc:
        outcome = ("permerror", f"{type(exc).__name__}: {exc}")
    b = re.sub(rb"\s+", b"", sig.get(b"b", b""))[:8]
    return SignatureResult(_text(sig.get(b"d")).lower(), _text(sig.get(b"s")), outcome[0],
                           _text(sig.get(b"a")).lower(), outcome[1][:300], _text(b),
                           _text(sig.get(b"i")), bits, unsigned and outcome[0] == "pass")


def _check_fields(sig: dict[bytes, bytes], policy: VerifyPolicy) -> list[bytes]:
    """RFC 6376 6.1.1 checks; ``t=``/``x=`` against the injected clock. Returns h= names."""
    try:
        dkim.validate_signature_fields({k: v for k, v in sig.items() if k not in (b"t", b"x")})
    except dkim.ValidationError as exc:
        raise _Outcome("permerror", str(exc)) from None
    if sig[b"a"].lower() == b"rsa-sha1" and not policy.allow_sha1:
        raise _Outcome("permerror", "rsa-sha1 is not accepted (RFC 8301)")
    stamps = {}
    for tag in (b"t", b"x"):
        if tag in sig:
            if not re.fullmatch(rb"\d{1,12}", sig[tag]):
                raise _Outcome("permerror", f"{tag.decode()}= is not a number")
            stamps[tag] = int(sig[tag])
    if b"t" in stamps and stamps[b"t"] > policy.now + policy.clock_skew:
        raise _Outcome("permerror", "signature timestamp t= lies in the future")
    if b"x" in stamps:
        if b"t" in stamps and stamps[b"x"] < stamps[b"t"]:
            raise _Outcome("permerror", "x= is earlier than t=")
        if stamps[b"x"] + policy.clock_skew < policy.now:
            raise _Outcome("permerror", "signature expired (x=)")
    include = [x.lower() for x in re.split(rb"\s*:\s*", sig[b"h"].strip())]
    if b"from" not in include:
        raise _Outcome("permerror", "From is not signed (h= lacks from)")
    return include


def _fetch_key(sig: dict[bytes, bytes], lookup: TxtLookup) -> tuple[Any, int, bytes, bool]:
    """Look up and parse the key; several records: prefer one whose k= fits a=."""
    name = f"{_text(sig[b's'])}._domainkey.{_text(sig[b'd'])}"
    try:
        records = list(lookup(name))
    except DnsTempError as exc:
        raise _Outcome("temperror", f"key lookup: {exc}") from None
    except DnsPermError as exc:
        raise _Outcome("permerror", f"key lookup: {exc}") from None
    want = sig[b"a"].split(b"-")[0].lower()
    parsed: list[tuple[dict[bytes, bytes], str]] = []
    for record in records:
        try:
            tags = dkim.util.parse_tag_value(record.encode("latin-1"))
        except dkim.util.InvalidTagValueList:
            continue
        parsed.append((tags, record))
    if not parsed:
        why = "no key record" if not records else "key record does not parse"
        raise _Outcome("permerror", f"{why} at {name}")
    parsed.sort(key=lambda tr: tr[0].get(b"k", b"rsa").lower() != want)
    tags, record = parsed[0]
    if b"p" in tags and not tags[b"p"].strip():
        raise _Outcome("permerror", f"key revoked (empty p=) at {name}")
    try:
        pk, bits, ktag, tlsrpt = dkim.evaluate_pk(name.encode(), record.encode("latin-1"))
    except (dkim.KeyFormatError, binascii.Error, ValueError, IndexError) as exc:
        raise _Outcome("permerror", f"bad key record at {name}: {exc}") from None
    if pk is None or ktag != want:
        raise _Outcome("permerror", f"key type k={_text(ktag)} does not fit a={_text(sig[b'a'])}")
    hashes = tags.get(b"h")
    if hashes and b"sha256" not in [h.strip().lower() for h in hashes.split(b":")]:
        raise _Outcome("permerror", "key h= does not allow sha256")
    flags = [f.strip() for f in tags.get(b"t", b"").split(b":")]
    if b"s" in flags and b"i" in sig:
        i_domain = sig[b"i"].rsplit(b"@", 1)[-1].lower()
        if i_domain != sig[b"d"].lower():
            raise _Outcome("permerror", "key t=s requires i= domain to equal d=")
    return pk, bits or 0, ktag, bool(tlsrpt)


def _unsigned_body(body: bytes, sig: dict[bytes, bytes]) -> bool:
    """Return True when ``l=`` leaves canonicalized body content outside the signature."""
    if b"l" not in sig:
        return False
    policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    length = len(policy.canonicalize_body(body))
    limit = int(sig[b"l"])
    if limit > length:
        raise _Outcome("permerror", f"l={limit} exceeds the body length {length}")
    return limit < length


# -- signing ------------------------------------------------------------------------------


def parse_message(raw: bytes) -> tuple[list[list[bytes]], bytes]:
    """Split like dkimpy (headers, body), done once per message for every key.

    :raises DkimKeyError: when dkimpy cannot parse the header block.
    """
    try:
        headers, body = dkim.rfc822_parse(raw)
    except (dkim.DKIMException, IndexError) as exc:
        raise DkimKeyError(f"message does not parse: {exc}") from None
    return headers, body


def _h_value(names: Sequence[str]) -> str:
    """``from:from:to:...`` with a space after a colon now and then, so folding can happen."""
    out, run = "", 0
    for i, name in enumerate(names):
        sep = "" if i == 0 else (": " if run + len(name) > 50 else ":")
        run = len(name) if sep == ": " else run + len(sep) + len(name)
        out += sep + name
    return out


def body_hash(parsed: tuple[list[list[bytes]], bytes], canon: str = "relaxed/relaxed") -> str:
    """Return the base64 ``bh=`` of the parsed message's body under ``canon``."""
    policy = CanonicalizationPolicy.from_c_value(canon.encode())
    return base64.b64encode(hashlib.sha256(policy.canonicalize_body(parsed[1])).digest()).decode()


def compute_b(parsed: tuple[list[list[bytes]], bytes], key: PrivateKey, *, canon: str,
              value: bytes, include: Sequence[str]) -> str:
    """Return the base64 ``b=`` for a DKIM-Signature whose value is ``value``.

    ``value`` is the header value as it will be emitted (any ``b=`` content is ignored, as
    RFC 6376 3.7 says); ``include`` the h= names in order. Used by ``sign_dkim`` and by the
    conformance tests that recompute published signatures byte for byte.
    """
    policy = CanonicalizationPolicy.from_c_value(canon.encode())
    hasher = hashlib.sha256()
    names = [h.strip().lower().encode() for h in include]
    dkim.hash_headers(hasher, policy, policy.canonicalize_headers(parsed[0]), names,
                      (b"DKIM-Signature", value), None)
    if key.kind == "rsa":
        signature = dkim.crypto.RSASSA_PKCS1_v1_5_sign(hasher, key.key)
    else:
        signature = key.key.sign(hasher.digest()).signature
    return base64.b64encode(bytes(signature)).decode()


def sign_dkim(parsed: tuple[list[list[bytes]], bytes], *, domain: str, selector: str,
              key: PrivateKey, headers: Sequence[str], timestamp: int,
              expire: int | None = None) -> str:
    """Return a DKIM-Signature value (relaxed/relaxed, single line) over ``parsed``.

    ``headers`` is the h= list (lower case, repeated names oversign). The value has spaces
    only where RFC 6376 allows folding white space, so any refolding keeps it valid under
    relaxed header canonicalization; ``b=`` is the last tag.
    """
    tags = [("v", "1"), ("a", key.algorithm), ("c", "relaxed/relaxed"), ("d", domain),
            ("s", selector), ("t", str(timestamp))]
    if expire is not None:
        tags.append(("x", str(expire)))
    tags += [("h", _h_value(headers)), ("bh", body_hash(parsed)), ("b", "")]
    unsigned = "; ".join(f"{k}={v}" for k, v in tags)
    b64 = compute_b(parsed, key, canon="relaxed/relaxed", value=b" " + unsigned.encode(),
                    include=headers)
    return unsigned + " ".join(b64[i : i + 64] for i in range(0, len(b64), 64))


# -- ARC ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArcResult:
    """Chain validation: ``cv`` pass/fail/none/temperror, sealer domains oldest first."""

    cv: str
    sealers: tuple[str, ...]
    reason: str
    instances: int


def _arc_dnsfunc(lookup: TxtLookup, temp: list[str]) -> Callable[..., bytes | None]:
    def dnsfunc(name: bytes | str, timeout: float = 5.0) -> bytes | None:
        del timeout  # the resolver has its own deadline
        text = name.decode("latin-1") if isinstance(name, bytes) else name
        try:
            records = lookup(text.rstrip("."))
        except DnsTempError as exc:
            temp.append(str(exc))
            raise dkim.DnsTimeoutError(str(exc)) from None
        except DnsPermError:
            return None
        return records[0].encode("latin-1") if records else None

    return dnsfunc


def arc_verify(raw: bytes, lookup: TxtLookup, min_rsa_bits: int = 1024) -> ArcResult:
    """Validate the ARC chain of ``raw`` (RFC 8617 5.2); a DNS timeout gives ``temperror``."""
    temp: list[str] = []
    try:
        arc = dkim.ARC(raw, logger=_LOG, minkey=min_rsa_bits)
        cv, data, reason = arc.verify(dnsfunc=_arc_dnsfunc(lookup, temp))
    except (dkim.DKIMException, IndexError, ValueError, KeyError) as exc:
        cv, data, reason = b"fail", [], f"{type(exc).__name__}: {exc}"
    sealers = tuple(_text(d.get("as-domain")).lower() for d in sorted(
        data, key=lambda d: int(d.get("instance", 0))) if d.get("as-domain"))
    word = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    if temp and word == "fail":
        word, reason = "temperror", f"key lookup: {temp[0]}"
    return ArcResult(word, sealers, _text(reason.encode() if isinstance(reason, str) else reason),
                     len(data))


def arc_seal(raw: bytes, *, domain: str, selector: str, key: PrivateKey, srv_id: str,
             timestamp: int, headers: Sequence[str] | None = None,
             standardize: bool = False) -> list[tuple[str, str]]:
    """Compute an ARC set for ``raw`` (which must carry our Authentication-Results on top).

    ``standardize`` gives the ARC test suite's canonical tag layout (for its vectors only).

    :returns: [(name, value)] for ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results
        in the order they go on top of the message; [] when dkimpy says the chain ended.
    :raises DkimKeyError: when the key is not RSA (RFC 8617 defines rsa-sha256 only) or the
        message cannot be sealed.
    """
    if key.kind != "rsa":
        raise DkimKeyError("ARC sealing needs an RSA key (RFC 8617: rsa-sha256)")
    arc = dkim.ARC(raw, logger=_LOG)
    include = [h.encode() for h in headers] if headers else None
    try:
        lines = arc.sign(selector.encode(), domain.encode(), key.pem, srv_id.encode(),
                         include_headers=include, timestamp=timestamp, standardize=standardize)
    except dkim.DKIMException as exc:
        raise DkimKeyError(f"cannot seal: {exc}") from None
    out = []
    for line in lines:
        name, _, value = line.partition(b":")
        unfolded = re.sub(rb"\r?\n[ \t]+", b" ", value).strip()
        out.append((name.decode(), unfolded.decode("utf-8", "replace")))
    return out
