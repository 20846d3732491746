"""A small SPAMC/1.5 client for SpamAssassin's spamd (CHECK, SYMBOLS, REPORT, PROCESS, TELL).

Owns ``SpamcClient``, the reply types and the parsers for spamd's ``Spam:`` header and the
REPORT table. One connection per request (spamd closes after each reply), asyncio streams, a
connect timeout and an overall timeout per request. Every failure (refused, timeout, a spamd
error code, a reply that does not parse) raises ``SpamdError``, so the pipeline's ``on_error``
policy decides; this module never turns a failure into a score. It reads no configuration.

Written in-house because spamassassin-client on PyPI is unusable (see docs/decisions.md).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ._sockets import BackendError, SocketAddress, close_quietly, open_stream, read_to_eof

PROTOCOL = "SPAMC/1.5"
DEFAULT_PORT = 783
_STATUS_RE = re.compile(r"^SPAMD/(\d+\.\d+)\s+(\d+)\s*(.*)$")
_SPAM_RE = re.compile(r"^\s*(True|False|Yes|No)\s*;\s*(-?\d+(?:\.\d+)?)\s*/\s*(-?\d+(?:\.\d+)?)",
                      re.I)
# "1000 GTUBE                  BODY: Generic Test ..." / "-0.0 NO_RECEIVED  Informational..."
_REPORT_LINE_RE = re.compile(r"^ {0,4}(-?\d+(?:\.\d+)?) +([A-Za-z0-9_]+)(?: +(.*))?$")
_USER_RE = re.compile(r"^[\x21-\x7e]{1,128}$")


class SpamdError(BackendError):
    """spamd was unreachable, timed out, answered an error code, or a reply did not parse."""


@dataclass(frozen=True, slots=True)
class SpamdReply:
    """One spamd reply: status code and text, headers (lower-case names), body bytes."""

    code: int
    status: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def has_score(self) -> bool:
        """True when the reply carries a ``Spam:`` header."""
        return "spam" in self.headers

    @property
    def is_spam(self) -> bool:
        """Spamd's own verdict (score >= required)."""
        return self._spam()[0]

    @property
    def score(self) -> float:
        """The total score as spamd reports it."""
        return self._spam()[1]

    @property
    def required(self) -> float:
        """The ``required_score`` of spamd's configuration."""
        return self._spam()[2]

    def _spam(self) -> tuple[bool, float, float]:
        m = _SPAM_RE.match(self.headers.get("spam", ""))
        if not m:
            raise SpamdError(f"no parsable Spam: header in reply {self.status!r}")
        return m.group(1).lower() in ("true", "yes"), float(m.group(2)), float(m.group(3))


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One row of the REPORT table: points, rule name, description."""

    points: float
    rule: str
    description: str


def parse_report(text: str) -> list[ReportLine]:
    """Rows of the ``pts rule name description`` table in a REPORT body.

    Continuation lines of long descriptions (indented past the rule column) are joined to their
    row. Returns an empty list when the report template has no table (custom templates).
    """
    rows: list[ReportLine] = []
    in_table = False
    for line in text.splitlines():
        if line.startswith("----") and " " in line:
            in_table = True
            continue
        if not in_table:
            continue
        m = _REPORT_LINE_RE.match(line)
        if m:
            rows.append(ReportLine(float(m.group(1)), m.group(2), (m.group(3) or "").strip()))
        elif line.strip() and rows and line.startswith(" " * 5):
            last = rows[-1]
            rows[-1] = ReportLine(last.points, last.rule, f"{last.description} {line.strip()}")
        elif not line.strip() and rows:
            break
    return rows


def _csv(value: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in value.split(",") if s.strip())


def parse_reply(data: bytes) -> SpamdReply:
    """Parse a whole spamd reply; a non-zero status code raises ``SpamdError``."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    if not lines:
        raise SpamdError("empty reply from spamd")
    m = _STATUS_RE.match(lines[0])
    if not m:
        raise SpamdError(f"not a spamd reply: {lines[0][:80]!r}")
    code, status = int(m.group(2)), m.group(3).strip()
    if code != 0:
        raise SpamdError(f"spamd error {code}: {status[:200]}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        try:
            body = body[: int(headers["content-length"])]
        except ValueError:
            raise SpamdError("bad Content-length in spamd reply") from None
    return SpamdReply(code, status, headers, body)


@dataclass(frozen=True, slots=True)
class TellResult:
    """What a TELL did: the message sets spamd says it added to or removed from."""

    did_set: tuple[str, ...]
    did_remove: tuple[str, ...]

    @property
    def changed(self) -> bool:
        """False when spamd already knew the message as this class (nothing learned)."""
        return bool(self.did_set or self.did_remove)


class SpamcClient:
    """Talk SPAMC/1.5 to one spamd.

    :param address: where spamd listens.
    :param user: sent as ``User:`` (spamd's per-user preferences and Bayes), "" = none.
    :param connect_timeout: seconds for the connect.
    :param timeout: seconds for one whole request and reply (``None``: no limit of our own).
    """

    def __init__(self, address: SocketAddress, *, user: str = "", connect_timeout: float = 5.0,
                 timeout: float | None = 60.0) -> None:
        if user and not _USER_RE.match(user):
            raise ValueError(f"spamd user {user!r}: printable ASCII without spaces only")
        self.address = address
        self.user = user
        self.connect_timeout = connect_timeout
        self.timeout = timeout

    async def request(self, command: str, message: bytes | None = None,
                      headers: Mapping[str, str] | None = None) -> SpamdReply:
        """Send one request and return the parsed reply.

        :raises SpamdError: on any connection, timeout or protocol failure.
        """
        lines = [f"{command} {PROTOCOL}"]
        if message is not None:
            lines.append(f"Content-length: {len(message)}")
        if self.user:
            lines.append(f"User: {self.user}")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (message or b"")
        limit = 2 * len(data) + 1024 * 1024
        try:
            raw = await asyncio.wait_for(self._exchange(data, limit), self.timeout)
        except TimeoutError:
            raise SpamdError(f"spamd at {self.address}: no reply within {self.timeout:g}s"
                             ) from None
        except BackendError as exc:
            raise SpamdError(f"spamd at {self.address}: {exc}") from None
        except OSError as exc:
            raise SpamdError(f"spamd at {self.address}: {exc.strerror or exc}") from None
        return parse_reply(raw)

    async def _exchange(self, data: bytes, limit: int) -> bytes:
        reader, writer = await open_stream(self.address, self.connect_timeout)
        try:
            writer.write(data)
            await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
            return await read_to_eof(reader, limit)
        finally:
            await close_quietly(writer)

    async def ping(self) -> bool:
        """Ask spamd for PONG; True when it answers."""
        reply = await self.request("PING")
        return reply.status.upper().endswith("PONG")

    async def check(self, message: bytes) -> SpamdReply:
        """CHECK: the verdict only (``is_spam``, ``score``, ``required``)."""
        return self._scored(await self.request("CHECK", message))

    async def symbols(self, message: bytes) -> tuple[SpamdReply, list[str]]:
        """SYMBOLS: the verdict and the names of the rules that hit."""
        reply = self._scored(await self.request("SYMBOLS", message))
        text = reply.body.decode("ascii", "replace").strip()
        return reply, [s.strip() for s in text.split(",") if s.strip()]

    async def report(self, message: bytes) -> tuple[SpamdReply, list[ReportLine]]:
        """REPORT: the verdict and the rule table with points and descriptions."""
        reply = self._scored(await self.request("REPORT", message))
        return reply, parse_report(reply.body.decode("utf-8", "replace"))

    async def process(self, message: bytes) -> SpamdReply:
        """PROCESS: the verdict and the message as spamd rewrote it (``body``)."""
        return self._scored(await self.request("PROCESS", message))

    async def tell(self, message: bytes, message_class: str, *, remove: bool = False
                   ) -> TellResult:
        """TELL: learn ``message`` as ``spam`` or ``ham`` (``remove``: forget it instead).

        spamd must run with ``--allow-tell``; otherwise it answers an error (``SpamdError``).
        """
        if message_class not in ("spam", "ham"):
            raise ValueError("message_class must be 'spam' or 'ham'")
        extra = {"Message-class": message_class, ("Remove" if remove else "Set"): "local"}
        reply = await self.request("TELL", message, extra)
        return TellResult(_csv(reply.headers.get("didset", "")),
                          _csv(reply.headers.get("didremove", "")))

    @staticmethod
    def _scored(reply: SpamdReply) -> SpamdReply:
        if not reply.has_score:
            raise SpamdError(f"spamd reply without Spam: header ({reply.status!r})")
        _ = reply.score  # validate now so callers never see a half-parsed reply
        return reply
