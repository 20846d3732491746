"""``spamassassin``: score a message with SpamAssassin's spamd and explain which rules hit.

Owns the filter's options and the mapping of a spamd reply to symbols and facts. Talking
SPAMC/1.5 is ``filters._spamc``'s job; thresholds and the X-Spam-* headers are the core
policy's (``[actions]``), which sees our score as part of the summed pipeline score.

Scores without double counting: in the default ``detail = "report"`` mode each SpamAssassin rule
that hit becomes a symbol ``SA_<RULE>`` carrying its points (times ``score_factor``), and the
symbol ``SPAMASSASSIN`` carries only what the rule rows do not account for (the rounding of the
one-decimal table, or the whole score when a custom report template has no table). The symbols
of this filter therefore always add up to spamd's total times ``score_factor``. In ``symbols``
mode the rule symbols carry 0 and ``SPAMASSASSIN`` the total; in ``check`` mode there is only
``SPAMASSASSIN``. A failure (spamd down, timeout, error reply) raises, so the pipeline's
``on_error`` applies (tempfail by default). The filter never gives a verdict of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Literal

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.message import Message
from rohrpost.options import OptionError
from rohrpost.result import NOTHING, FilterResult, Symbol

from ._scanlimit import over_size
from ._sockets import SocketAddress
from ._spamc import DEFAULT_PORT, SpamcClient, SpamdReply

SKIPPED = "SPAMASSASSIN_SKIPPED_SIZE"
TOTAL = "SPAMASSASSIN"


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class SpamAssassinOptions:
    """Options of the ``spamassassin`` filter."""

    host: str = field(default="127.0.0.1", metadata=_h("spamd host (TCP)"))
    port: int = field(default=DEFAULT_PORT, metadata=_h("spamd port (TCP)"))
    socket: str = field(default="", metadata=_h("'unix:/path' or 'tcp:HOST:PORT'; wins over "
                                                "host/port"))
    user: str = field(default="", metadata=_h("User: sent to spamd (per-user prefs, Bayes)"))
    max_size: int = field(default=512000, metadata=_h(
        "bytes; larger messages are not sent (symbol SPAMASSASSIN_SKIPPED_SIZE, score 0)"))
    connect_timeout: float = field(default=5.0, metadata=_h("seconds to connect to spamd"))
    read_timeout: float = field(default=120.0, metadata=_h(
        "seconds for a whole request; the pipeline's timeout = usually cuts first"))
    score_factor: float = field(default=1.0, metadata=_h("multiply SpamAssassin's points"))
    detail: Literal["report", "symbols", "check"] = field(default="report", metadata=_h(
        "report: rules with points; symbols: rule names, total in SPAMASSASSIN; check: total"))
    add_received: bool = field(default=True, metadata=_h(
        "prepend a Received header built from the envelope (as spamass-milter does), so "
        "SpamAssassin sees the connecting client; only when the client IP is known"))

    def __post_init__(self) -> None:
        if self.max_size <= 0:
            raise ValueError("max_size must be positive")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be positive")


class SpamAssassin(Filter):
    """Ask spamd about the message; publish SpamAssassin's score and rules as symbols."""

    name = "spamassassin"
    description = "SpamAssassin's spamd score and rule hits as symbols (SPAMC/1.5)."
    stage = Stage.EOM
    Options = SpamAssassinOptions

    def __init__(self, options: SpamAssassinOptions) -> None:
        super().__init__(options)
        try:
            address = (SocketAddress.parse(options.socket, DEFAULT_PORT) if options.socket
                       else SocketAddress(host=options.host, port=options.port))
            self.client = SpamcClient(address, user=options.user,
                                      connect_timeout=options.connect_timeout,
                                      timeout=options.read_timeout)
        except ValueError as exc:
            raise OptionError("socket" if options.socket else "user", str(exc)) from None
        self.opts = options

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Send the message to spamd (unless too large) and map the reply to symbols."""
        message = mail.message
        if message is None:
            return NOTHING
        if (skipped := over_size(message, self.opts.max_size, SKIPPED, "spamassassin")) is not None:
            return skipped
        data = message.without_from_line()
        if self.opts.add_received:
            data = received_header(mail, ctx.hostname, message, ctx.now()) + data
        symbols: list[Symbol]
        if self.opts.detail == "report":
            reply, rows = await self.client.report(data)
            rules = [(r.rule, r.points, f"{r.points:g} pts: {r.description}") for r in rows]
        elif self.opts.detail == "symbols":
            reply, names = await self.client.symbols(data)
            rules = [(n, 0.0, "SpamAssassin rule (points in SPAMASSASSIN)") for n in names]
        else:
            reply, rules = await self.client.check(data), []
        symbols = self.symbols(reply, rules)
        ctx.log.debug("spamd: %s score=%g required=%g rules=%d", reply.status, reply.score,
                      reply.required, len(rules))
        facts = {"spamassassin.score": reply.score, "spamassassin.required": reply.required,
                 "spamassassin.is_spam": reply.is_spam,
                 "spamassassin.rules": tuple(r[0] for r in rules)}
        return FilterResult(symbols=symbols, facts=facts)

    def symbols(self, reply: SpamdReply, rules: list[tuple[str, float, str]]) -> list[Symbol]:
        """Rule symbols plus ``SPAMASSASSIN`` with the rest, so that they sum to the total."""
        factor = self.opts.score_factor
        out = [Symbol(f"SA_{name}", round(points * factor, 3), reason)
               for name, points, reason in rules]
        rest = round((reply.score - sum(points for _n, points, _r in rules)) * factor, 3)
        verdict = "spam" if reply.is_spam else "not spam"
        out.append(Symbol(TOTAL, rest, f"SpamAssassin {reply.score:g}/{reply.required:g} "
                                       f"({verdict} by spamd's own threshold)"))
        return out


def received_header(mail: Mail, hostname: str, message: Message, now: float) -> bytes:
    """Build a Received header for spamd from the envelope (b"" without a client IP)."""
    env = mail.envelope
    if not env.client_ip:
        return b""
    eol = "\r\n" if message.crlf else "\n"
    helo = _token(env.helo) or "unknown"
    rdns = _token(env.client_name) or "unknown"
    qid = f" id {_token(env.queue_id)}" if env.queue_id else ""
    auth = " (authenticated)" if env.auth_user else ""
    text = (f"Received: from {helo} ({rdns} [{_token(env.client_ip)}]){auth}{eol}"
            f"\tby {_token(hostname) or 'localhost'} (rohrpost) with ESMTP{qid};{eol}"
            f"\t{formatdate(now)}{eol}")
    return text.encode("utf-8", "replace")


def _token(value: str) -> str:
    """Make a value safe inside a header line: printable ASCII without spaces, bounded."""
    return "".join(c for c in value if "!" <= c <= "~" and c not in "()[]")[:255]


FILTER = SpamAssassin
