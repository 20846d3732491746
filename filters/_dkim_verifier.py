"""DKIM and ARC verification through dkimpy, with an exact result per signature.

RFC 6376, 8463, 8301 and 8617.

Owns ``VerifyPolicy``, ``SignatureResult``, ``verify_dkim`` and ``arc_verify`` (re-exported by
``_dkim_adapter``), and the quiet logger and the TXT lookup type that ``_dkim_adapter``'s ARC
sealing shares. One of the two modules that import ``dkim`` (the other is ``_dkim_adapter``:
keys, signing, ARC sealing); the filters never import ``dkim`` themselves; neither module
touches rohrpost's message model or results.

Why not ``dkim.verify()`` or even ``DKIM.verify()``: both turn a DNS timeout and a malformed
key record into ``False`` (``DomainSigner.verify_sig`` catches ``DnsTimeoutError`` and
``KeyFormatError``), so temperror, permerror and fail cannot be told apart. We therefore fetch
and parse the key ourselves through the injected lookup, then call ``verify_sig_process``
for canonicalization, body hash and the signature check. dkimpy's own ``t=``/``x=`` checks
read ``time.time()``; we strip those tags before calling its field validation and check them
against the injected clock instead.

Speed (docs/performance.md, finding 20). dkimpy's classes are used through subclasses that keep
every decision of dkimpy's code and replace only how it computes: the message split and the
canonicalization come from ``_dkim_canon`` (the same bytes, and only the header fields a
signature selects are canonicalized), the canonical body is computed once per message and
algorithm (DKIM signatures and the ARC-Message-Signature share it; ``arc-verify`` gets the split
``dkim-verify`` made of the same message object, ``_parsed``), parsed key records are kept by
their text (``_KEYS``, ``_TAGS``), and the RSA public-key operation goes to OpenSSL
(``_dkim_fast.verify_sha256``) where OpenSSL computes what dkimpy's pure-Python arithmetic
computes, which is every real key. Each overriding method is dkimpy 1.1.8's, line for line,
with those calls swapped; ``reference=True`` runs dkimpy's unmodified classes, which tests
(tests/dkim/test_verify_fast.py) compare against. RSA-2048 on a 4 KB message: 0.66 ms of CPU
with dkimpy's code, 0.16 ms now (scripts/filter_speed.py, adapter rows).

``cryptography`` costs about 6 ms of CPU to import; a process imports it for verification
only after ``PURE_RSA_VERIFICATIONS`` verifications in dkimpy's arithmetic (0.2 ms each), so
``rohrpost run`` on one message never pays it and a daemon pays it once (the ski-rental
rule), unless it is already imported (``dkim-sign`` with an RSA key).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import dkim
import dkim.crypto
import dkim.util
import nacl.exceptions
from dkim.canonicalization import (
    CanonicalizationPolicy,
    InvalidCanonicalizationPolicyError,
    Relaxed,
)

from rohrpost.dns import DnsPermError, DnsTempError
from rohrpost.record import FrozenRecord

from . import _dkim_canon as canon

__all__ = ["LOG", "ArcResult", "SignatureResult", "TxtLookup", "VerifyPolicy", "arc_verify",
           "text", "verify_dkim"]

TxtLookup = Callable[[str], Sequence[str]]
"""Return the TXT records of a name ([] when none); raise DnsTempError / DnsPermError."""


class _QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """dkimpy logs hostile input at ERROR; for us that is a result, so log it at DEBUG."""

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


LOG = _QuietLog(logging.getLogger("rohrpost.dkimpy"), {})
"""The logger handed to dkimpy's DKIM and ARC objects."""


def text(value: bytes | None) -> str:
    """Tag bytes as text (UTF-8, undecodable bytes replaced); None as ""."""
    return (value or b"").decode("utf-8", "replace")


class VerifyPolicy(FrozenRecord):
    """What the verifier accepts.

    :param now: the current time (injected clock), for ``t=`` and ``x=``.
    :param min_rsa_bits: smaller RSA keys give ``policy`` (RFC 8301: < 1024 is never valid).
    :param clock_skew: seconds a ``t=`` may lie in the future, and ``x=`` in the past.
    :param allow_sha1: accept rsa-sha1 (RFC 8301 forbids it; off by default).
    """

    _fields = ("now", "min_rsa_bits", "clock_skew", "allow_sha1")
    now: float
    min_rsa_bits: int
    clock_skew: int
    allow_sha1: bool

    def __init__(self, now: float, min_rsa_bits: int = 1024, clock_skew: int = 300,
                 allow_sha1: bool = False) -> None:
        _set = object.__setattr__
        _set(self, "now", now)
        _set(self, "min_rsa_bits", min_rsa_bits)
        _set(self, "clock_skew", clock_skew)
        _set(self, "allow_sha1", allow_sha1)


class SignatureResult(FrozenRecord):
    """The outcome of one DKIM-Signature (RFC 8601 result words)."""

    _fields = ("domain", "selector", "result", "algorithm", "reason", "b", "identity",
               "key_bits", "unsigned_body")
    domain: str
    selector: str
    result: str
    algorithm: str
    reason: str
    b: str
    identity: str
    key_bits: int
    unsigned_body: bool

    def __init__(self, domain: str, selector: str, result: str,  # noqa: PLR0917
                 algorithm: str, reason: str = "", b: str = "", identity: str = "",
                 key_bits: int = 0, unsigned_body: bool = False) -> None:
        _set = object.__setattr__
        _set(self, "domain", domain)
        _set(self, "selector", selector)
        _set(self, "result", result)
        _set(self, "algorithm", algorithm)
        _set(self, "reason", reason)
        _set(self, "b", b)
        _set(self, "identity", identity)
        _set(self, "key_bits", key_bits)
        _set(self, "unsigned_body", unsigned_body)

    def fact(self) -> dict[str, str]:
        """Return the dict published in the ``dkim.results`` fact."""
        return {"domain": self.domain, "selector": self.selector, "result": self.result,
                "algorithm": self.algorithm, "reason": self.reason}


class ArcResult(FrozenRecord):
    """Chain validation: ``cv`` pass/fail/none/temperror, sealer domains oldest first."""

    _fields = ("cv", "sealers", "reason", "instances")
    cv: str
    sealers: tuple[str, ...]
    reason: str
    instances: int

    def __init__(self, cv: str, sealers: tuple[str, ...], reason: str, instances: int) -> None:
        _set = object.__setattr__
        _set(self, "cv", cv)
        _set(self, "sealers", sealers)
        _set(self, "reason", reason)
        _set(self, "instances", instances)


# -- the RSA public-key operation ---------------------------------------------------------------

#: verifications in dkimpy's arithmetic before a process imports ``cryptography`` for them
PURE_RSA_VERIFICATIONS = 30
_pure_left = [PURE_RSA_VERIFICATIONS]
#: DigestInfo length + 11 (RFC 8017 9.2 note 1): the shortest modulus dkimpy pads for SHA-256
_MIN_SHA256_MODULUS_BYTES = 19 + 32 + 11
_CRYPTOGRAPHY = "cryptography.hazmat.primitives.asymmetric.rsa"


def _openssl_now() -> bool:
    """Whether this verification goes to OpenSSL (the import rule of the module docstring)."""
    if _CRYPTOGRAPHY in sys.modules or _pure_left[0] <= 0:
        return True
    _pure_left[0] -= 1
    return False


def rsa_verify(hasher: Any, signature: bytes, pk: dict[str, int], *,
               openssl: bool | None = None) -> bool:
    """``dkim.crypto.RSASSA_PKCS1_v1_5_verify(hasher, signature, pk)``, faster.

    The same answer and the same ``DigestTooLargeError``; through OpenSSL where OpenSSL
    computes the same (``_dkim_fast.verifies_like_dkimpy``), else dkimpy's own function.

    :param openssl: force OpenSSL (True) or dkimpy's arithmetic (False); None decides by the
        import rule of the module docstring.
    """
    n, e = pk["modulus"], pk["publicExponent"]
    if openssl is None:
        openssl = _openssl_now()
    if openssl and hasher.name == "sha256":
        if max(1, (n.bit_length() + 7) // 8) < _MIN_SHA256_MODULUS_BYTES:
            raise dkim.crypto.DigestTooLargeError()
        from . import _dkim_fast

        if _dkim_fast.verifies_like_dkimpy(n, e):
            answer = _dkim_fast.verify_sha256(n, e, signature, hasher.digest())
            if answer is not None:
                return answer
    return bool(dkim.crypto.RSASSA_PKCS1_v1_5_verify(hasher, signature, pk))


# -- parsed key records ---------------------------------------------------------------------

_KEYS: dict[bytes, tuple[Any, Any, Any, bool]] = {}
_TAGS: dict[str, dict[bytes, bytes] | None] = {}
_KEYS_MAX = 1000


def _record_tags(record: str) -> dict[bytes, bytes] | None:
    """The tags of a key record (None when it is not a tag list), kept per record text.

    Callers only read the dict. A record that is not latin-1 raises each time, as before.
    """
    if record in _TAGS:
        return _TAGS[record]
    raw = record.encode("latin-1")
    try:
        tags: dict[bytes, bytes] | None = dkim.util.parse_tag_value(raw)
    except dkim.util.InvalidTagValueList:
        tags = None
    if len(_TAGS) >= _KEYS_MAX:
        _TAGS.clear()
    _TAGS[record] = tags
    return tags


def evaluate_pk(name: bytes, record: bytes | None) -> tuple[Any, Any, Any, bool]:
    """``dkim.evaluate_pk``, with the result kept per record text.

    A record parses the same every time; failures are not kept (their messages may name the
    record's owner).
    """
    if record:
        known = _KEYS.get(record)
        if known is not None:
            return known
    result = dkim.evaluate_pk(name, record)
    if record and isinstance(record, bytes):
        if len(_KEYS) >= _KEYS_MAX:
            _KEYS.clear()
        _KEYS[record] = result
    return result  # type: ignore[no-any-return]


# -- dkimpy's verification, computed faster -------------------------------------------------------


#: the last message parsed: (the bytes object, its headers, body, canonical bodies)
_LAST: tuple[bytes, list[list[bytes]], bytes, dict[Any, bytes]] | None = None
_LAST_MAX_BYTES = 1024 * 1024


def _parsed(message: bytes) -> tuple[list[list[bytes]], bytes, dict[Any, bytes]]:
    """``_dkim_canon.parse(message)`` and the canonical bodies computed so far.

    ``dkim-verify`` and ``arc-verify`` are handed the same bytes object for a message
    (``Message.without_from_line``): the second gets the first one's split and canonical
    bodies instead of computing them again. The header lists are copied (dkimpy's
    verification only reads them); the bodies are immutable bytes.

    :raises dkim.MessageFormatError: as ``rfc822_parse`` (or ``IndexError``).
    """
    global _LAST  # noqa: PLW0603 - a one-entry memo, replaced whole (atomic)
    last = _LAST
    if last is not None and last[0] is message:
        return [list(h) for h in last[1]], last[2], last[3]
    try:
        headers, body = canon.parse(message)
    except canon.HeaderError as exc:
        raise dkim.MessageFormatError(str(exc)) from None
    bodies: dict[Any, bytes] = {}
    if len(message) <= _LAST_MAX_BYTES:
        _LAST = (message, [list(h) for h in headers], body, bodies)
    return headers, body, bodies


class _Fast:
    """What ``_Dkim`` and ``_Arc`` change in dkimpy's ``DomainSigner`` (see the docstring).

    Attributes are dkimpy's (``headers``, ``body``, ``pk``, ``keysize``, ``ktag``, ...).
    """

    headers: list[list[bytes]]
    body: bytes
    logger: Any
    tlsrpt: Any
    seqtlsrpt: bool
    ktag: bytes | None
    pk: Any
    keysize: int
    minkey: int
    signed_headers: list[tuple[bytes, bytes]]

    def set_message(self, message: bytes | None) -> None:
        """``DomainSigner.set_message`` with ``_dkim_canon.parse`` for ``rfc822_parse``."""
        self._bodies: dict[Any, bytes] = {}
        if message:
            self.headers, self.body, self._bodies = _parsed(message)
        else:
            self.headers, self.body = [], ""  # type: ignore[assignment]  # dkimpy's value
        self.domain = None
        self.selector = "default"
        self.signature_fields: dict[bytes, bytes] = {}
        self.signed_headers = []
        self.keysize = 0
        self._names: dict[Any, list[bytes]] = {}

    def _canonical_body(self, algorithm: Any) -> bytes:
        body = self._bodies.get(algorithm)
        if body is None:
            fast = canon.relaxed_body if algorithm is Relaxed else canon.simple_body
            body = self._bodies[algorithm] = fast(self.body)
        return body

    def _hash_headers(self, hasher: Any, algorithm: Any, include_headers: list[bytes],
                      sigheader: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        """``dkim.hash_headers`` over the canonicalized headers.

        Only the selected fields are canonicalized (``select_headers`` picks by the canonical
        name, lower-cased, so picking first gives the same fields).
        """
        relaxed = algorithm is Relaxed
        names = self._names.get(algorithm)
        if names is None:
            names = self._names[algorithm] = [
                (n.lower().rstrip() if relaxed else n.lower()) for n, _v in self.headers]
        picked = []
        lastindex: dict[bytes, int] = {}
        for h in include_headers:
            i = lastindex.get(h, len(names))
            while i > 0:
                i -= 1
                if h == names[i]:
                    picked.append(i)
                    break
            lastindex[h] = i
        headers = self.headers
        if relaxed:
            sign_headers = [canon.relaxed_header(headers[i][0], headers[i][1]) for i in picked]
            x, y = canon.relaxed_header(sigheader[0], canon.strip_b(sigheader[1]))
        else:
            sign_headers = [(headers[i][0], headers[i][1]) for i in picked]
            x, y = sigheader[0], canon.strip_b(sigheader[1])
        data = b"".join([b"%s:%s" % (n, v) for n, v in sign_headers])
        hasher.update(data + b"%s:%s" % (x, y.rstrip()))
        return sign_headers

    def verify_sig_process(  # noqa: PLR0912 - dkimpy's function, line for line
            self, sig: dict[bytes, bytes], include_headers: list[bytes],
            sig_header: tuple[bytes, bytes], dnsfunc: Any) -> bool:
        """Dkimpy 1.1.8's ``DomainSigner.verify_sig_process`` with the faster parts."""
        del dnsfunc
        if self.tlsrpt == "strict" and not self.seqtlsrpt:
            raise dkim.ValidationError("Message is tlsrpt and Service Type is not tlsrpt")
        if not self.tlsrpt and self.seqtlsrpt:
            raise dkim.ValidationError("Message is not tlsrpt and Service Type is tlsrpt")
        try:
            canon_policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        except InvalidCanonicalizationPolicyError as e:
            raise dkim.MessageFormatError(f"invalid c= value: {e.args[0]!r}") from None
        hasher = dkim.HASH_ALGORITHMS[sig[b"a"]]
        if b"bh" in sig:
            body = self._canonical_body(canon_policy.body_algorithm)
            if b"l" in sig and not self.tlsrpt:
                body = body[: int(sig[b"l"])]
            bodyhash = hasher(body).digest()
            if self.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug("bh: %r", base64.b64encode(bodyhash))
            try:
                bh = base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"]))
            except TypeError as e:
                raise dkim.MessageFormatError(str(e)) from None
            if bodyhash != bh:
                raise dkim.ValidationError(
                    f"body hash mismatch (got {base64.b64encode(bodyhash)!r}, "
                    f"expected {sig[b'bh']!r})")
        if b"from" in include_headers:
            include_headers.append(b"from")
        h = hasher()
        self.signed_headers = self._hash_headers(h, canon_policy.header_algorithm,
                                                 include_headers, sig_header)
        signature = base64.b64decode(re.sub(rb"\s+", b"", sig[b"b"]))
        if self.ktag == b"rsa":
            try:
                res = rsa_verify(h, signature, self.pk)
            except (TypeError, dkim.crypto.DigestTooLargeError) as e:
                raise dkim.KeyFormatError(f"digest too large for modulus: {e}") from None
            self.logger.debug("%r valid: %s", sig_header[0], res)
            if res and self.keysize < self.minkey:
                raise dkim.KeyFormatError(f"public key too small: {self.keysize:d}")
            return res
        if self.ktag == b"ed25519":
            try:
                self.pk.verify(h.digest(), signature)
            except nacl.exceptions.BadSignatureError:
                return False
            self.logger.debug("%r valid", sig_header[0])
            return True
        raise dkim.UnknownKeyTypeError(self.ktag)


class _Dkim(_Fast, dkim.DKIM):  # type: ignore[misc]  # dkimpy is untyped
    """dkimpy's ``DKIM`` with ``_Fast``'s computation."""


class _Arc(_Fast, dkim.ARC):  # type: ignore[misc]
    """dkimpy's ``ARC`` with ``_Fast``'s computation.

    Parsed keys are kept, and the ARC header fields are found without canonicalizing every
    other field.
    """

    def verify_sig(self, sig: dict[bytes, bytes], include_headers: list[bytes],
                   sig_header: tuple[bytes, bytes], dnsfunc: Any) -> bool:
        """Dkimpy 1.1.8's ``DomainSigner.verify_sig`` with ``evaluate_pk`` kept per record."""
        name = sig[b"s"] + b"._domainkey." + sig[b"d"] + b"."
        try:
            record = dnsfunc(name, timeout=self.timeout)
            self.pk, self.keysize, self.ktag, self.seqtlsrpt = evaluate_pk(name, record)
        except dkim.KeyFormatError as e:
            self.logger.error("%s", e)  # noqa: TRY400 - a result, logged at DEBUG (_QuietLog)
            return False
        except binascii.Error as e:
            self.logger.error("KeyFormatError: %s", e)  # noqa: TRY400
            return False
        except dkim.DnsTimeoutError as e:
            self.logger.error(  # noqa: TRY400
                "DnsTimeoutError: Domain: %r Selector: %r Error message: %s",
                sig[b"d"], sig[b"s"], e)
            return False
        return self.verify_sig_process(sig, include_headers, sig_header, dnsfunc)

    def sorted_arc_headers(self) -> tuple[int, list[tuple[int, tuple[bytes, bytes]]]]:
        """Dkimpy 1.1.8's ``ARC.sorted_arc_headers``, canonicalizing only the ARC fields."""
        headers = []
        for name, value in self.headers:
            if name.lower().rstrip() not in dkim.ARC.ARC_HEADERS:
                continue
            x, y = canon.relaxed_header(name, value)
            m = dkim.ARC.INSTANCE_RE.search(y)
            if m is not None:
                try:
                    i = int(m.group(1))
                    headers.append((i, (x, y)))
                except ValueError:
                    self.logger.debug("invalid instance number %r: '%r: %r'", m.group(1), x, y)
            else:
                self.logger.debug("not instance number: '%r: %r'", x, y)
        if len(headers) == 0:
            return 0, []

        def arc_header_key(a: tuple[int, tuple[bytes, bytes]]) -> list[Any]:
            return [a[0], a[1][0].lower(), a[1][1].lower()]

        headers = sorted(headers, key=arc_header_key)
        headers.reverse()
        return headers[0][0], headers


class _Outcome(Exception):  # noqa: N818 - internal control flow, not an error
    def __init__(self, result: str, reason: str, bits: int = 0) -> None:
        super().__init__(reason)
        self.result, self.reason, self.bits = result, reason, bits



def verify_dkim(raw: bytes, lookup: TxtLookup, policy: VerifyPolicy, max_signatures: int, *,
                reference: bool = False) -> tuple[list[SignatureResult], int]:
    """Verify the first ``max_signatures`` DKIM-Signature headers of ``raw``.

    :param reference: use dkimpy's own classes and arithmetic (what the fast path is tested
        against, and what ``scripts/filter_speed.py`` compares it with).
    :returns: one result per evaluated signature (top first) and how many signatures exist.
    """
    try:
        signer = (dkim.DKIM if reference else _Dkim)(raw, logger=LOG, minkey=policy.min_rsa_bits)
    except (dkim.DKIMException, IndexError) as exc:
        count = len(re.findall(rb"(?im)^dkim-signature[ \t]*:", raw.split(b"\n\n")[0]))
        why = f"message does not parse: {exc}"
        return [SignatureResult("", "", "permerror", "", why)] * min(count, max_signatures), count
    sigs = [(n, v) for n, v in signer.headers if n.lower() == b"dkim-signature"]
    results = [_verify_one(signer, name, value, lookup, policy, reference=reference)
               for name, value in sigs[:max_signatures]]
    return results, len(sigs)


def _verify_one(signer: Any, name: bytes, value: bytes, lookup: TxtLookup,
                policy: VerifyPolicy, *, reference: bool) -> SignatureResult:
    sig: dict[bytes, bytes] = {}
    bits, unsigned = 0, False
    try:
        try:
            sig = dkim.util.parse_tag_value(value)
        except dkim.util.InvalidTagValueList as exc:
            raise _Outcome("permerror", f"malformed signature: {exc}") from None
        include = _check_fields(sig, policy)
        pk, bits, ktag, tlsrpt = _fetch_key(sig, lookup, reference)
        signer.pk, signer.keysize, signer.ktag, signer.seqtlsrpt = pk, bits, ktag, tlsrpt
        signer.signature_fields = sig
        unsigned = _unsigned_body(signer, sig, reference)
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
    return SignatureResult(text(sig.get(b"d")).lower(), text(sig.get(b"s")), outcome[0],
                           text(sig.get(b"a")).lower(), outcome[1][:300], text(b),
                           text(sig.get(b"i")), bits, unsigned and outcome[0] == "pass")


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


def _fetch_key(sig: dict[bytes, bytes], lookup: TxtLookup,
               reference: bool) -> tuple[Any, int, bytes, bool]:
    """Look up and parse the key; several records: prefer one whose k= fits a=."""
    name = f"{text(sig[b's'])}._domainkey.{text(sig[b'd'])}"
    try:
        records = list(lookup(name))
    except DnsTempError as exc:
        raise _Outcome("temperror", f"key lookup: {exc}") from None
    except DnsPermError as exc:
        raise _Outcome("permerror", f"key lookup: {exc}") from None
    want = sig[b"a"].split(b"-")[0].lower()
    parsed: list[tuple[dict[bytes, bytes], str]] = []
    for record in records:
        tags = _record_tags(record)
        if tags is not None:
            parsed.append((tags, record))
    if not parsed:
        why = "no key record" if not records else "key record does not parse"
        raise _Outcome("permerror", f"{why} at {name}")
    parsed.sort(key=lambda tr: tr[0].get(b"k", b"rsa").lower() != want)
    tags, record = parsed[0]
    if b"p" in tags and not tags[b"p"].strip():
        raise _Outcome("permerror", f"key revoked (empty p=) at {name}")
    try:
        parse = dkim.evaluate_pk if reference else evaluate_pk
        pk, bits, ktag, tlsrpt = parse(name.encode(), record.encode("latin-1"))
    except (dkim.KeyFormatError, binascii.Error, ValueError, IndexError) as exc:
        raise _Outcome("permerror", f"bad key record at {name}: {exc}") from None
    if pk is None or ktag != want:
        raise _Outcome("permerror", f"key type k={text(ktag)} does not fit a={text(sig[b'a'])}")
    hashes = tags.get(b"h")
    if hashes and b"sha256" not in [h.strip().lower() for h in hashes.split(b":")]:
        raise _Outcome("permerror", "key h= does not allow sha256")
    flags = [f.strip() for f in tags.get(b"t", b"").split(b":")]
    if b"s" in flags and b"i" in sig:
        i_domain = sig[b"i"].rsplit(b"@", 1)[-1].lower()
        if i_domain != sig[b"d"].lower():
            raise _Outcome("permerror", "key t=s requires i= domain to equal d=")
    return pk, bits or 0, ktag, bool(tlsrpt)


def _unsigned_body(signer: Any, sig: dict[bytes, bytes], reference: bool) -> bool:
    """Return True when ``l=`` leaves canonicalized body content outside the signature."""
    if b"l" not in sig:
        return False
    try:
        policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    except InvalidCanonicalizationPolicyError as exc:  # not a DKIMException: name it here
        raise _Outcome("permerror", f"bad c= tag: {exc}") from None
    if reference:
        length = len(policy.canonicalize_body(signer.body))
    else:
        length = len(signer._canonical_body(policy.body_algorithm))
    limit = int(sig[b"l"])
    if limit > length:
        raise _Outcome("permerror", f"l={limit} exceeds the body length {length}")
    return limit < length


# -- ARC ------------------------------------------------------------------------------------


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


def arc_verify(raw: bytes, lookup: TxtLookup, min_rsa_bits: int = 1024, *,
               reference: bool = False) -> ArcResult:
    """Validate the ARC chain of ``raw`` (RFC 8617 5.2); a DNS timeout gives ``temperror``.

    :param reference: use dkimpy's own ``ARC`` class (see ``verify_dkim``).
    """
    temp: list[str] = []
    try:
        arc = (dkim.ARC if reference else _Arc)(raw, logger=LOG, minkey=min_rsa_bits)
        cv, data, reason = arc.verify(dnsfunc=_arc_dnsfunc(lookup, temp))
    except (dkim.DKIMException, IndexError, ValueError, KeyError) as exc:
        cv, data, reason = b"fail", [], f"{type(exc).__name__}: {exc}"
    sealers = tuple(text(d.get("as-domain")).lower() for d in sorted(
        data, key=lambda d: int(d.get("instance", 0))) if d.get("as-domain"))
    word = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    if temp and word == "fail":
        word, reason = "temperror", f"key lookup: {temp[0]}"
    return ArcResult(word, sealers, text(reason.encode() if isinstance(reason, str) else reason),
                     len(data))
