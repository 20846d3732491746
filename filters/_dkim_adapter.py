"""DKIM keys, DKIM signing and ARC sealing through dkimpy; verification from ``_dkim_verifier``.

Owns key loading (RSA PKCS#1/PKCS#8 PEM, Ed25519 PKCS#8 PEM or dkimpy's bare base64 seed), the
DNS key record text, DKIM signing with keys parsed once, and ARC sealing; ``verify_dkim`` and
``arc_verify`` are ``_dkim_verifier``'s, re-exported. The
filters (``dkim-sign``, ``arc-verify``, ``arc-seal``, and ``dkim-verify`` through
``_dkim_verifier``) and ``rohrpost dkim`` call these modules and never import ``dkim``
themselves; this module must not touch rohrpost's message model or results.

Modules around it: ``_dkim_verifier`` (DKIM and ARC verification; the other ``dkim``
importer), ``_dkim_canon`` (dkimpy's canonicalization on bytes, for the verifier),
``_dkim_der`` (PEM/DER bytes, ``DkimKeyError``; no library) and ``_dkim_fast`` (RSA signing and
verification through OpenSSL; imports ``cryptography``, never dkimpy, and only once an RSA key
is loaded or a process has verified enough signatures).

Signing builds the tag list itself (``t=`` from the injected clock, optional ``x=``, no
``i=``), canonicalizes and hashes the header fields with dkimpy's ``hash_headers`` and
canonicalization classes, and signs the digest: RSA through OpenSSL (``_dkim_fast``, about 20x
faster than dkimpy's pure-Python RSA, same bytes), Ed25519 through PyNaCl as dkimpy does
(RFC 8463: Ed25519 over the SHA-256 digest of the header data). ``reference=True`` signs RSA
with dkimpy's ``RSASSA_PKCS1_v1_5_sign`` instead: the reference that tests/dkim/test_fast_path.py
and scripts/dkim_speed.py compare the fast path against. dkimpy's ``DKIM.sign`` re-parses the
PEM on every call and reads the wall clock, so we do not call it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import dkim
import dkim.crypto
import dkim.util
import nacl.signing
from dkim.canonicalization import CanonicalizationPolicy

from rohrpost.record import FrozenRecord

from ._dkim_der import DkimKeyError, ed25519_pem, ed25519_seed, pem_body, rsa_spki
from ._dkim_verifier import (
    LOG,
    ArcResult,
    SignatureResult,
    TxtLookup,
    VerifyPolicy,
    arc_verify,
    verify_dkim,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "ArcResult",
    "DkimKeyError",
    "PrivateKey",
    "SignatureResult",
    "TxtLookup",
    "VerifyPolicy",
    "arc_seal",
    "arc_verify",
    "ed25519_pem",
    "key_record",
    "load_private_key",
    "record_matches",
    "sign_dkim",
    "verify_dkim",
]


# -- keys ---------------------------------------------------------------------------------


class PrivateKey(FrozenRecord):
    """A parsed signing key.

    :param kind: ``rsa`` or ``ed25519``.
    :param key: dkimpy's parsed RSA key (a dict of its numbers) or a PyNaCl ``SigningKey``.
    :param public: the ``p=`` value that publishes it.
    :param bits: the RSA modulus size (256 for Ed25519).
    :param pem: the key file's bytes (dkimpy's ARC sealing parses them itself).
    :param openssl: the same RSA key for OpenSSL (``_dkim_fast``); None for Ed25519.
    """

    _fields = ("kind", "key", "public", "bits", "pem", "openssl")
    _repr_fields = ("kind", "public", "bits")  # private numbers stay out of logs and reports
    kind: str
    key: Any
    public: str
    bits: int
    pem: bytes
    openssl: RSAPrivateKey | None

    def __init__(self, kind: str, key: Any, public: str, bits: int,  # noqa: PLR0917
                 pem: bytes, openssl: RSAPrivateKey | None = None) -> None:
        _set = object.__setattr__
        _set(self, "kind", kind)
        _set(self, "key", key)
        _set(self, "public", public)
        _set(self, "bits", bits)
        _set(self, "pem", pem)
        _set(self, "openssl", openssl)

    @property
    def algorithm(self) -> str:
        """The DKIM ``a=`` value this key signs with."""
        return "rsa-sha256" if self.kind == "rsa" else "ed25519-sha256"


def _ed25519(seed: bytes, pem: bytes) -> PrivateKey:
    key = nacl.signing.SigningKey(seed)
    public = base64.b64encode(bytes(key.verify_key)).decode()
    return PrivateKey("ed25519", key, public, 256, pem)


def load_private_key(data: bytes) -> PrivateKey:
    """Parse a private key file's bytes.

    Accepted: RSA in PKCS#1 (``BEGIN RSA PRIVATE KEY``) or PKCS#8 (``BEGIN PRIVATE KEY``) PEM;
    Ed25519 as PKCS#8 PEM (OpenSSL, OpenDKIM, ``rohrpost dkim keygen``) or as dkimpy's bare
    base64 32-byte seed (``dknewkey``). An RSA key is parsed by dkimpy and handed to OpenSSL
    with the same numbers (``_dkim_fast.rsa_key`` checks that they agree).

    :raises DkimKeyError: for anything else (encrypted keys, garbage, inconsistent RSA
        numbers), with the reason.
    """
    if b"-----BEGIN" not in data:
        try:
            seed = base64.b64decode(b"".join(data.split()), validate=True)
        except binascii.Error:
            raise DkimKeyError("neither PEM nor a base64 Ed25519 seed") from None
        if len(seed) != 32:
            raise DkimKeyError("a bare base64 key must be a 32-byte Ed25519 seed")
        return _ed25519(seed, data)
    label, der = pem_body(data)
    if "ENCRYPTED" in label:
        raise DkimKeyError("encrypted private keys are not supported")
    pkcs8_seed = ed25519_seed(label, der)
    if pkcs8_seed is not None:
        return _ed25519(pkcs8_seed, data)
    try:
        pk = dkim.crypto.parse_private_key(der)
    except dkim.crypto.UnparsableKeyError as exc:
        raise DkimKeyError(f"not an RSA or Ed25519 private key: {exc}") from None
    from ._dkim_fast import rsa_key

    public = base64.b64encode(rsa_spki(pk["modulus"], pk["publicExponent"])).decode()
    return PrivateKey("rsa", pk, public, pk["modulus"].bit_length(), data, rsa_key(pk))


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
              value: bytes, include: Sequence[str], reference: bool = False) -> str:
    """Return the base64 ``b=`` for a DKIM-Signature whose value is ``value``.

    ``value`` is the header value as it will be emitted (any ``b=`` content is ignored, as
    RFC 6376 3.7 says); ``include`` the h= names in order. Used by ``sign_dkim`` and by the
    conformance tests that recompute published signatures byte for byte. ``reference`` signs
    RSA with dkimpy's pure-Python RSA instead of OpenSSL (same bytes, 20x the CPU).

    :raises DkimKeyError: when the RSA key is too small for the digest.
    """
    policy = CanonicalizationPolicy.from_c_value(canon.encode())
    hasher = hashlib.sha256()
    names = [h.strip().lower().encode() for h in include]
    dkim.hash_headers(hasher, policy, policy.canonicalize_headers(parsed[0]), names,
                      (b"DKIM-Signature", value), None)
    if key.kind != "rsa":
        signature = key.key.sign(hasher.digest()).signature  # RFC 8463: Ed25519 of the digest
    elif reference or key.openssl is None:
        try:
            signature = dkim.crypto.RSASSA_PKCS1_v1_5_sign(hasher, key.key)
        except dkim.crypto.DigestTooLargeError:
            raise DkimKeyError("cannot sign with this RSA key: digest too large") from None
    else:
        from ._dkim_fast import sign_digest

        signature = sign_digest(key.openssl, hasher.digest())
    return base64.b64encode(bytes(signature)).decode()


def sign_dkim(parsed: tuple[list[list[bytes]], bytes], *, domain: str, selector: str,
              key: PrivateKey, headers: Sequence[str], timestamp: int,
              expire: int | None = None, reference: bool = False) -> str:
    """Return a DKIM-Signature value (relaxed/relaxed, single line) over ``parsed``.

    ``headers`` is the h= list (lower case, repeated names oversign). The value has spaces
    only where RFC 6376 allows folding white space, so any refolding keeps it valid under
    relaxed header canonicalization; ``b=`` is the last tag. ``reference``: see ``compute_b``.
    """
    tags = [("v", "1"), ("a", key.algorithm), ("c", "relaxed/relaxed"), ("d", domain),
            ("s", selector), ("t", str(timestamp))]
    if expire is not None:
        tags.append(("x", str(expire)))
    tags += [("h", _h_value(headers)), ("bh", body_hash(parsed)), ("b", "")]
    unsigned = "; ".join(f"{k}={v}" for k, v in tags)
    b64 = compute_b(parsed, key, canon="relaxed/relaxed", value=b" " + unsigned.encode(),
                    include=headers, reference=reference)
    return unsigned + " ".join(b64[i : i + 64] for i in range(0, len(b64), 64))


# -- ARC ----------------------------------------------------------------------------------


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
    arc = dkim.ARC(raw, logger=LOG)
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
