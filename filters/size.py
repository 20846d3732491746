"""``size``: refuse messages over a fixed size, and score large ones.

Owns the size check. It runs at end of message and looks at two numbers: the size the client
declared with the ESMTP ``SIZE=`` parameter of MAIL FROM (RFC 1870), when the mode passes
``mail_params``, and the real size of the message. Either one over ``max_size`` gives the
verdict, so a lying client is caught by the real size. One stage keeps the filter simple; the
MTA's own limit (Postfix ``message_size_limit``) is what refuses oversized mail before DATA.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.options import OptionTable, option
from rohrpost.result import Action, FilterResult, Symbol, Verdict

# Postfix's default message_size_limit, so an unconfigured filter agrees with an unconfigured MTA
DEFAULT_MAX_SIZE = 10_240_000
DEFAULT_MESSAGES = MappingProxyType({
    "reject": "552 5.3.4 Message size exceeds fixed limit",
    "tempfail": "452 4.3.4 Message size exceeds fixed limit",
})


class SizeOptions(OptionTable):
    """Options of the ``size`` filter."""

    max_size: int = option(default=DEFAULT_MAX_SIZE, metadata={
        "help": "largest message accepted, in bytes (declared SIZE= or real size)"})
    action: Literal["reject", "tempfail"] = option(default="reject", metadata={
        "help": "what happens to a message over max_size"})
    message: str = option(default="", metadata={
        "help": "reply line; default '552 5.3.4 Message size exceeds fixed limit' "
                "(452 4.3.4 for tempfail)"})
    score_over: int | None = option(default=None, metadata={
        "help": "soft limit in bytes: larger messages get the symbol SIZE_LARGE"})
    score: float = option(default=1.0, metadata={"help": "score of SIZE_LARGE"})

    def __post_init__(self) -> None:
        if self.max_size <= 0:
            raise ValueError("max_size must be a positive number of bytes")
        if self.score_over is not None and self.score_over <= 0:
            raise ValueError("score_over must be a positive number of bytes")
        self.verdict()  # check the reply's code class at load

    def verdict(self) -> Verdict:
        """Return the verdict for an oversized message, built from ``action`` and ``message``."""
        line = self.message or DEFAULT_MESSAGES[self.action]
        try:
            return Verdict.of(Action(self.action), line, by="size")
        except ValueError as exc:
            want = "5xx" if self.action == "reject" else "4xx"
            raise ValueError(f"action {self.action!r} needs a {want} message: {exc}") from None


def declared_size(params: tuple[str, ...]) -> int | None:
    """Return the ``SIZE=`` value among ESMTP MAIL parameters, or ``None``."""
    for param in params:
        key, _sep, value = param.partition("=")
        if key.strip().upper() == "SIZE" and value.strip().isdigit():
            return int(value.strip())
    return None


class SizeFilter(Filter):
    """Reject (or tempfail) mail over ``max_size``; score mail over ``score_over``."""

    name = "size"
    description = "message size limit (declared SIZE= and real size) with a soft score"
    stage = Stage.EOM
    loop_free = True  # check() never awaits
    Options = SizeOptions

    def __init__(self, options: SizeOptions) -> None:
        super().__init__(options)
        self.opts = options
        self.verdict = options.verdict()

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Compare the declared and the real size with the limits."""
        opts = self.opts
        declared = declared_size(mail.envelope.mail_params)
        real = mail.message.size if mail.message is not None else None
        facts = {"size.declared": declared, "size.bytes": real}
        for what, size in (("declared SIZE", declared), ("size", real)):
            if size is not None and size > opts.max_size:
                reason = f"{what} {size} > limit {opts.max_size}"
                verdict = Verdict(self.verdict.action, self.verdict.reply, reason, self.name)
                return FilterResult(verdict, [Symbol("SIZE_EXCEEDED", 0.0, reason)], facts=facts)
        size = real if real is not None else declared
        if opts.score_over is not None and size is not None and size > opts.score_over:
            reason = f"size {size} > {opts.score_over}"
            return FilterResult(symbols=[Symbol("SIZE_LARGE", opts.score, reason)], facts=facts)
        return FilterResult(facts=facts)


FILTER = SizeFilter
