"""``headers``: header sanitation and limits, early in the pipeline.

Owns removal of headers outsiders must not set (forged spam verdicts, our status header,
Authentication-Results claiming our authserv-id), header count and size limits, and symbols
for duplicated singleton headers. The core's policy removes forged copies of its own headers
again at the end; this filter is the configurable, earlier version of that (the overlap is
intended). Deletions address occurrences highest first, so each index stays valid.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

from rohrpost.changes import Change, check_header_name, delete_header
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.message import Message
from rohrpost.options import OptionTable, option
from rohrpost.pipeline import in_networks
from rohrpost.result import Action, FilterResult, Symbol, Verdict

DEFAULT_REMOVE = ("X-Spam-Flag", "X-Spam-Status", "X-Spam-Score", "X-Spam-Level",
                  "X-Spam-Report", "X-Rohrpost-Result")
# RFC 5322 section 3.6: fields that may occur at most once
SINGLETONS = ("Date", "From", "Sender", "Reply-To", "To", "Cc", "Bcc", "Message-ID",
              "In-Reply-To", "References", "Subject")
DEFAULT_MESSAGES = MappingProxyType({"reject": "552 5.6.0 Headers too large",
                                     "tempfail": "452 4.6.0 Headers too large"})


def _h(text: str) -> dict[str, str]:
    return {"help": text}


class HeadersOptions(OptionTable):
    """Options of the ``headers`` filter."""

    remove: list[str] = option(default_factory=lambda: list(DEFAULT_REMOVE), metadata=_h(
        "headers deleted from every message (forged verdicts)"))
    remove_auth_results: bool = option(default=True, metadata=_h(
        "delete Authentication-Results that claim our authserv-id"))
    remove_from_untrusted: list[str] = option(default_factory=list, metadata=_h(
        "headers deleted unless the client authenticated or is in trusted_networks"))
    max_header_count: int = option(default=1000, metadata=_h("most header fields allowed"))
    max_header_size: int = option(default=64 * 1024, metadata=_h(
        "largest single header field, in bytes (folding included)"))
    max_headers_total: int = option(default=1024 * 1024, metadata=_h(
        "largest header block, in bytes"))
    action: Literal["reject", "tempfail", "score"] = option(default="reject", metadata=_h(
        "what exceeding a limit does; score adds the limit's symbol with `score`"))
    message: str = option(default="", metadata=_h(
        "reply line; default '552 5.6.0 Headers too large' (452 4.6.0 for tempfail)"))
    score: float = option(default=5.0, metadata=_h("score of a limit symbol when action=score"))
    singletons: list[str] = option(default_factory=lambda: list(SINGLETONS), metadata=_h(
        "headers RFC 5322 allows once; a repeat gives HEADER_DUPLICATE_<NAME>"))
    duplicate_score: float = option(default=1.0, metadata=_h("score of HEADER_DUPLICATE_*"))

    def __post_init__(self) -> None:
        for name in (*self.remove, *self.remove_from_untrusted, *self.singletons):
            check_header_name(name)
        if min(self.max_header_count, self.max_header_size, self.max_headers_total) < 1:
            raise ValueError("header limits must be at least 1")
        self.verdict()  # check the reply's code class at load

    def verdict(self) -> Verdict | None:
        """Return the verdict for a message over a limit (``None`` for action=score)."""
        if self.action == "score":
            if self.message:
                raise ValueError("message needs action = \"reject\" or \"tempfail\"")
            return None
        try:
            return Verdict.of(Action(self.action), self.message or DEFAULT_MESSAGES[self.action],
                              by="headers")
        except ValueError as exc:
            want = "5xx" if self.action == "reject" else "4xx"
            raise ValueError(f"action {self.action!r} needs a {want} message: {exc}") from None


def authserv_id(value: str) -> str:
    """Return the authserv-id of an Authentication-Results value (RFC 8601 section 2.2).

    The first token before ``;``, after comments; it may be a quoted-string.
    """
    text = value.lstrip()
    while text.startswith("("):
        text = _after_comment(text).lstrip()
    if text.startswith('"'):
        out, escaped = [], False
        for char in text[1:]:
            if escaped or char not in '\\"':
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                break
        return "".join(out)
    token = text.split(";", 1)[0].split("(", 1)[0].split()
    return token[0] if token else ""


def _after_comment(text: str) -> str:
    """Return what follows the (possibly nested) comment that ``text`` starts with."""
    depth = 0
    for pos, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return text[pos + 1 :]
    return ""


def deletions(msg: Message, names: list[str]) -> list[Change]:
    """Delete every occurrence of each of ``names`` (case-insensitive), highest first."""
    changes: list[Change] = []
    for lname in dict.fromkeys(n.lower() for n in names):
        found = msg.get_all(lname)
        changes.extend(delete_header(found[0].name, i) for i in range(len(found), 0, -1))
    return changes


class HeadersFilter(Filter):
    """Strip headers outsiders must not set; enforce header limits; flag duplicates."""

    name = "headers"
    description = "remove forged headers, header count/size limits, duplicate singletons"
    stage = Stage.EOM
    loop_free = True  # check() never awaits
    Options = HeadersOptions

    def __init__(self, options: HeadersOptions) -> None:
        super().__init__(options)
        self.opts = options
        self.limit_verdict = options.verdict()

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Check limits first (a verdict ends it), then collect removals and duplicates."""
        msg = mail.message
        if msg is None:
            return FilterResult()
        over = self.over_limits(msg)
        if over and self.limit_verdict is not None:
            reason = "; ".join(s.reason for s in over)
            verdict = Verdict(self.limit_verdict.action, self.limit_verdict.reply, reason,
                              self.name)
            return FilterResult(verdict, over)
        names = list(self.opts.remove)
        env = mail.envelope
        trusted = in_networks(env.client_ip, list(ctx.settings.get("trusted_networks", [])))
        if not (env.authenticated or trusted):
            names.extend(self.opts.remove_from_untrusted)
        changes = deletions(msg, names)
        if self.opts.remove_auth_results:
            ours = ctx.authserv_id.lower()
            found = msg.get_all("Authentication-Results")
            changes.extend(delete_header(found[i - 1].name, i) for i in range(len(found), 0, -1)
                           if authserv_id(found[i - 1].value).lower() == ours)
        return FilterResult(symbols=[*over, *self.duplicates(msg)], changes=changes)

    def over_limits(self, msg: Message) -> list[Symbol]:
        """Return one symbol per exceeded limit (scored only when action is ``score``)."""
        opts, out = self.opts, []
        score = opts.score if opts.action == "score" else 0.0
        if len(msg.headers) > opts.max_header_count:
            out.append(Symbol("HEADERS_TOO_MANY", score,
                              f"{len(msg.headers)} header fields > {opts.max_header_count}"))
        longest = max((h for h in msg.headers), key=lambda h: len(h.raw), default=None)
        if longest is not None and len(longest.raw) > opts.max_header_size:
            out.append(Symbol("HEADER_TOO_LONG", score, f"{longest.name} has {len(longest.raw)}"
                              f" bytes > {opts.max_header_size}"))
        total = len(msg.header_bytes)
        if total > opts.max_headers_total:
            out.append(Symbol("HEADERS_TOO_LARGE", score,
                              f"header block {total} bytes > {opts.max_headers_total}"))
        return out

    def duplicates(self, msg: Message) -> list[Symbol]:
        """Return ``HEADER_DUPLICATE_<NAME>`` for each singleton that occurs more than once."""
        out = []
        for name in dict.fromkeys(self.opts.singletons):
            count = len(msg.get_all(name))
            if count > 1:
                symbol = "HEADER_DUPLICATE_" + name.upper().replace("-", "_")
                out.append(Symbol(symbol, self.opts.duplicate_score, f"{count} {name} headers"))
        return out


FILTER = HeadersFilter
