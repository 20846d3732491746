"""RSA for DKIM through OpenSSL (the ``cryptography`` package): signing and verification.

dkimpy's RSA (``dkim/crypto.py``) is pure Python: the private-key operation of a 2048-bit key
costs about 6 ms of CPU, over 90 % of a signature; OpenSSL does it in about 0.3 ms. This
module owns only that operation. ``rsa_key`` builds an OpenSSL key from the very numbers dkimpy
parsed from the key file (n, e, d, p, q, d mod p-1, d mod q-1, q⁻¹ mod p); ``sign_digest``
signs the SHA-256 digest that dkimpy's header hashing produced with RSASSA-PKCS1-v1_5
(RFC 8017 8.2.1): the DigestInfo of that digest, padded as ``EMSA_PKCS1_v1_5_encode`` pads it,
raised to d mod n. That is ``Prehashed(SHA256())``: OpenSSL must not hash the digest again.
PKCS#1 v1.5 is deterministic, so for a consistent key the bytes are dkimpy's; the adapter keeps
dkimpy's RSA as the reference (``reference=True``) and tests/dkim/test_fast_path.py compares
the two over random messages.

Key checks: OpenSSL's own RSA key validation (primality tests on p and q) costs about 35 ms per
2048-bit key, too much where keys are loaded per message (pipe mode). Instead ``rsa_key``
checks the CRT numbers against each other (integer arithmetic, microseconds) and signs and
verifies one probe digest, so a key whose numbers disagree is refused at start-up
(``DkimKeyError``) instead of producing signatures that fail. Imports ``cryptography`` (about
6 ms), never dkimpy; ``_dkim_adapter`` imports this module only when it loads an RSA key.

Verification (``verify_sha256``) is dkimpy's ``RSASSA_PKCS1_v1_5_verify`` done by OpenSSL, for
the keys on which OpenSSL computes exactly what dkimpy computes (``verifies_like_dkimpy``):
dkimpy raises the signature, read as a big-endian integer of any length, to e mod n and
compares the result, as ``len(n)`` bytes, with ``00 01 FF.. 00 DigestInfo``; OpenSSL's
PKCS#1 v1.5 check of the same integer reduced mod n (OpenSSL wants exactly ``len(n)`` bytes
below n) accepts exactly that block (at least 8 FF bytes, which dkimpy's length check
guarantees, and the DigestInfo byte for byte). OpenSSL refuses, and ``cryptography`` reports
as a bad signature, some keys dkimpy computes with: an even or tiny n, e below 3, even or not
below n, n above 16384 bits, e above 64 bits with n above 3072 bits. For those
``verifies_like_dkimpy`` is False and the caller keeps dkimpy's arithmetic.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.hashes import SHA256

from ._dkim_der import DkimKeyError

__all__ = ["rsa_key", "sign_digest", "verifies_like_dkimpy", "verify_sha256"]

_PKCS1 = padding.PKCS1v15()
_PREHASHED = utils.Prehashed(SHA256())
_PROBE = hashlib.sha256(b"rohrpost: OpenSSL and the key file agree").digest()


def rsa_key(numbers: Mapping[str, int]) -> rsa.RSAPrivateKey:
    """An OpenSSL key for dkimpy's parsed RSA key (``dkim.crypto.parse_private_key``).

    :raises DkimKeyError: when the numbers are inconsistent or OpenSSL refuses them.
    """
    n, e, d = numbers["modulus"], numbers["publicExponent"], numbers["privateExponent"]
    p, q = numbers["prime1"], numbers["prime2"]
    dp, dq, qinv = numbers["exponent1"], numbers["exponent2"], numbers["coefficient"]
    if p < 2 or q < 2 or p * q != n:
        raise DkimKeyError("inconsistent RSA key: the modulus is not prime1 * prime2")
    if dp != d % (p - 1) or dq != d % (q - 1) or (q * qinv) % p != 1:
        raise DkimKeyError("inconsistent RSA key: its CRT exponents or coefficient are wrong")
    if (e * d) % math.lcm(p - 1, q - 1) != 1:
        raise DkimKeyError("inconsistent RSA key: the private exponent does not match")
    public = rsa.RSAPublicNumbers(e, n)
    try:
        key = rsa.RSAPrivateNumbers(p, q, d, dp, dq, qinv, public).private_key(
            unsafe_skip_rsa_key_validation=True)  # checked above, and by the probe below
    except ValueError as exc:
        raise DkimKeyError(f"OpenSSL refuses the RSA key: {exc}") from None
    try:
        key.public_key().verify(sign_digest(key, _PROBE), _PROBE, _PKCS1, _PREHASHED)
    except InvalidSignature:
        raise DkimKeyError("inconsistent RSA key: a probe signature does not verify") from None
    return key


def sign_digest(key: rsa.RSAPrivateKey, digest: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 signature of a SHA-256 ``digest`` (the DKIM header hash).

    :raises DkimKeyError: when the key is too small to hold the DigestInfo.
    """
    try:
        return key.sign(digest, _PKCS1, _PREHASHED)
    except ValueError as exc:
        raise DkimKeyError(f"cannot sign with this RSA key: {exc}") from None


#: OpenSSL's limits for RSA public-key operations (``rsa_ossl_public_decrypt``)
_MAX_MODULUS_BITS = 16384
_SMALL_MODULUS_BITS = 3072
_MAX_PUBEXP_BITS = 64


def verifies_like_dkimpy(n: int, e: int) -> bool:
    """Whether OpenSSL takes the public key (n, e) and computes s^e mod n as dkimpy does."""
    bits = n.bit_length()
    return (n % 2 == 1 and 3 <= e < n and e % 2 == 1 and bits <= _MAX_MODULUS_BITS
            and (bits <= _SMALL_MODULUS_BITS or e.bit_length() <= _MAX_PUBEXP_BITS))


def verify_sha256(n: int, e: int, signature: bytes, digest: bytes) -> bool | None:
    """RSASSA-PKCS1-v1_5 verification of a SHA-256 ``digest`` as dkimpy's, through OpenSSL.

    The caller has checked ``verifies_like_dkimpy(n, e)`` and that n is long enough for the
    DigestInfo (dkimpy's ``DigestTooLargeError``). Returns None when OpenSSL refuses the key
    after all (the caller then uses dkimpy's arithmetic).
    """
    size = (n.bit_length() + 7) // 8
    value = int.from_bytes(signature, "big") % n  # dkimpy's pow() reduces any length mod n
    try:
        key = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        return None
    try:
        key.verify(value.to_bytes(size, "big"), digest, _PKCS1, _PREHASHED)
    except InvalidSignature:
        return False
    return True
