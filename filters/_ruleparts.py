"""Helpers of the ``rules`` filter: load-time checks and the changes a matching rule makes.

Owns the helpers that turn a rule's text options into checked, compiled values (regexes, lists,
reply lines, header templates) and ``consequences``. Every helper
raises ``ValueError`` naming the rule, which the core's option builder turns into a located
configuration error. Kept apart from ``rules.py`` only to keep each module small; the leading
underscore keeps it out of the filter list.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any

from rohrpost.changes import (
    AddHeader,
    AddRecipient,
    Change,
    ChangeHeader,
    DeleteRecipient,
    check_header_name,
    delete_header,
)
from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.options import OptionTable, option
from rohrpost.result import Action, Verdict

MAX_HEADER_MATCH = 64 * 1024
PLACEHOLDERS = frozenset({"rule", "score"})
PATTERN_KEYS = ("regex", "envelope_from", "envelope_to", "helo", "auth_user", "body")
# compiled on first use (re's cache): only rules that change recipients have addresses
_ADDRESS_RE = r"^[^\s<>()\[\];,\"\\]+@[^\s<>()\[\];,\"\\@]+$"


class HeaderValue(OptionTable):
    """A header to write: ``{ name = "X-Foo", value = "{rule} hit" }``."""

    name: str = option(metadata={"help": "header field name"})
    value: str = option(metadata={"help": "value; {rule} and {score} are filled in"})

    def __post_init__(self) -> None:
        check_header_name(self.name)


def check_template(template: str, where: str) -> None:
    """Allow only ``{rule}`` and ``{score}`` (with a format spec) in a header value.

    Anything else (``{rule.__class__}``, ``{0}``, nested specs) is refused at load, so filling
    the template can never reach an attribute or index.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{where}: bad header value {template!r}: {exc}") from None
    for _text, fname, spec, _conv in parsed:
        if fname is None:
            continue
        if fname not in PLACEHOLDERS or "{" in (spec or ""):
            raise ValueError(f"{where}: header value {template!r} may use only "
                             "{rule} and {score} ({{ and }} for braces)")
    try:
        template.format_map({"rule": "NAME", "score": 0.0})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: bad header value {template!r}: {exc}") from None


def compile_patterns(rule: Any, where: str) -> dict[str, re.Pattern[str]]:
    """Compile every regex option of ``rule``; an error names the key and the regex."""
    out: dict[str, re.Pattern[str]] = {}
    for key in PATTERN_KEYS:
        text = getattr(rule, key)
        if text is None:
            continue
        try:
            out[key] = re.compile(text)
        except re.error as exc:
            raise ValueError(f"{where}: invalid regex in {key} {text!r}: {exc}") from None
    return out


def load_members(path: str, values: Sequence[str], where: str) -> frozenset[str]:
    """Return the case-folded members of ``values`` and of the list file ``path``.

    The file has one value a line; blank lines and lines starting with ``#`` are skipped.
    A relative path is relative to the working directory (filters are not told where the
    configuration file lives).
    """
    members = {v.strip().casefold() for v in values if v.strip()}
    if path:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            raise ValueError(f"{where}: cannot read in_list {path!r}: {exc.strerror}") from None
        members.update(s.strip().casefold() for s in lines
                       if s.strip() and not s.lstrip().startswith("#"))
    return frozenset(members)


def make_verdict(action: str | None, message: str, where: str) -> Verdict | None:
    """Return the verdict for ``action`` with reply ``message``; the code class is checked here."""
    if action is None:
        if message:
            raise ValueError(f"{where}: message needs an action")
        return None
    try:
        return Verdict.of(Action(action), message, by="rules")
    except ValueError as exc:
        want = {"reject": "5xx", "tempfail": "4xx"}.get(action, "2xx")
        raise ValueError(f"{where}: action {action!r} needs a {want} message "
                         f"like '{_example(action)}', got {message!r} ({exc})") from None


def _example(action: str) -> str:
    return {"reject": "550 5.7.1 Rejected", "tempfail": "451 4.7.1 Try later"}.get(
        action, "250 2.0.0 Ok")


def check_address(addr: str, where: str) -> None:
    """Refuse recipient addresses that are not a plain ``local@domain``."""
    if addr and not re.match(_ADDRESS_RE, addr):
        raise ValueError(f"{where}: {addr!r} is not a plain address like user@example.org")


def consequences(rule: Any, env: Envelope, msg: Message) -> list[Change]:
    """Return the changes a matching rule asks for, header values filled in."""
    fields = {"rule": rule.name, "score": rule.score or 0.0}
    changes: list[Change] = []
    if rule.add_header is not None:
        value = rule.add_header.value.format_map(fields)
        changes.append(AddHeader(rule.add_header.name, value))
    if rule.change_header is not None:
        value = rule.change_header.value.format_map(fields)
        changes.append(ChangeHeader(rule.change_header.name, 1, value))
    if rule.remove_header:
        count = len(msg.get_all(rule.remove_header))
        changes.extend(delete_header(rule.remove_header, i) for i in range(count, 0, -1))
    if rule.redirect:
        changes.extend(DeleteRecipient(r) for r in env.rcpts)
        changes.append(AddRecipient(rule.redirect))
    if rule.delete_recipient:
        changes.append(DeleteRecipient(rule.delete_recipient))
    if rule.add_recipient:
        changes.append(AddRecipient(rule.add_recipient))
    return changes
