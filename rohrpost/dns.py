"""DNS lookups for every filter: the one module that imports dnspython.

Owns ``Resolver`` (asyncio and thread-safe synchronous lookups sharing one TTL-honouring LRU
cache), the ``DnsAnswer`` value it returns, its ``DnsConfig`` and the two error classes callers
map to ``temperror`` (``DnsTempError``) and ``permerror`` (``DnsPermError``). SPF (through the
pyspf shim), DKIM (through ``dkimpy_dnsfunc``), DMARC and DNSBL/URIBL filters call it; none of
them imports dnspython. This module must not import dkim or spf and keeps no module state:
every cache and counter belongs to a ``Resolver`` instance. ``Resolver.query_cached`` answers
from the cache only, never waiting: blocking library checks use it to run on the event loop
when every answer they need is cached (``filters/_inline.py``). A cache hit is the common case
on a busy MX, so its path is kept short (docs/performance.md, finding 22).

dnspython is imported lazily (when a ``Resolver`` is built): it costs most of the start-up
of ``rohrpost run`` (DESIGN.md, section 4); the error and value classes are cheap to import.

Error mapping (decided here, so every filter maps the same way):

* timeout, SERVFAIL, REFUSED, network errors, and **unparseable ("garbage") replies** are
  ``DnsTempError``. dnspython ignores an unparseable UDP reply, as it may be spoofed noise, and
  keeps waiting for a real one, so garbage surfaces as a timeout; a retry may well succeed.
* malformed names (label > 63, name > 253 octets, empty labels, NUL, control characters,
  backslash escapes, bad IDNA) are ``DnsPermError`` and never reach the network; so are answers
  whose records total more than ``DnsConfig.max_answer_bytes``, YXDOMAIN, and CNAME loops.
* NXDOMAIN and NODATA are answers (``nxdomain=True`` / empty ``records``), not exceptions.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rohrpost.record import FrozenRecord

if TYPE_CHECKING:
    import dns.message
    import dns.resolver

__all__ = [
    "DnsAnswer",
    "DnsConfig",
    "DnsError",
    "DnsPermError",
    "DnsTempError",
    "Resolver",
    "normalize_name",
    "parse_server",
]

#: Seconds a temporary or permanent *error* stays cached: long enough to spare a failing
#: server a burst of identical queries from parallel messages, short enough to recover fast.
ERROR_TTL = 2.0
#: EDNS buffer size we advertise (DNS flag day 2020); larger answers come back over TCP.
EDNS_PAYLOAD = 1232
_MAX_NAME = 253
_MAX_LABEL = 63
#: questions whose checked key a resolver remembers (names repeat: keys, SPF, DMARC)
_MAX_KEYS = 4096
#: what a name must not contain: NUL, controls, space, DEL, backslash
_BAD_NAME_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class DnsError(Exception):
    """Base class of DNS lookup failures; callers normally catch one of the two subclasses."""


class DnsTempError(DnsError):
    """A temporary failure (timeout, SERVFAIL, network error): map to ``temperror``."""


class DnsPermError(DnsError):
    """A permanent failure (malformed name or hostile answer): map to ``permerror``."""


class DnsAnswer(FrozenRecord):
    """One lookup result.

    :param name: the queried name, lower case, without the final dot.
    :param rdtype: the queried type, upper case (``"TXT"``).
    :param records: the records as text: TXT/SPF as the record's character-strings joined
        without spaces and decoded as latin-1 (so every byte survives); A/AAAA the address;
        MX ``"pref host."``; CNAME/PTR/NS the target with final dot; other types in zone-file
        presentation format. Empty for NODATA and NXDOMAIN.
    :param ttl: seconds this answer may still be used (remaining TTL on a cache hit).
    :param nxdomain: True when the name does not exist.
    """

    _fields = ("name", "rdtype", "records", "ttl", "nxdomain")
    name: str
    rdtype: str
    records: tuple[str, ...]
    ttl: float
    nxdomain: bool

    def __init__(self, name: str, rdtype: str, records: tuple[str, ...], ttl: float,
                 nxdomain: bool) -> None:
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "rdtype", rdtype)
        _set(self, "records", records)
        _set(self, "ttl", ttl)
        _set(self, "nxdomain", nxdomain)


class DnsConfig(FrozenRecord):
    """Resolver settings.

    :param servers: ``"127.0.0.1:5353"``, ``"[::1]:53"``, ``"127.0.0.1"`` (port 53); IP
        addresses only. Empty means the system resolver (``/etc/resolv.conf``).
    :param timeout: overall deadline of one query in seconds, all retries and TCP included.
    :param cache_size: maximum cached entries (LRU); 0 disables the cache.
    :param max_ttl: ceiling on the TTL of positive answers.
    :param negative_ttl: TTL of NXDOMAIN/NODATA answers without an SOA, and the ceiling on the
        SOA-derived negative TTL, so a newly published record (a DKIM key) is seen soon.
    :param max_answer_bytes: ceiling on the total size of the records of one answer.
    """

    _fields = ("servers", "timeout", "cache_size", "max_ttl", "negative_ttl", "max_answer_bytes")
    servers: tuple[str, ...]
    timeout: float
    cache_size: int
    max_ttl: float
    negative_ttl: float
    max_answer_bytes: int

    def __init__(self, servers: tuple[str, ...] = (), timeout: float = 5.0,  # noqa: PLR0917
                 cache_size: int = 10000, max_ttl: float = 86400, negative_ttl: float = 300,
                 max_answer_bytes: int = 65535) -> None:
        _set = object.__setattr__
        _set(self, "servers", servers)
        _set(self, "timeout", timeout)
        _set(self, "cache_size", cache_size)
        _set(self, "max_ttl", max_ttl)
        _set(self, "negative_ttl", negative_ttl)
        _set(self, "max_answer_bytes", max_answer_bytes)
        if self.timeout <= 0 or self.cache_size < 0 or self.max_answer_bytes <= 0:
            raise ValueError("timeout and max_answer_bytes must be positive, cache_size >= 0")
        for server in self.servers:
            parse_server(server)


def parse_server(spec: str) -> tuple[str, int]:
    """Split ``"ip"``, ``"ip:port"`` or ``"[ipv6]:port"`` into address and port.

    :raises ValueError: if the address is not an IP address or the port is out of range.
    """
    host, port = spec, "53"
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"bad DNS server {spec!r}")
        port = rest[1:] or "53"
    elif spec.count(":") == 1:
        host, port = spec.split(":")
    address = str(ipaddress.ip_address(host))
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad DNS server port in {spec!r}")
    return address, int(port)


def normalize_name(name: str | bytes) -> str:
    """Check a domain name and return it lower case without the final dot.

    Names come from hostile mail (DKIM ``d=``, SPF macros, From domains), so anything odd is
    refused before a query is sent. Unicode names are IDNA-encoded.

    :raises DnsPermError: for NUL, whitespace, control characters, backslashes, empty labels,
        labels over 63 or names over 253 octets, or names IDNA cannot encode.
    """
    if isinstance(name, bytes):
        try:
            name = name.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DnsPermError("domain name is not UTF-8") from exc
    text = name[:-1] if name.endswith(".") else name
    if not text or _BAD_NAME_CHARS.search(text):
        raise DnsPermError(f"malformed domain name {name!r}")
    if not text.isascii():
        import dns.name

        try:
            text = dns.name.from_unicode(text).to_text(omit_final_dot=True)
        except dns.name.NameTooLong as exc:
            raise DnsPermError(f"domain name too long: {name!r}") from exc
        except (dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.IDNAException) as exc:
            raise DnsPermError(f"malformed domain name {name!r}: {exc}") from exc
    labels = text.split(".")
    if len(text) > _MAX_NAME or any(not 0 < len(label) <= _MAX_LABEL for label in labels):
        raise DnsPermError(f"malformed domain name {name!r}: bad label or name length")
    return text.lower()


class _Cache:
    """A bounded LRU map from (name, rdtype) to an answer or an error, with expiry times.

    It also counts hits and misses, under the same lock (one lock per lookup, not two).
    """

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[float, DnsAnswer | DnsError]] = (
            OrderedDict()
        )
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, str], *, count_miss: bool = True) -> DnsAnswer | DnsError | None:
        """Return the live entry for ``key`` (an answer carries its remaining TTL), or None.

        :param count_miss: count a miss (False for a look that will not be followed by a
            query, so the query that follows later counts it once).
        """
        with self._lock:
            entry = self._entries.get(key)
            remaining = entry[0] - self._clock() if entry is not None else 0.0
            if entry is None or remaining <= 0:
                if entry is not None:
                    del self._entries[key]
                if count_miss:
                    self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        value = entry[1]
        if isinstance(value, DnsAnswer):
            return DnsAnswer(value.name, value.rdtype, value.records, remaining, value.nxdomain)
        return type(value)(*value.args)  # a fresh exception: tracebacks are per raise

    def put(self, key: tuple[str, str], value: DnsAnswer | DnsError, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds, evicting the least recently used entries."""
        if ttl <= 0 or self._size == 0:
            return
        with self._lock:
            self._entries[key] = (self._clock() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def _record_text(rdata: object, rdtype: str) -> str:
    """Render one rdata as ``DnsAnswer.records`` documents."""
    if rdtype in {"TXT", "SPF"}:
        return b"".join(rdata.strings).decode("latin-1")  # type: ignore[attr-defined]
    if rdtype in {"A", "AAAA"}:
        return str(rdata.address)  # type: ignore[attr-defined]
    if rdtype == "MX":
        return f"{rdata.preference} {rdata.exchange.to_text()}"  # type: ignore[attr-defined]
    if rdtype in {"CNAME", "PTR", "NS", "DNAME"}:
        return str(rdata.target.to_text())  # type: ignore[attr-defined]
    return str(rdata.to_text())  # type: ignore[attr-defined]


class Resolver:
    """Cached DNS lookups with an overall deadline per query; see the module docstring.

    :param config: servers, timeout, cache bounds.
    :param clock: monotonic seconds for cache expiry (inject a fake one in tests).
    """

    def __init__(self, config: DnsConfig, clock: Callable[[], float] = time.monotonic) -> None:
        import dns.asyncresolver
        import dns.nameserver
        import dns.resolver

        self._config = config
        self._cache = _Cache(config.cache_size, clock)
        self._stats_lock = threading.Lock()
        self._timeouts = 0
        #: (name, rdtype) as asked -> the checked (name, TYPE) key; asked again and again
        self._keys: dict[tuple[str | bytes, str], tuple[str, str]] = {}
        self._async = dns.asyncresolver.Resolver(configure=not config.servers)
        self._sync = dns.resolver.Resolver(configure=not config.servers)
        for resolver in (self._async, self._sync):
            if config.servers:
                servers = [parse_server(s) for s in config.servers]
                resolver.nameservers = [dns.nameserver.Do53Nameserver(*s) for s in servers]
            resolver.timeout = resolver.lifetime = config.timeout
            resolver.use_edns(0, 0, EDNS_PAYLOAD)
            resolver.cache = None  # ours is shared between sync and async, and bounded
            resolver.retry_servfail = False

    def _key(self, name: str | bytes, rdtype: str) -> tuple[str, str]:
        """The cache key of a question: the checked name and the type's upper-case text.

        :raises DnsPermError: for a malformed name; ``ValueError`` for an unknown type.
        """
        key = self._keys.get((name, rdtype))
        if key is not None:
            return key
        import dns.rdatatype

        try:
            key = (normalize_name(name), dns.rdatatype.to_text(dns.rdatatype.from_text(rdtype)))
        except dns.rdatatype.UnknownRdatatype as exc:
            raise ValueError(f"unknown DNS type {rdtype!r}") from exc
        if len(self._keys) >= _MAX_KEYS:
            self._keys.clear()
        self._keys[(name, rdtype)] = key
        return key

    def _start(self, name: str | bytes, rdtype: str) -> tuple[tuple[str, str], DnsAnswer | None]:
        """Validate the question (unknown rdtype: ValueError); return key and cached answer."""
        key = self._key(name, rdtype)
        cached = self._cache.get(key)
        if isinstance(cached, DnsError):
            raise cached
        return key, cached

    def query_cached(self, name: str | bytes, rdtype: str) -> DnsAnswer | None:
        """What ``query_sync`` would return if it is in the cache; None when it is not.

        Never sends a query and never waits. A cached error is raised, as ``query_sync``
        raises it; a malformed name raises ``DnsPermError``. Counts a hit, never a miss (the
        query that follows a None counts it). Safe from any thread, the event loop's too.
        """
        cached = self._cache.get(self._key(name, rdtype), count_miss=False)
        if isinstance(cached, DnsError):
            raise cached
        return cached

    async def query(self, name: str | bytes, rdtype: str) -> DnsAnswer:
        """Look up ``name``/``rdtype`` on the asyncio loop.

        :raises DnsTempError: on timeout (within ``config.timeout``), SERVFAIL, network errors.
        :raises DnsPermError: for a malformed name (no query is sent) or a hostile answer.
        """
        key, cached = self._start(name, rdtype)
        if cached is not None:
            return cached
        try:
            async with asyncio.timeout(self._config.timeout):
                answer = await self._async.resolve(
                    key[0] + ".", key[1], raise_on_no_answer=False, search=False
                )
        except Exception as exc:  # noqa: BLE001 - every failure is classified in _failed
            return self._failed(key, exc)
        return self._answered(key, answer)

    def query_sync(
        self, name: str | bytes, rdtype: str, *, timeout: float | None = None
    ) -> DnsAnswer:
        """Blocking ``query`` for libraries that do DNS from worker threads (pyspf, dkimpy).

        Thread-safe; shares the cache with ``query``. Never call it on the event loop thread.

        :param timeout: a shorter deadline than ``config.timeout`` for this call.
        """
        key, cached = self._start(name, rdtype)
        if cached is not None:
            return cached
        lifetime = min(timeout or self._config.timeout, self._config.timeout)
        try:
            answer = self._sync.resolve(
                key[0] + ".", key[1], raise_on_no_answer=False, search=False, lifetime=lifetime
            )
        except Exception as exc:  # noqa: BLE001 - every failure is classified in _failed
            return self._failed(key, exc)
        return self._answered(key, answer)

    async def query_many(
        self, queries: Sequence[tuple[str, str]], *, limit: int = 32
    ) -> list[DnsAnswer | DnsError]:
        """Run many queries concurrently, at most ``limit`` at a time (DNSBL/URIBL batches).

        :returns: one entry per query, in order: the answer, or the ``DnsTempError`` /
            ``DnsPermError`` that ``query`` would have raised.
        """
        gate = asyncio.Semaphore(limit)

        async def one(name: str, rdtype: str) -> DnsAnswer | DnsError:
            async with gate:
                try:
                    return await self.query(name, rdtype)
                except DnsError as exc:
                    return exc

        return list(await asyncio.gather(*(one(n, t) for n, t in queries)))

    def dkimpy_dnsfunc(self) -> Callable[..., bytes | None]:
        """Return the ``dnsfunc(name, timeout=5)`` dkimpy's ``DKIM(..., dnsfunc=)`` expects.

        It returns the first TXT record (all strings joined) as bytes, or None for NXDOMAIN and
        NODATA. It raises ``DnsTempError``/``DnsPermError``: this module does not import dkim,
        so the DKIM adapter maps ``DnsTempError`` to ``dkim.DnsTimeoutError`` (temperror).
        """

        def dnsfunc(name: str | bytes, timeout: float = 5.0) -> bytes | None:
            answer = self.query_sync(name, "TXT", timeout=timeout)
            return answer.records[0].encode("latin-1") if answer.records else None

        return dnsfunc

    def stats(self) -> dict[str, int]:
        """Return counters: ``hits`` and ``misses`` of the cache, ``timeouts`` of queries."""
        with self._stats_lock:
            return {"hits": self._cache.hits, "misses": self._cache.misses,
                    "timeouts": self._timeouts}

    def _answered(self, key: tuple[str, str], result: dns.resolver.Answer) -> DnsAnswer:
        """Turn a NOERROR response into a cached answer (positive or NODATA)."""
        rrset = result.rrset
        if rrset is None:
            return self._negative(key, result.response, nxdomain=False)
        min_ttl = result.chaining_result.minimum_ttl
        records = tuple(_record_text(rd, key[1]) for rd in rrset)
        if sum(len(r) for r in records) > self._config.max_answer_bytes:
            error = DnsPermError(f"{key[1]} answer for {key[0]} exceeds the size limit")
            self._cache.put(key, error, ERROR_TTL)
            raise error
        answer = DnsAnswer(key[0], key[1], records, min(min_ttl, self._config.max_ttl), False)
        self._cache.put(key, answer, answer.ttl)
        return answer

    def _negative(
        self, key: tuple[str, str], response: dns.message.Message | None, *, nxdomain: bool
    ) -> DnsAnswer:
        """Cache NXDOMAIN/NODATA for the SOA's negative TTL, capped by ``negative_ttl``."""
        import dns.rdatatype

        ttl = self._config.negative_ttl
        for rrset in response.authority if response is not None else ():
            if rrset.rdtype == dns.rdatatype.SOA:
                ttl = min(ttl, rrset.ttl, rrset[0].minimum)
        answer = DnsAnswer(key[0], key[1], (), ttl, nxdomain)
        self._cache.put(key, answer, ttl)
        return answer

    def _failed(self, key: tuple[str, str], exc: BaseException) -> DnsAnswer:
        """Classify a dnspython failure: NXDOMAIN is an answer, the rest raise a DnsError."""
        import dns.exception
        import dns.message
        import dns.resolver

        if isinstance(exc, dns.resolver.NXDOMAIN):
            responses = list(exc.responses().values())  # type: ignore[no-untyped-call]
            return self._negative(key, responses[0] if responses else None, nxdomain=True)
        error: DnsError
        if isinstance(exc, dns.exception.Timeout | TimeoutError):
            with self._stats_lock:
                self._timeouts += 1
            error = DnsTempError(f"DNS timeout for {key[1]} {key[0]}")
        elif isinstance(exc, dns.resolver.YXDOMAIN | dns.message.ChainTooLong) or (
                isinstance(exc, dns.resolver.NoNameservers) and _wraps_chain_too_long(exc)):
            error = DnsPermError(f"DNS {type(exc).__name__} for {key[1]} {key[0]}")
        elif isinstance(exc, dns.exception.DNSException | OSError):
            error = DnsTempError(f"DNS failure for {key[1]} {key[0]}: {exc}")
        else:
            raise exc
        self._cache.put(key, error, ERROR_TTL)
        raise error from exc


def _wraps_chain_too_long(exc: BaseException) -> bool:
    """True when dnspython's "no nameservers" hides a CNAME loop (a permanent error)."""
    import dns.message

    errors = getattr(exc, "kwargs", {}).get("errors", [])
    return any(isinstance(e, tuple) and len(e) > 3 and isinstance(e[3], dns.message.ChainTooLong)
               for e in errors)
