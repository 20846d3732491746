"""Key file bytes for DKIM: PEM blocks, the few DER structures DKIM needs, the key error.

Owns ``DkimKeyError``, ``pem_body`` (label and DER of the first PEM block), ``rsa_spki`` (the
SubjectPublicKeyInfo that DKIM's ``p=`` carries for ``k=rsa``) and the Ed25519 PKCS#8 layout
(``ed25519_seed`` to read it, ``ed25519_pem`` to write it). Pure functions on bytes: imports
neither dkimpy nor a crypto library, so ``_dkim_adapter`` (dkimpy) and ``_dkim_fast``
(OpenSSL through ``cryptography``) share it without importing each other.
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["DkimKeyError", "ed25519_pem", "ed25519_seed", "pem_body", "rsa_spki"]

ED25519_OID = bytes.fromhex("06032b6570")
#: PKCS#8 PrivateKeyInfo of an Ed25519 key up to the 32-byte seed (RFC 8410 7).
ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_RSA_OID = bytes.fromhex("06092a864886f70d0101010500")


class DkimKeyError(ValueError):
    """A private key or key record that cannot be used (message says why)."""


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


def rsa_spki(modulus: int, exponent: int) -> bytes:
    """SubjectPublicKeyInfo DER for an RSA key (what DKIM's ``p=`` carries for k=rsa)."""
    rsa_public = _der(0x30, _der_int(modulus) + _der_int(exponent))
    return _der(0x30, _der(0x30, _RSA_OID) + _der(0x03, b"\x00" + rsa_public))


def pem_body(data: bytes) -> tuple[str, bytes]:
    """Return the label (``RSA PRIVATE KEY``) and the DER of the first PEM block of ``data``.

    :raises DkimKeyError: when there is no PEM block or its body is not base64.
    """
    m = re.search(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", data, re.S)
    if m is None:
        raise DkimKeyError("no PEM block found")
    try:
        return m.group(1).decode(), base64.b64decode(b"".join(m.group(2).split()), validate=True)
    except binascii.Error as exc:
        raise DkimKeyError(f"PEM body is not base64: {exc}") from None


def ed25519_seed(label: str, der: bytes) -> bytes | None:
    """The 32-byte seed of an Ed25519 PKCS#8 key; None when ``der`` is not an Ed25519 key.

    :raises DkimKeyError: for an Ed25519 key in a PKCS#8 layout we do not read.
    """
    if label != "PRIVATE KEY":
        return None
    if der.startswith(ED25519_PKCS8_PREFIX) and len(der) == 48:
        return der[-32:]
    if ED25519_OID in der[:16]:
        raise DkimKeyError("unsupported Ed25519 PKCS#8 encoding")
    return None


def ed25519_pem(seed: bytes) -> bytes:
    """PKCS#8 PEM for an Ed25519 seed (what ``openssl genpkey -algorithm ed25519`` writes)."""
    body = base64.b64encode(ED25519_PKCS8_PREFIX + seed).decode()
    return f"-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n".encode()
