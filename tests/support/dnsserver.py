"""A small authoritative DNS server for tests, on loopback UDP and TCP, in a thread.

Owns ``TestDnsServer``: records added from code, from chasquid's ``.dns`` files or from the
``zonedata`` maps of pyspf's YAML suites, answered authoritatively (absent name: NXDOMAIN;
present name, other type: NODATA with an SOA), with CNAME chasing, 255-byte splitting of long
TXT values, TC-bit truncation over UDP (512 bytes without EDNS, else the EDNS size) so TCP
fallback runs, an optional answer delay, and per-name faults (timeout, SERVFAIL, REFUSED,
garbage, forced truncation). It never forwards anything: the internet's DNS is never asked.

Built with dnspython only; it must not import rohrpost, so it tests the resolver from outside.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

Behaviour = Literal[
    "timeout", "timeout-if-empty", "servfail", "refused", "garbage", "truncate", "nxdomain"
]
TxtValue = str | bytes | Sequence[str | bytes]
#: A reply too short to hold a DNS header: no parser can mistake it for an answer.
GARBAGE = b"\x13\x37garbage"
_MAX_CHAIN = 8


def _to_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")  # YAML "\xEF" escapes mean bytes
    except UnicodeEncodeError:
        return value.encode("utf-8")


def split_txt(value: bytes) -> list[bytes]:
    """Split one TXT value into the 255-byte character-strings DNS carries."""
    return [value[i : i + 255] for i in range(0, len(value), 255)] or [b""]


class TestDnsServer:
    """Authoritative test DNS server; use ``with TestDnsServer(...) as server`` or start/stop.

    :param zones: origin -> records ``(name, rdtype, rdata)``; ``"@"`` is the origin, a name
        ending in ``.`` or in the origin is absolute, any other name is relative to the origin.
    :param host: loopback address to bind (``"::1"`` works too).
    :param port: 0 picks a free port, the same for UDP and TCP.
    :param delay: seconds to wait before each answer (concurrency tests).
    :param negative_ttl: TTL and minimum of the SOA sent with NXDOMAIN and NODATA.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(
        self,
        zones: Mapping[str, list[tuple[str, str, str]]] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        delay: float = 0.0,
        negative_ttl: int = 60,
    ) -> None:
        self.host, self.port, self.delay, self.negative_ttl = host, port, delay, negative_ttl
        self._lock = threading.Lock()
        self._data: dict[dns.name.Name, dict[dns.rdatatype.RdataType, dns.rrset.RRset]] = {}
        self._behaviour: dict[tuple[dns.name.Name, int | None], Behaviour] = {}
        self._origins: list[dns.name.Name] = []
        self._log: list[tuple[str, str]] = []
        self.tcp_queries = 0
        #: exceptions raised while answering; the ``dns_server`` fixture fails the test on any
        self.errors: list[BaseException] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []
        self._pool: ThreadPoolExecutor | None = None
        for origin, records in (zones or {}).items():
            zone = dns.name.from_text(origin)
            self._origins.append(zone)
            for name, rdtype, rdata in records:
                self.add(self._owner(name, zone), rdtype, rdata)

    @staticmethod
    def _owner(name: str, zone: dns.name.Name) -> str:
        if name == "@":
            return zone.to_text()
        absolute = dns.name.from_text(name)
        if name.endswith(".") or absolute.is_subdomain(zone):
            return absolute.to_text()
        return dns.name.from_text(name, origin=zone).to_text()

    # -- data -------------------------------------------------------------------------------

    def add(self, name: str, rdtype: str, rdata: TxtValue | None = None, ttl: int = 300) -> None:
        """Add one record; ``rdata=None`` only makes the type exist empty (NODATA).

        TXT/SPF rdata may be zone text starting with ``"`` (``'"a" "b"'``), or a raw value
        (str or bytes, split into 255-byte strings), or a list of raw strings (one record).
        """
        owner, rtype = dns.name.from_text(name), dns.rdatatype.from_text(rdtype)
        with self._lock:
            node = self._data.setdefault(owner, {})
            rrset = node.setdefault(rtype, dns.rrset.RRset(owner, dns.rdataclass.IN, rtype))
            if rdata is not None:
                rrset.add(self._rdata(rtype, rdata), ttl)

    @staticmethod
    def _rdata(rtype: dns.rdatatype.RdataType, rdata: TxtValue) -> dns.rdata.Rdata:
        if rtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
            if isinstance(rdata, str) and rdata.startswith('"'):
                return dns.rdata.from_text(dns.rdataclass.IN, rtype, rdata)
            parts = [rdata] if isinstance(rdata, str | bytes) else list(rdata)
            strings = [s for p in parts for s in split_txt(_to_bytes(p))] or [b""]
            return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, rtype, strings)
        if not isinstance(rdata, str):
            raise TypeError("only TXT/SPF rdata may be bytes or a list")
        return dns.rdata.from_text(
            dns.rdataclass.IN, rtype, rdata, origin=dns.name.root, relativize=False
        )

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Remove a name, or one type at it."""
        owner = dns.name.from_text(name)
        with self._lock:
            if rdtype is None:
                self._data.pop(owner, None)
            else:
                self._data.get(owner, {}).pop(dns.rdatatype.from_text(rdtype), None)

    def set_behaviour(
        self, name: str, behaviour: Behaviour | None, rdtype: str | None = None
    ) -> None:
        """Make queries for ``name`` (one type, or all) misbehave; None restores answers.

        ``timeout``: never answer. ``timeout-if-empty``: never answer when the answer would be
        NXDOMAIN/NODATA (pyspf's ``TIMEOUT`` entry). ``servfail``/``refused``/``nxdomain``:
        that rcode. ``garbage``: reply bytes that are no DNS message. ``truncate``: empty reply
        with TC over UDP, the real answer over TCP.
        """
        key = (
            dns.name.from_text(name),
            None if rdtype is None else dns.rdatatype.from_text(rdtype),
        )
        with self._lock:
            if behaviour is None:
                self._behaviour.pop(key, None)
            else:
                self._behaviour[key] = behaviour

    @property
    def query_log(self) -> list[tuple[str, str]]:
        """Queries received, as (lower-case name without final dot, type), UDP and TCP."""
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        """Forget the logged queries."""
        with self._lock:
            self._log.clear()
            self.tcp_queries = 0

    # -- loaders ----------------------------------------------------------------------------

    def load_bind_style(self, text: str) -> None:
        """Load chasquid's ``.dns`` format: ``name: TXT value`` lines, ``\\``-continued.

        ``TEMPERROR`` makes the name SERVFAIL (temperror); ``PERMERROR`` makes it NXDOMAIN, the
        DNS-level permanent failure. A name listed twice gets two TXT records.
        """
        for raw in text.replace("\\\n", "").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"not a 'name: value' line: {line!r}")
            name, value = name.strip(), value.strip()
            if value == "TEMPERROR":
                self.set_behaviour(name, "servfail")
            elif value == "PERMERROR":
                self.set_behaviour(name, "nxdomain")
            else:
                self.add(name, "TXT", value)

    def load_bind_file(self, path: str | Path) -> None:
        """Load a chasquid ``.dns`` file, following a git symlink stored as a one-line file."""
        path = Path(path)
        text = path.read_text()
        target = path.parent / text.strip()
        if "\n" not in text.strip() and ":" not in text and target.is_file():
            text = target.read_text()
        self.load_bind_style(text)

    def load_zonedata(self, zonedata: Mapping[str, Iterable[Any]]) -> list[str]:
        """Load a ``zonedata`` map of pyspf's YAML suites, with the semantics of its test harness.

        ``SPF`` values also become TXT records unless the name lists any ``TXT``; ``NONE`` makes
        the type exist empty; ``TIMEOUT`` times out queries that would find no records; a
        string is one character-string, a list several (``[]`` becomes one empty string).

        :returns: descriptions of entries that could not be loaded (e.g. over-long names).
        """
        skipped: list[str] = []
        for name, listed in zonedata.items():
            entries = list(listed)
            has_txt = any(isinstance(e, Mapping) and "TXT" in e for e in entries)
            for entry in entries:
                if entry == "TIMEOUT":
                    self.set_behaviour(name, "timeout-if-empty")
                    continue
                for rdtype, value in entry.items():
                    types = ["SPF", "TXT"] if rdtype == "SPF" and not has_txt else [rdtype]
                    for rtype in types:
                        try:
                            self.add(name, rtype, self._zonedata_value(rtype, value))
                        except (ValueError, TypeError, dns.exception.DNSException) as exc:
                            skipped.append(f"{name} {rtype} {value!r}: {exc}")
        return skipped

    @staticmethod
    def _zonedata_value(rdtype: str, value: Any) -> TxtValue | None:
        if value == "NONE":
            return None
        if rdtype == "MX":
            return f"{value[0]} {value[1] or '.'}"
        if rdtype in ("TXT", "SPF"):
            return value if isinstance(value, list) else [value]
        return str(value)

    # -- serving ----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``"127.0.0.1:PORT"`` or ``"[::1]:PORT"``, as ``DnsConfig.servers`` takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> None:
        """Bind UDP and TCP on the same port and serve from a thread; returns when ready."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _attempt in range(20):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, self.port))
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, udp.getsockname()[1]))
                break
            except OSError:
                udp.close()
                tcp.close()
                if self.port:
                    raise
        else:
            raise OSError("no free port for UDP and TCP")
        tcp.listen(64)
        self.port = udp.getsockname()[1]
        self._sockets = [udp, tcp]
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="testdns")
        self._thread = threading.Thread(target=self._serve, args=(udp, tcp), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close every socket; waits for in-flight answers to finish."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        for sock in self._sockets:
            sock.close()
        self._thread, self._pool, self._sockets = None, None, []

    def __enter__(self) -> TestDnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _serve(self, udp: socket.socket, tcp: socket.socket) -> None:
        assert self._pool is not None
        with selectors.DefaultSelector() as sel:
            sel.register(udp, selectors.EVENT_READ)
            sel.register(tcp, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in sel.select(0.05):
                    if key.fileobj is udp:
                        data, peer = udp.recvfrom(65535)
                        self._pool.submit(self._udp_reply, udp, data, peer)
                    else:
                        conn, _peer = tcp.accept()
                        self._pool.submit(self._tcp_serve, conn)

    def _guarded_reply(self, wire: bytes, *, tcp: bool) -> bytes | None:
        try:
            return self._reply(wire, tcp=tcp)
        except Exception as exc:
            with self._lock:
                self.errors.append(exc)
            raise

    def _udp_reply(self, udp: socket.socket, data: bytes, peer: Any) -> None:
        reply = self._guarded_reply(data, tcp=False)
        if reply is not None and not self._stopping.wait(self.delay):
            with contextlib.suppress(OSError):
                udp.sendto(reply, peer)

    def _tcp_serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        with conn, contextlib.suppress(OSError):
            while not self._stopping.is_set():
                try:
                    header = conn.recv(2, socket.MSG_WAITALL)
                except TimeoutError:
                    continue
                if len(header) < 2:
                    return
                (length,) = struct.unpack("!H", header)
                reply = self._guarded_reply(conn.recv(length, socket.MSG_WAITALL), tcp=True)
                if reply is not None and not self._stopping.wait(self.delay):
                    conn.sendall(struct.pack("!H", len(reply)) + reply)

    def _reply(self, wire: bytes, *, tcp: bool) -> bytes | None:
        """Answer one query message; None means stay silent."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # the test server drops anything unparseable
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        with self._lock:
            self._log.append(
                (
                    question.name.to_text(omit_final_dot=True).lower(),
                    dns.rdatatype.to_text(question.rdtype),
                )
            )
            self.tcp_queries += tcp
            behaviour = self._behaviour.get(
                (question.name, question.rdtype)
            ) or self._behaviour.get((question.name, None))
            if behaviour in ("timeout", "garbage", "servfail", "refused", "nxdomain"):
                return self._fault(response, behaviour)
            empty = self._resolve(response, question.name, question.rdtype)
        if empty and behaviour == "timeout-if-empty":
            return None
        if behaviour == "truncate" and not tcp:
            return self._truncated(response)
        try:
            reply = response.to_wire(max_size=65535)
        except dns.exception.TooBig:  # even TCP cannot carry it
            response.answer, response.authority = [], []
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()
        limit = max(512, query.payload) if query.edns >= 0 else 512
        return self._truncated(response) if not tcp and len(reply) > limit else reply

    @staticmethod
    def _fault(response: dns.message.Message, behaviour: str) -> bytes | None:
        if behaviour == "timeout":
            return None
        if behaviour == "garbage":
            return GARBAGE
        rcode = {"servfail": dns.rcode.SERVFAIL, "refused": dns.rcode.REFUSED}
        response.set_rcode(rcode.get(behaviour, dns.rcode.NXDOMAIN))
        return response.to_wire()

    @staticmethod
    def _truncated(response: dns.message.Message) -> bytes:
        response.answer, response.authority, response.additional = [], [], []
        response.flags |= dns.flags.TC
        return response.to_wire()

    def _resolve(
        self, response: dns.message.Message, qname: dns.name.Name, rtype: dns.rdatatype.RdataType
    ) -> bool:
        """Fill the answer (chasing CNAMEs) or the negative SOA; True if no records answer."""
        name = qname
        for _hop in range(_MAX_CHAIN):
            node = self._data.get(name)
            if node is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                break
            rrset = node.get(rtype)
            if rrset is not None and len(rrset) > 0:
                response.answer.append(rrset.copy())  # type: ignore[no-untyped-call]
                return False
            cname = node.get(dns.rdatatype.CNAME)
            if rtype == dns.rdatatype.CNAME or cname is None or len(cname) == 0:
                break
            response.answer.append(cname.copy())  # type: ignore[no-untyped-call]
            name = cname[0].target
        response.authority.append(self._soa(name))
        return True

    def _soa(self, name: dns.name.Name) -> dns.rrset.RRset:
        zones = [z for z in self._origins if name.is_subdomain(z)]
        origin = max(zones, key=len, default=dns.name.root)
        ttl = self.negative_ttl
        text = f"ns.test. hostmaster.test. 1 3600 600 86400 {ttl}"
        return dns.rrset.from_text(origin, ttl, "IN", "SOA", text)
