"""``ratelimit``: sliding-window limits per authenticated user, sender, client IP or domain.

Owns the rate decision and its state in ``ctx.store`` (sliding windows under ``rate:``). Each
``[[filter.bucket]]`` counts messages or recipients for one key kind in ``window`` seconds; when
the count would pass ``limit``, its action applies: tempfail (default), reject, or a score.
All buckets are checked first and a message is counted only when none refuses it, so a client
retrying a refused message does not extend its own block. The check and the count are two
store calls: concurrent messages may overshoot a limit by the number in flight.

Stage: RCPT (default) counts and refuses per recipient, so the recipients under the limit still
get through; ``count = "messages"`` counts a message at its first recipient. ``stage = "eom"``
counts a whole message once (recipients: their number). Written above all for outgoing mail of
a compromised account: ``key = "auth_user"``, 200 recipients per hour (docs/spam.md).
Store failures raise ``StoreError``; ``on_error`` decides (``"skip"`` lets mail through).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Literal

from rohrpost.filters._greykeys import client_network, digest, normalize_sender

from rohrpost.envelope import domain_of
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.result import Action, FilterResult, Symbol, Verdict

KeyKind = Literal["auth_user", "sender", "client_ip", "recipient_domain"]
DEFAULT_MESSAGES = {"tempfail": "451 4.7.1 Rate limit exceeded, try again later",
                    "reject": "550 5.7.1 Rate limit exceeded"}


@dataclass(frozen=True)
class Bucket:
    """One ``[[filter.bucket]]``: ``limit`` per ``window`` seconds for one key kind."""

    key: KeyKind = field(metadata={"help": "auth_user | sender | client_ip | recipient_domain"})
    limit: int = field(metadata={"help": "most messages or recipients inside the window"})
    window: int = field(default=3600, metadata={"help": "window length in seconds"})
    count: Literal["messages", "recipients"] = field(default="messages", metadata={
        "help": "what is counted"})
    action: Literal["tempfail", "reject", "score"] = field(default="tempfail", metadata={
        "help": "when over the limit: tempfail, reject, or add a score"})
    score: float = field(default=5.0, metadata={"help": "score when action = \"score\""})
    symbol: str = field(default="", metadata={"help": "default RATELIMIT_<KEY>"})
    message: str = field(default="", metadata={"help": "reply line for tempfail/reject"})
    name: str = field(default="", metadata={
        "help": "state name; buckets with the same name share counts (default: key+window)"})

    def __post_init__(self) -> None:
        if self.limit < 0 or self.window < 1:
            raise ValueError("limit must be >= 0 and window >= 1 second")
        self.verdict("x")

    @property
    def symbol_name(self) -> str:
        """Name the symbol added when this bucket is exceeded."""
        return self.symbol or f"RATELIMIT_{self.key.upper()}"

    @property
    def state_name(self) -> str:
        """Name the part of the store key that identifies this bucket."""
        return self.name or f"{self.key}:{self.count}:{self.window}"

    def verdict(self, key: str) -> Verdict | None:
        """Return the verdict when exceeded, or None for ``action = "score"``."""
        if self.action == "score":
            return None
        line = self.message or DEFAULT_MESSAGES[self.action]
        return Verdict.of(Action(self.action), line, f"{self.key} {key} over {self.limit}"
                                                     f"/{self.window}s", "ratelimit")


@dataclass(frozen=True)
class RatelimitOptions:
    """Options of the ``ratelimit`` filter."""

    bucket: builtins.list[Bucket] = field(default_factory=builtins.list, metadata={
        "help": "[[filter.bucket]] entries"})
    stage: Literal["rcpt", "eom"] = field(default="rcpt", metadata={
        "help": "rcpt: count and refuse per recipient; eom: per message"})
    ipv6_prefix: int = field(default=64, metadata={
        "help": "client_ip: IPv6 clients are counted per network of this size"})

    def __post_init__(self) -> None:
        if not self.bucket:
            raise ValueError("configure at least one [[filter.bucket]]")
        if not 0 <= self.ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be 0..128")


def key_values(bucket: Bucket, mail: Mail, rcpts: list[str], ipv6_prefix: int) -> dict[str, int]:
    """Map key value -> weight for this bucket ({} when the key does not apply)."""
    env = mail.envelope
    per_message = 1 if bucket.count == "messages" else len(rcpts)
    if bucket.key == "recipient_domain":
        out: dict[str, int] = {}
        for rcpt in rcpts:
            domain = domain_of(rcpt)
            if domain:
                out[domain] = 1 if bucket.count == "messages" else out.get(domain, 0) + 1
        return out
    if bucket.key == "auth_user":
        value = env.auth_user.lower()
    elif bucket.key == "sender":
        value = normalize_sender(env.mail_from, fold_digits=False)
    else:
        value = client_network(env.client_ip, 32, ipv6_prefix)
    return {value: per_message} if value and per_message else {}


class RatelimitFilter(Filter):
    """Count messages or recipients in sliding windows and refuse above the limits."""

    name = "ratelimit"
    description = "sliding-window rate limits per auth user, sender, client IP, recipient domain"
    stage = Stage.RCPT
    Options = RatelimitOptions

    def __new__(cls, options: RatelimitOptions) -> RatelimitFilter:
        """With ``stage = "eom"`` the instance is a ``RatelimitEomFilter``."""
        return super().__new__(RatelimitEomFilter if options.stage == "eom" else cls)

    def __init__(self, options: RatelimitOptions) -> None:
        super().__init__(options)
        self.opts = options

    def recipients(self, mail: Mail) -> list[str]:
        """Return the recipients this check counts (RCPT: the current one)."""
        return [mail.rcpt] if mail.rcpt else []

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Check every bucket, then count the message in all of them unless one refused."""
        rcpts = self.recipients(mail)
        first_rcpt = not mail.envelope.rcpts or mail.envelope.rcpts[0] == mail.rcpt
        now = ctx.now()
        plan: list[tuple[Bucket, str, int]] = []
        symbols: list[Symbol] = []
        verdict: Verdict | None = None
        for bucket in self.opts.bucket:
            if self.stage == Stage.RCPT and bucket.count == "messages" and not first_rcpt:
                continue  # at RCPT a message is counted once, at its first recipient
            for value, weight in key_values(bucket, mail, rcpts, self.opts.ipv6_prefix).items():
                key = f"rate:{bucket.state_name}:{digest(value)}"
                used = await ctx.store.window_count(key, now, bucket.window)
                if used + weight <= bucket.limit:
                    plan.append((bucket, key, weight))
                    continue
                reason = f"{bucket.key} {value}: {used}+{weight} > {bucket.limit}/{bucket.window}s"
                ctx.log.warning("ratelimit: %s", reason)
                symbols.append(Symbol(bucket.symbol_name,
                                      bucket.score if bucket.action == "score" else 0.0, reason))
                if bucket.action == "score":
                    plan.append((bucket, key, weight))
                elif verdict is None:
                    verdict = bucket.verdict(value)
        if verdict is None:
            for bucket, key, weight in plan:
                await ctx.store.window_add(key, now, bucket.window, weight)
        return FilterResult(verdict=verdict, symbols=symbols,
                            facts={"ratelimit.exceeded": [s.name for s in symbols]})


class RatelimitEomFilter(RatelimitFilter):
    """``ratelimit`` with ``stage = "eom"``: each message counted once, with all recipients."""

    stage = Stage.EOM

    def recipients(self, mail: Mail) -> list[str]:
        """Return every recipient of the message."""
        return list(mail.envelope.rcpts)


FILTER = RatelimitFilter
