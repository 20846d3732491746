"""``rules``: local policy rules in TOML, what MIMEDefang and procmail users write.

Owns the ``Rule`` option table and the filter that evaluates rules in order. A rule has
conditions (header tests, envelope, client, body, size; all given ones must hold) and
consequences (a symbol with a score, a final action, header and recipient changes). Regexes,
lists and reply lines are checked when the configuration loads, so a bad rule never reaches a
message. Each rule sees the message as it came in, not the changes of earlier rules or filters.

The filter runs at end of message even for rules that only look at the envelope: one stage keeps
the semantics simple (rules run in order, first final action wins). Catastrophic regex input is
bounded by capping what is matched (64 KB per header value, ``body_max`` of body text), since
``re`` has no timeout.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from rohrpost.changes import Change
from rohrpost.envelope import Envelope
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.message import Message
from rohrpost.options import OptionTable, option
from rohrpost.result import NOTHING, FilterResult, Symbol, Verdict, safe_text

from ._ruleparts import (
    MAX_HEADER_MATCH,
    HeaderValue,
    check_address,
    check_template,
    compile_patterns,
    consequences,
    load_members,
    make_verdict,
)

DEFAULT_BODY_MAX = 1024 * 1024
_RULE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HEADER_TESTS = ("regex", "equals", "contains", "exists", "count_min", "count_max", "in_list",
                 "values")
_ACTIONS = ("score", "action", "add_header", "remove_header", "change_header", "add_recipient",
            "delete_recipient", "redirect", "stop")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ActionName = Literal["reject", "tempfail", "discard", "quarantine", "accept"]


def _h(text: str) -> dict[str, str]:
    return {"help": text}


class Rule(OptionTable):
    """One rule: conditions (all must hold; none means "always") and what a match does."""

    name: str = option(metadata=_h("symbol name, also {rule} in header values"))
    header: str = option(default="", metadata=_h("header the header tests look at"))
    regex: str | None = option(default=None, metadata=_h("regex searched in any occurrence"))
    equals: str | None = option(default=None, metadata=_h("any occurrence equals (no case)"))
    contains: str | None = option(default=None, metadata=_h("any occurrence contains (no case)"))
    exists: bool | None = option(default=None, metadata=_h("header present / absent"))
    count_min: int | None = option(default=None, metadata=_h("at least this many occurrences"))
    count_max: int | None = option(default=None, metadata=_h("at most this many occurrences"))
    in_list: str = option(default="", metadata=_h("file, one value a line; value or address in it"))
    values: list[str] = option(default_factory=list, metadata=_h("inline list, like in_list"))
    envelope_from: str | None = option(default=None, metadata=_h("regex on MAIL FROM"))
    envelope_to: str | None = option(default=None, metadata=_h("regex; any recipient matches"))
    client_ip: list[str] = option(default_factory=list, metadata=_h("client in these CIDRs"))
    helo: str | None = option(default=None, metadata=_h("regex on HELO/EHLO"))
    auth_user: str | None = option(default=None, metadata=_h("regex on the SASL user"))
    authenticated: bool | None = option(default=None, metadata=_h("client authenticated or not"))
    body: str | None = option(default=None, metadata=_h("regex on the decoded text parts"))
    body_max: int = option(default=DEFAULT_BODY_MAX, metadata=_h("characters of text for body"))
    size_over: int | None = option(default=None, metadata=_h("message larger than (bytes)"))
    size_under: int | None = option(default=None, metadata=_h("message smaller than (bytes)"))
    negate: bool = option(default=False, metadata=_h("written `not = true`: negate the rule"))
    score: float | None = option(default=None, metadata=_h("score of the symbol NAME"))
    action: ActionName | None = option(default=None, metadata=_h("final action; first wins"))
    message: str = option(default="", metadata=_h("reply line, e.g. '550 5.7.1 text'"))
    add_header: HeaderValue | None = option(default=None, metadata=_h("{name, value} to add"))
    remove_header: str = option(default="", metadata=_h("delete every occurrence"))
    change_header: HeaderValue | None = option(default=None, metadata=_h("set first {name}"))
    add_recipient: str = option(default="", metadata=_h("add this envelope recipient"))
    delete_recipient: str = option(default="", metadata=_h("remove this envelope recipient"))
    redirect: str = option(default="", metadata=_h("replace all recipients with this one"))
    stop: bool = option(default=False, metadata=_h("evaluate no further rules after a match"))
    # compiled at load by __post_init__ (not options: init=False)
    patterns: dict[str, re.Pattern[str]] = option(default_factory=dict, init=False, repr=False)
    networks: tuple[Network, ...] = option(default=(), init=False, repr=False)
    members: frozenset[str] = option(default=frozenset(), init=False, repr=False)
    verdict: Verdict | None = option(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not _RULE_NAME_RE.match(self.name):
            raise ValueError(f"{where}: name must be 1-64 of A-Z a-z 0-9 _ . -")
        tests = [k for k in _HEADER_TESTS if getattr(self, k) not in (None, "", [])]
        if tests and not self.header:
            raise ValueError(f"{where}: {', '.join(tests)} need header = \"Name\"")
        if self.header and not tests:
            object.__setattr__(self, "exists", True)  # a bare header test means "present"
        if not any(getattr(self, k) not in (None, "", False) for k in _ACTIONS):
            raise ValueError(f"{where}: does nothing; give score, action, a change or stop")
        object.__setattr__(self, "patterns", compile_patterns(self, where))
        object.__setattr__(self, "members", load_members(self.in_list, self.values, where))
        object.__setattr__(self, "verdict", make_verdict(self.action, self.message, where))
        nets = []
        for net in self.client_ip:
            try:
                nets.append(ipaddress.ip_network(net, strict=False))
            except ValueError as exc:
                raise ValueError(f"{where}: client_ip: {exc}") from None
        object.__setattr__(self, "networks", tuple(nets))
        for hv in (self.add_header, self.change_header):
            if hv is not None:
                check_template(hv.value, where)
        for addr in (self.add_recipient, self.delete_recipient, self.redirect):
            check_address(addr, where)


class RuleSpec(Rule, init=False, repr=False, eq=False):
    """``[[filter.rule]]`` as written: ``Rule`` plus the key ``not``.

    ``not`` is a Python keyword, so no ordinary field can carry it and the core's
    option builder maps keys to field names 1:1. This subclass declares the field by hand (no
    generated ``__init__``/``__repr__``/``__eq__``, which would need ``self.not``) and hands the
    value on to ``Rule.negate``.
    """

    __annotations__ = {"not": "bool"}
    vars()["not"] = False

    def __init__(self, **kwargs: Any) -> None:
        negate = bool(kwargs.pop("not", False)) or bool(kwargs.pop("negate", False))
        Rule.__init__(self, negate=negate, **kwargs)


class RulesOptions(OptionTable):
    """Options of the ``rules`` filter: the rules, in order."""

    rule: list[RuleSpec] = option(default_factory=list, metadata=_h(
        "[[filter.rule]] tables, evaluated in order; first final action wins"))

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for rule in self.rule:
            if rule.name in seen:
                raise ValueError(f"two rules are called {rule.name!r}")
            seen.add(rule.name)


def _short(value: str) -> str:
    return repr(safe_text(value, 60))


def _header_reasons(rule: Rule, msg: Message) -> list[str] | None:
    """Reasons the header tests hold, or ``None`` when one fails."""
    if not rule.header:
        return []
    found = msg.get_all(rule.header)
    count, out = len(found), []
    if rule.exists is not None:
        if (count > 0) != rule.exists:
            return None
        out.append(f"{rule.header} {'present' if rule.exists else 'absent'}")
    if (rule.count_min is not None and count < rule.count_min) or (
            rule.count_max is not None and count > rule.count_max):
        return None
    if rule.count_min is not None or rule.count_max is not None:
        out.append(f"{rule.header} count {count}")
    values = [h.decoded[:MAX_HEADER_MATCH] for h in found]
    regex = rule.patterns.get("regex")
    tests: list[tuple[str, Any]] = []
    if regex is not None:
        tests.append((f"matches {regex.pattern!r}", lambda v: regex.search(v) is not None))
    if rule.equals is not None:
        want = rule.equals.strip().casefold()
        tests.append((f"equals {rule.equals!r}", lambda v: v.strip().casefold() == want))
    if rule.contains is not None:
        part = rule.contains.casefold()
        tests.append((f"contains {rule.contains!r}", lambda v: part in v.casefold()))
    if rule.members:
        tests.append(("is listed", lambda v: _listed(v, rule.members)))
    for text, test in tests:
        hit = next((v for v in values if test(v)), None)
        if hit is None:
            return None
        out.append(f"{rule.header} {text} ({_short(hit)})")
    return out


def _listed(value: str, members: frozenset[str]) -> bool:
    """Tell whether the whole value or its address is a member."""
    value = value.strip().casefold()
    if value in members:
        return True
    from email.utils import parseaddr  # only when the plain value is not a member

    return parseaddr(value)[1] in members


def _envelope_reasons(rule: Rule, env: Envelope) -> list[str] | None:
    """Reasons the envelope and client conditions hold, or ``None`` when one fails."""
    out = []
    for key, subjects in (("envelope_from", [env.mail_from]), ("envelope_to", list(env.rcpts)),
                          ("helo", [env.helo]), ("auth_user", [env.auth_user])):
        pattern = rule.patterns.get(key)
        if pattern is None:
            continue
        hit = next((s for s in subjects if pattern.search(s[:MAX_HEADER_MATCH])), None)
        if hit is None:
            return None
        out.append(f"{key} {_short(hit)} matches {pattern.pattern!r}")
    if rule.authenticated is not None:
        if env.authenticated != rule.authenticated:
            return None
        out.append("authenticated" if rule.authenticated else "not authenticated")
    if rule.networks:
        try:
            addr = ipaddress.ip_address(env.client_ip.strip("[]").removeprefix("IPv6:"))
        except ValueError:
            return None
        if not any(addr in net for net in rule.networks):
            return None
        out.append(f"client {addr} listed")
    return out


def _content_reasons(rule: Rule, msg: Message) -> list[str] | None:
    """Reasons the size and body conditions hold, or ``None`` when one fails."""
    out = []
    if rule.size_over is not None:
        if msg.size <= rule.size_over:
            return None
        out.append(f"size {msg.size} > {rule.size_over}")
    if rule.size_under is not None:
        if msg.size >= rule.size_under:
            return None
        out.append(f"size {msg.size} < {rule.size_under}")
    body = rule.patterns.get("body")
    if body is not None:
        found = body.search(msg.text[: rule.body_max])
        if found is None:
            return None
        out.append(f"body matches {body.pattern!r} ({_short(found.group(0))})")
    return out


def evaluate(rule: Rule, env: Envelope, msg: Message) -> str | None:
    """Why ``rule`` matches this mail, or ``None`` when it does not (``not`` applied)."""
    reasons: list[str] = []
    for part in (_envelope_reasons(rule, env), _header_reasons(rule, msg),
                 _content_reasons(rule, msg)):
        if part is None:
            return "conditions do not all hold (not = true)" if rule.negate else None
        reasons.extend(part)
    if rule.negate:
        return None
    return "; ".join(reasons) or "no conditions"


class RulesFilter(Filter):
    """Evaluate the configured rules in order; see the module docstring."""

    name = "rules"
    description = "local rules: header, envelope, client, body and size tests with actions"
    stage = Stage.EOM
    loop_free = True  # check() never awaits
    Options = RulesOptions

    def __init__(self, options: RulesOptions) -> None:
        super().__init__(options)
        self.rules: tuple[Rule, ...] = tuple(options.rule)

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Run the rules; a final action ends the filter and becomes its verdict."""
        msg = mail.message
        if msg is None:
            return NOTHING
        symbols: list[Symbol] = []
        changes: list[Change] = []
        for rule in self.rules:
            reason = evaluate(rule, mail.envelope, msg)
            if reason is None:
                continue
            ctx.log.debug("rule %s matched: %s", rule.name, reason)
            symbols.append(Symbol(rule.name, rule.score or 0.0, reason))
            changes.extend(consequences(rule, mail.envelope, msg))
            if rule.verdict is not None:
                verdict = Verdict(rule.verdict.action, rule.verdict.reply,
                                  f"{rule.name}: {reason}", self.name)
                return FilterResult(verdict, symbols, changes)
            if rule.stop:
                break
        return FilterResult(symbols=symbols, changes=changes)


FILTER = RulesFilter
