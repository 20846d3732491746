"""Verdicts and results: what a filter says about a message.

Owns ``Action``, ``Reply`` (SMTP code, enhanced code, text), ``Verdict`` (a final action with
its reply), ``Symbol`` (a named finding with score and reason, Rspamd-style), ``AuthResult``
(one RFC 8601 method result) and ``FilterResult`` (everything one filter returns). The reply
classes check their code class on construction, so a "reject" can never carry a 4xx code and a
"tempfail" never a 5xx.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rohrpost.record import FrozenRecord

if TYPE_CHECKING:
    from rohrpost.changes import Change

_set = object.__setattr__


class Action(enum.Enum):
    """Final actions; ``ACCEPT`` means "stop filtering and pass the message on"."""

    ACCEPT = "accept"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    DISCARD = "discard"
    QUARANTINE = "quarantine"

    @property
    def stops(self) -> bool:
        """Every final action stops the pipeline."""
        return True


_REPLY_RE = re.compile(r"^\s*([245]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3}))?(?:\s+(.*))?$", re.S)
# control characters and Unicode line breaks become spaces (str.translate: no regex to compile)
_UNSAFE_CHARS = dict.fromkeys([*range(0x20), 0x7F, 0x2028, 0x2029, 0x85], " ")


def safe_text(text: str, limit: int = 400) -> str:
    """Make text safe for an SMTP reply or header: no control characters, bounded length."""
    return text.translate(_UNSAFE_CHARS)[:limit]


class Reply(FrozenRecord):
    """An SMTP reply: basic code, enhanced status code (RFC 3463) and text."""

    __slots__ = _fields = ("code", "enhanced", "text")
    code: int
    enhanced: str
    text: str

    def __init__(self, code: int, enhanced: str, text: str) -> None:
        if not 200 <= code <= 599:
            raise ValueError(f"SMTP reply code out of range: {code}")
        if enhanced and enhanced[0] != str(code)[0]:
            raise ValueError(f"enhanced code {enhanced} does not match {code}")
        _set(self, "code", code)
        _set(self, "enhanced", enhanced)
        _set(self, "text", safe_text(text))

    @classmethod
    def parse(cls, line: str, default: Reply) -> Reply:
        """Parse ``"550 5.7.1 Blocked"``; missing parts come from ``default``.

        :raises ValueError: when the line does not start with a 2xx/4xx/5xx code.
        """
        m = _REPLY_RE.match(line)
        if not m:
            raise ValueError(f"not an SMTP reply: {line!r} (expected e.g. '550 5.7.1 text')")
        code = int(m.group(1))
        enhanced = m.group(2) or (default.enhanced if default.code // 100 == code // 100
                                  else f"{code // 100}.0.0")
        return cls(code, enhanced, m.group(3) or default.text)

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}".replace("  ", " ").strip()


DEFAULT_REPLIES: Mapping[Action, Reply] = {
    Action.ACCEPT: Reply(250, "2.0.0", "Ok"),
    Action.REJECT: Reply(550, "5.7.1", "Message rejected by policy"),
    Action.TEMPFAIL: Reply(451, "4.7.1", "Try again later"),
    Action.DISCARD: Reply(250, "2.0.0", "Ok"),
    Action.QUARANTINE: Reply(250, "2.0.0", "Ok"),
}


class Verdict(FrozenRecord):
    """A final action with the reply the client gets; checked for code class."""

    __slots__ = _fields = ("action", "reply", "reason", "by")
    action: Action
    reply: Reply
    reason: str
    by: str

    def __init__(self, action: Action, reply: Reply, reason: str = "", by: str = "") -> None:
        want = {Action.REJECT: 5, Action.TEMPFAIL: 4}.get(action, 2)
        if reply.code // 100 != want:
            raise ValueError(f"{action.value} needs a {want}xx reply, got {reply.code}")
        _set(self, "action", action)
        _set(self, "reply", reply)
        _set(self, "reason", reason)
        _set(self, "by", by)

    @classmethod
    def of(cls, action: Action, message: str = "", reason: str = "", by: str = "") -> Verdict:
        """Build a verdict from an action and an optional reply line like ``550 5.7.1 text``."""
        default = DEFAULT_REPLIES[action]
        reply = Reply.parse(message, default) if message else default
        return cls(action, reply, reason or reply.text, by)


class Symbol(FrozenRecord):
    """A named finding: ``name`` with ``score`` and a human ``reason`` (Rspamd's idea)."""

    __slots__ = _fields = ("name", "score", "reason")
    name: str
    score: float
    reason: str

    def __init__(self, name: str, score: float = 0.0, reason: str = "") -> None:
        _set(self, "name", name)
        _set(self, "score", score)
        _set(self, "reason", reason)


class AuthResult(FrozenRecord):
    """One RFC 8601 result, e.g. ``dkim=pass header.d=example.org header.s=sel``."""

    __slots__ = _fields = ("method", "result", "reason", "props")
    method: str
    result: str
    reason: str
    props: Sequence[tuple[str, str]]

    def __init__(self, method: str, result: str, reason: str = "",
                 props: Sequence[tuple[str, str]] = ()) -> None:
        _set(self, "method", method)
        _set(self, "result", result)
        _set(self, "reason", reason)
        _set(self, "props", props)

    def render(self) -> str:
        """Render as it appears inside Authentication-Results (values made header-safe)."""
        parts = [f"{self.method}={self.result}"]
        if self.reason:
            reason = safe_text(self.reason, 200).replace("\\", "\\\\").replace('"', '\\"')
            parts.append(f'reason="{reason}"')
        for key, value in self.props:
            parts.append(f"{key}={_ptype_value(value)}")
        return " ".join(parts)


def _ptype_value(value: str) -> str:
    value = safe_text(value, 200)
    if value and re.fullmatch(r"[A-Za-z0-9._@+=/-]+", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FilterResult(FrozenRecord):
    """Everything one filter returns: verdict, symbols, changes, auth results, published facts.

    ``facts`` lets later filters read typed results without matching symbol names (e.g. the
    DMARC filter reads the SPF result); keys are namespaced by the filter name.
    """

    __slots__ = _fields = ("verdict", "symbols", "changes", "auth", "facts")
    verdict: Verdict | None
    symbols: Sequence[Symbol]
    changes: Sequence[Change]
    auth: Sequence[AuthResult]
    facts: Mapping[str, object]

    def __init__(self, verdict: Verdict | None = None, symbols: Sequence[Symbol] = (),
                 changes: Sequence[Change] = (), auth: Sequence[AuthResult] = (),
                 facts: Mapping[str, object] | None = None) -> None:
        _set(self, "verdict", verdict)
        _set(self, "symbols", symbols)
        _set(self, "changes", changes)
        _set(self, "auth", auth)
        _set(self, "facts", {} if facts is None else facts)

    @property
    def score(self) -> float:
        """Sum of the symbols' scores."""
        return sum(s.score for s in self.symbols)


NOTHING = FilterResult()
