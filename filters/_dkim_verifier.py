"""DKIM verification through dkimpy, with an exact result per signature (RFC 6376, 8463, 8301).

Owns ``VerifyPolicy``, ``SignatureResult`` and ``verify_dkim``, and the quiet logger and the
TXT lookup type that ``_dkim_adapter``'s ARC code shares. One of the two modules that import
``dkim`` (the other is ``_dkim_adapter``: keys, signing, ARC); split from it only to keep each
module readable. The filters reach both through ``_dkim_adapter`` or this module and never
import ``dkim`` themselves; neither module touches rohrpost's message model or results.

Why not ``dkim.verify()`` or even ``DKIM.verify()``: both turn a DNS timeout and a malformed
key record into ``False`` (``DomainSigner.verify_sig`` catches ``DnsTimeoutError`` and
``KeyFormatError``), so temperror, permerror and fail cannot be told apart. We therefore fetch
and parse the key ourselves through the injected lookup, then call dkimpy's
``verify_sig_process`` for canonicalization, body hash and the signature check.

dkimpy's own ``t=``/``x=`` checks read ``time.time()``; we strip those tags before calling its
field validation and check them against the injected clock instead.

Speed (scripts/dkim_speed.py, 4 KB message): about 0.65 ms of CPU for RSA-2048 and 0.4 ms for
Ed25519; dkimpy's pure-Python RSA public-key operation (e = 65537) is 0.26 ms of the RSA case,
canonicalization and parsing the rest. Well under OpenDKIM's cost, so verification keeps
dkimpy's own code path: replacing ``verify_sig_process`` to save 0.2 ms would mean
re-implementing its checks (docs/authentication.md, Performance).
"""

from __future__ import annotations

import binascii
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import dkim
import dkim.util
from dkim.canonicalization import CanonicalizationPolicy

from rohrpost.dns import DnsPermError, DnsTempError
from rohrpost.record import FrozenRecord

__all__ = ["LOG", "SignatureResult", "TxtLookup", "VerifyPolicy", "text", "verify_dkim"]

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


class _Outcome(Exception):  # noqa: N818 - internal control flow, not an error
    def __init__(self, result: str, reason: str, bits: int = 0) -> None:
        super().__init__(reason)
        self.result, self.reason, self.bits = result, reason, bits



def verify_dkim(raw: bytes, lookup: TxtLookup, policy: VerifyPolicy,
                max_signatures: int) -> tuple[list[SignatureResult], int]:
    """Verify the first ``max_signatures`` DKIM-Signature headers of ``raw``.

    :returns: one result per evaluated signature (top first) and how many signatures exist.
    """
    try:
        signer = dkim.DKIM(raw, logger=LOG, minkey=policy.min_rsa_bits)
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


def _fetch_key(sig: dict[bytes, bytes], lookup: TxtLookup) -> tuple[Any, int, bytes, bool]:
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
