"""``received``: hop count and mail-loop detection from Received headers; optionally add ours.

Owns the Received checks. Too many Received headers means the message is looping between
hosts (or was built to look that way); Received headers whose ``by`` clause names this host more
than ``max_self`` times means it came back to us. ``add_received`` writes our own trace header
for modes where no MTA wrote one (pipe, fetch); in milter mode the MTA writes its own.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime

from rohrpost.changes import InsertHeader
from rohrpost.envelope import Envelope
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.message import Message
from rohrpost.options import OptionTable, option
from rohrpost.result import Action, FilterResult, Symbol, Verdict

HOPS_REPLY = "554 5.4.6 Too many hops"
LOOP_REPLY = "554 5.4.6 Mail loop detected"
_BY_RE = re.compile(r"\bby\s+([^\s;()]+)", re.IGNORECASE)
_UNSAFE_RE = r"[^A-Za-z0-9.\-_:@+=]"  # compiled on first use (re's cache): add_received only


class ReceivedOptions(OptionTable):
    """Options of the ``received`` filter.

    ``max_hops`` defaults to 30, Exim's ``received_headers_max``: between sendmail's
    ``MaxHopCount`` (25) and Postfix's ``hopcount_limit`` (50), and far above the 10-15 hops
    of real mail through relays, list servers and forwarders. ``max_self`` defaults to 3: our
    own Received may legitimately appear once (pipe mode after the MTA delivered) or twice
    (after a content filter re-injection) before a repeat means a loop.
    """

    max_hops: int = option(default=30, metadata={
        "help": "reject (554 5.4.6) when there are more Received headers than this"})
    max_self: int = option(default=3, metadata={
        "help": "reject as a loop when more Received headers than this name us in 'by'"})
    self_names: list[str] = option(default_factory=list, metadata={
        "help": "other names of this host that count as us (default: the hostname only)"})
    add_received: bool = option(default=False, metadata={
        "help": "insert our own Received header at the top (pipe and fetch modes)"})

    def __post_init__(self) -> None:
        if self.max_hops < 1 or self.max_self < 1:
            raise ValueError("max_hops and max_self must be at least 1")


def by_host(value: str) -> str:
    """Return the host of the ``by`` clause of a Received value, lower-cased, or ``""``."""
    found = _BY_RE.search(value)
    return found.group(1).lower().rstrip(".") if found else ""


def _token(text: str, default: str = "unknown") -> str:
    """Make a client-supplied name safe inside a Received header (no comments, no ';')."""
    return re.sub(_UNSAFE_RE, "?", text.strip())[:255] or default


def received_value(env: Envelope, hostname: str, when: float) -> str:
    """Render our Received value, RFC 5321 section 4.4 style, dated by the injected clock."""
    from email.utils import format_datetime  # only when a Received header is added

    parts = []
    if env.client_ip or env.helo:
        part = f"from {_token(env.helo)}"
        if env.client_ip:
            try:
                ip = str(ipaddress.ip_address(env.client_ip.strip("[]").removeprefix("IPv6:")))
            except ValueError:
                ip = _token(env.client_ip)
            ip = f"IPv6:{ip}" if ":" in ip else ip
            part += f" ({_token(env.client_name)} [{ip}])"
        parts.append(part)
    parts.append(f"by {_token(hostname, 'localhost')} (rohrpost)")
    if env.client_ip:
        # RFC 3848: S for TLS, A for authenticated
        parts.append("with ESMTP" + ("S" if env.tls else "") + ("A" if env.authenticated else ""))
    if env.queue_id:
        parts.append(f"id {_token(env.queue_id)}")
    if len(env.rcpts) == 1:  # naming one of many recipients would leak the others
        parts.append(f"for <{_token(env.rcpts[0], '')}>")
    return " ".join(parts) + "; " + format_datetime(datetime.fromtimestamp(when, UTC))


class ReceivedFilter(Filter):
    """Reject looping mail; optionally add our Received header."""

    name = "received"
    description = "hop count limit, mail-loop detection, optional Received header"
    stage = Stage.EOM
    loop_free = True  # check() never awaits
    Options = ReceivedOptions

    def __init__(self, options: ReceivedOptions) -> None:
        super().__init__(options)
        self.opts = options

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Count Received headers and ours among them; decide, or add ours."""
        msg = mail.message
        if msg is None:
            return FilterResult()
        found = self.loop_verdict(ctx, msg)
        if found is not None:
            symbol, verdict = found
            return FilterResult(verdict, [symbol])
        if not self.opts.add_received:
            return FilterResult()
        value = received_value(mail.envelope, ctx.hostname, ctx.now())
        return FilterResult(changes=[InsertHeader(0, "Received", value)])

    def loop_verdict(self, ctx: Context, msg: Message) -> tuple[Symbol, Verdict] | None:
        """Return the symbol and reject verdict for a loop or too many hops, or ``None``."""
        received = msg.get_all("Received")
        names = {n.lower().rstrip(".") for n in (ctx.hostname, *self.opts.self_names) if n}
        ours = sum(1 for h in received if by_host(h.value) in names)
        if ours > self.opts.max_self:
            reason = f"{ours} Received headers by us (max {self.opts.max_self})"
            return (Symbol("RECEIVED_LOOP", 0.0, reason),
                    Verdict.of(Action.REJECT, LOOP_REPLY, reason, self.name))
        if len(received) > self.opts.max_hops:
            reason = f"{len(received)} hops (max {self.opts.max_hops})"
            return (Symbol("RECEIVED_TOO_MANY", 0.0, reason),
                    Verdict.of(Action.REJECT, HOPS_REPLY, reason, self.name))
        return None


FILTER = ReceivedFilter
