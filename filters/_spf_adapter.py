"""The pyspf adapter: the one module that imports the untyped ``spf`` library.

Owns the DNS shim and ``check_host``; ``filters.spf`` imports this module only when a check
runs, so listing filters or a pipeline without ``spf`` never imports pyspf. pyspf's only DNS
hook is its module global ``spf.DNSLookup``; this module replaces it exactly once, at import,
with ``_lookup``, which reads the resolver of the current check from a ContextVar.
``check_host`` sets that ContextVar in the worker thread, inside a copied context, so
concurrent checks in different threads never see each other's resolver and no pyspf global
changes per request (DESIGN.md, section 5). The
lookup limits (10 DNS mechanisms, 2 void lookups) stay pyspf's defaults, which are RFC 7208's.

It must not touch any other pyspf global, and it never talks to DNS except through
``rohrpost.dns.Resolver`` (so tests can point every lookup at a loopback server).
"""

from __future__ import annotations

import contextvars
from typing import TYPE_CHECKING, Any

import spf

from rohrpost.dns import DnsPermError, DnsTempError, normalize_name

from .spf import SpfCheck, normalize_result

if TYPE_CHECKING:
    from ._inline import SyncResolver

__all__ = ["check_host"]

_RESOLVER: contextvars.ContextVar[SyncResolver | None] = contextvars.ContextVar(
    "rohrpost_spf_resolver", default=None
)


def _strip_dot(name: str) -> str:
    return name[:-1] if name.endswith(".") else name


def _convert(key: tuple[str, str], records: tuple[str, ...]) -> list[tuple[tuple[str, str], Any]]:
    """Our ``DnsAnswer.records`` in the shapes pyspf's own dnspython driver produces."""
    qtype = key[1]
    if qtype in ("TXT", "SPF"):
        # one record = a sequence of bytes strings pyspf joins; latin-1 keeps every byte
        return [(key, (rec.encode("latin-1"),)) for rec in records]
    if qtype == "MX":
        out: list[tuple[tuple[str, str], Any]] = []
        for rec in records:
            pref, _sp, host = rec.partition(" ")
            out.append((key, (int(pref), _strip_dot(host.strip()))))
        return out
    if qtype == "PTR":
        return [(key, _strip_dot(rec)) for rec in records]
    return [(key, rec) for rec in records]


def _lookup(
    name: str, qtype: str, strict: object = True, timeout: float = 20.0
) -> list[tuple[tuple[str, str], Any]]:
    """``spf.DNSLookup`` replacement: answer from the resolver of the current check.

    A malformed name (which an SPF macro can produce) is an empty answer, as RFC 7208 4.3
    and 5 treat it like a non-existent domain; a timeout or SERVFAIL is ``spf.TempError``.
    A permanent resolver error (CNAME loop, answer over the size limit) is an empty answer
    for address lookups (A, AAAA, MX, PTR), which is what pyspf's own CNAME-loop handling
    yields, and ``spf.PermError`` for TXT, where it means the domain's policy is unusable.
    """
    del strict  # pyspf passes its strictness; the resolver has one behaviour
    resolver = _RESOLVER.get()
    if resolver is None:
        raise spf.TempError("DNS: no rohrpost resolver in this context")
    key = (_strip_dot(str(name)).lower(), str(qtype).upper())
    try:
        normalize_name(key[0])
    except DnsPermError:
        return []
    try:
        answer = resolver.query_sync(key[0], key[1], timeout=max(float(timeout), 0.001))
    except DnsTempError as exc:
        raise spf.TempError(str(exc)) from exc
    except DnsPermError as exc:
        if key[1] in ("TXT", "SPF"):
            raise spf.PermError(str(exc)) from exc
        return []
    return _convert(key, answer.records)


def _install() -> None:
    """Install the shim once; importing this module again changes nothing."""
    if spf.DNSLookup is not _lookup:
        spf.DNSLookup = _lookup


_install()


def check_host(resolver: SyncResolver, ip: str, sender: str, helo: str, *,
               total_timeout: float = 20.0, default_explanation: str = "") -> SpfCheck:
    """Run RFC 7208 ``check_host()`` for ``sender`` (or ``postmaster@helo`` when empty).

    Blocking: call it inside ``contextvars.copy_context().run`` so the resolver set here
    stays with this check, in a worker thread, or on the event loop with a resolver that
    never waits (``_inline.KnownAnswers``).

    :param total_timeout: seconds for the whole evaluation (pyspf's ``querytime``; RFC 7208
        4.6.4 suggests at least 20); one DNS query is also bounded by the resolver's timeout.
    :param default_explanation: replaces pyspf's default explanation of ``fail`` (the
        conformance suites expect ``DEFAULT``).
    """
    _RESOLVER.set(resolver)
    query = spf.query(i=ip, s=sender, h=helo, timeout=total_timeout, querytime=total_timeout)
    if default_explanation:
        query.set_default_explanation(default_explanation)
    result, _code, explanation = query.check()
    identity = "mailfrom" if sender else "helo"
    domain = str(query.o or "").lower()
    return SpfCheck(normalize_result(result), str(explanation or ""), identity, domain)
