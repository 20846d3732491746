"""Delivery that sorts: junk, rules on headers, per-recipient and plus-address folders.

Owns the ``[deliver]`` table of pipeline.toml (``DeliverSection`` and its ``[[deliver.rule]]``
entries, validated with file and line), ``plan`` (which folder or destination a message goes
to) and ``deliver_sorted`` (duplicate suppression, Maildir++ quota, delivery, bookkeeping).
It does not parse destinations or write mailboxes itself; that stays in the agents. The common
procmail recipes map to keys here so that they need no procmail; docs/delivery.md lists them.

Order of decisions (first that applies wins): spam → ``junk_folder``; ``[[deliver.rule]]`` in
file order; ``recipient_folders``; plus-address folder; the destination's inbox.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any

from rohrpost.deliver.dedup import DedupKey, message_fingerprint
from rohrpost.deliver.destination import Destination, DestinationError, parse_destination
from rohrpost.deliver.maildir import UniqueNames, deliver_maildir, folder_dirname
from rohrpost.deliver.quota import quota_reply, read_quota, record_delivery
from rohrpost.deliver.report import DeliveryReport, same_for_all
from rohrpost.envelope import Envelope, local_part
from rohrpost.message import Message
from rohrpost.options import OptionError, build_options
from rohrpost.result import Reply

if TYPE_CHECKING:
    from rohrpost.config import Config
    from rohrpost.store import Store

log = logging.getLogger("rohrpost.deliver")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_TEMPLATE = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Rule:
    """One ``[[deliver.rule]]``: conditions (all given ones must hold) and where to file."""

    header: str = ""
    regex: str = ""
    recipient: str = ""
    spam: bool | None = None
    account: str = ""
    destination: str = ""
    folder: str = ""
    deliver: str = ""


@dataclass(frozen=True)
class DeliverSection:
    """``[deliver]``: sorting, duplicate suppression and quota for local delivery."""

    junk_folder: str = "Junk"
    quarantine_to_junk: bool = False
    plus_folders: bool = True
    plus_delimiter: str = "+"
    plus_from_headers: bool = True
    recipient_folders: dict[str, str] = field(default_factory=dict)
    dedup: bool = True
    dedup_window: int = 86400
    dedup_key: DedupKey = "message-id+body"
    quota: bool = True
    quota_permanent: bool = False
    rule: list[Rule] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """Where one message goes: a destination, a Maildir++ folder (maildir only), and why."""

    dest: Destination
    folder: str | None
    why: str


@dataclass(frozen=True)
class Sorted:
    """The result of ``deliver_sorted``: the report, the target, and whether it was a duplicate."""

    report: DeliveryReport
    target: Target
    duplicate: bool = False


def load_deliver_section(config: Config) -> DeliverSection:
    """Validate ``[deliver]`` from ``config.raw`` (defaults when absent).

    :raises ConfigError: with file and line for unknown keys, bad types, bad regexes, unsafe
        folder names and bad destinations.
    """
    table = config.raw.get("deliver", {})
    if not isinstance(table, dict):
        raise config.error("deliver", "must be a table ([deliver])")
    try:
        section: DeliverSection = build_options(DeliverSection, table, "deliver")
    except OptionError as exc:
        raise config.error(exc.path, exc.message, exc.suggestion) from None
    if section.dedup_window <= 0:
        raise config.error("deliver.dedup_window", "must be a positive number of seconds")
    folders = {"deliver.junk_folder": section.junk_folder}
    folders |= {f"deliver.recipient_folders.{k}": v for k, v in section.recipient_folders.items()}
    for key, value in folders.items():
        _check_folder(config, key, value)
    for i, rule in enumerate(section.rule):
        where = f"deliver.rule[{i}]"
        for name in ("regex", "recipient"):
            try:
                _regex(getattr(rule, name))
            except re.error as exc:
                raise config.error(f"{where}.{name}", f"bad regular expression: {exc}") from None
        if rule.header and not rule.regex:
            raise config.error(f"{where}.regex", "a rule with header = needs regex =")
        if bool(rule.folder) == bool(rule.deliver):
            raise config.error(where, "give exactly one of folder = or deliver =")
        if rule.deliver:
            try:
                parse_destination(rule.deliver)
            except DestinationError as exc:
                raise config.error(f"{where}.deliver", str(exc)) from None
        elif "{" not in rule.folder:
            _check_folder(config, f"{where}.folder", rule.folder)
    # relative maildir/mbox paths of rules are relative to the configuration file's folder
    rules = [replace(r, deliver=config.resolve_destination(r.deliver),
                     destination=config.resolve_destination(r.destination)) for r in section.rule]
    return replace(section, rule=rules)


def _check_folder(config: Config, key: str, folder: str) -> None:
    if folder and folder.upper() != "INBOX":
        try:
            folder_dirname(folder)
        except DestinationError as exc:
            raise config.error(key, str(exc)) from None


@cache
def _regex(text: str) -> re.Pattern[str] | None:
    return re.compile(text, re.IGNORECASE | re.MULTILINE) if text else None


def sanitize_folder_part(text: str) -> str:
    """Make one folder name part from untrusted text: ``[A-Za-z0-9_-]``, lower case, ≤ 64."""
    return _UNSAFE.sub("_", text).strip("_").lower()[:64]


def spam_from_headers(message: Message) -> bool:
    """An earlier stage's verdict: ``X-Spam-Flag: YES`` or ``X-Spam-Status: Yes,...``."""
    if message.get("X-Spam-Flag").strip().upper() == "YES":
        return True
    return message.get("X-Spam-Status").strip().lower().startswith("yes")


def plus_detail(settings: DeliverSection, envelope: Envelope, message: Message) -> str:
    """The sanitized detail of the first plus address (``user+lists@`` → ``lists``)."""
    delim = settings.plus_delimiter
    if not delim:
        return ""
    candidates = list(envelope.rcpts)
    if settings.plus_from_headers:
        candidates += [message.get("Delivered-To"), message.get("X-Original-To")]
    for addr in candidates:
        local = local_part(addr)
        if delim in local:
            detail = sanitize_folder_part(local.split(delim, 1)[1])
            if detail:
                return detail
    return ""


def _same_destination(spec: str, base: Destination) -> bool:
    """``destination =`` of a rule names ``base`` (relative and absolute paths compare equal)."""
    if spec == str(base):
        return True
    try:
        other = parse_destination(spec)
    except DestinationError:
        return False
    if other.kind != base.kind or not other.path or not base.path:
        return False
    return os.path.abspath(other.path) == os.path.abspath(base.path)


def _rule_matches(rule: Rule, message: Message, envelope: Envelope, *, spam: bool,
                  account: str, base: Destination) -> dict[str, str] | None:
    """Named groups of the match (possibly empty) when every condition holds, else None."""
    if ((rule.spam is not None and rule.spam != spam) or (rule.account and rule.account != account)
            or (rule.destination and not _same_destination(rule.destination, base))):
        return None
    groups: dict[str, str] = {}
    rcpt_re = _regex(rule.recipient)
    if rcpt_re is not None and not any(rcpt_re.fullmatch(r) for r in envelope.rcpts):
        return None
    regex = _regex(rule.regex)
    if regex is None:
        return groups
    if rule.header:
        values = [h.decoded for h in message.get_all(rule.header)]
    else:
        values = ["\n".join(f"{h.name}: {h.decoded}" for h in message)]
    for value in values:
        found = regex.search(value)
        if found:
            groups.update({k: v for k, v in found.groupdict().items() if v is not None})
            return groups
    return None


def _fill(template: str, groups: Mapping[str, str]) -> str:
    return _TEMPLATE.sub(lambda m: sanitize_folder_part(groups.get(m.group(1), "")), template)


def plan(settings: DeliverSection, base: Destination, message: Message, envelope: Envelope,
         *, spam: bool, account: str = "") -> Target:
    """Decide where ``message`` goes (see the module docstring for the order)."""
    if spam and settings.junk_folder:
        return Target(base, settings.junk_folder, "spam")
    for i, rule in enumerate(settings.rule):
        groups = _rule_matches(rule, message, envelope, spam=spam, account=account,
                                base=base)
        if groups is None:
            continue
        if rule.deliver:
            return Target(parse_destination(rule.deliver), None, f"rule[{i}]")
        folder = _fill(rule.folder, groups)
        return Target(base, folder or None, f"rule[{i}]")
    folders = {k.lower(): v for k, v in settings.recipient_folders.items()}
    for rcpt in envelope.rcpts:
        if rcpt.lower() in folders:
            return Target(base, folders[rcpt.lower()], "recipient")
    if settings.plus_folders:
        detail = plus_detail(settings, envelope, message)
        if detail:
            return Target(base, detail, "plus-address")
    return Target(base, None, "inbox")


def _sender(envelope: Envelope) -> str | None:
    if envelope.mail_from or "mail_from" in envelope.sources:
        return envelope.mail_from
    return None


async def deliver_sorted(settings: DeliverSection, base: Destination, raw: bytes,
                         envelope: Envelope, *, spam: bool | None = None,
                         store: Store | None = None, account: str = "",
                         names: UniqueNames | None = None,
                         before: Callable[[Target], Awaitable[None]] | None = None,
                         timeout: float = 60.0) -> Sorted:
    """Sort, suppress duplicates, check the quota, deliver, and record the delivery.

    :param spam: the pipeline's verdict; ``None`` reads X-Spam-Flag/X-Spam-Status.
    :param store: where duplicate keys live (``None``: no duplicate suppression).
    :param names: Maildir file names (fetch passes a preset name for its crash journal).
    :param before: awaited with the target right before the message is written (fetch's
        journal); not called for duplicates.
    """
    from rohrpost.deliver import deliver

    message = Message(raw)
    is_spam = spam_from_headers(message) if spam is None else spam
    target = plan(settings, base, message, envelope, spam=is_spam, account=account)
    dup_key = ""
    if settings.dedup and store is not None:
        dup_key = f"dedup:{base}:{message_fingerprint(message, settings.dedup_key)}"
        if await store.get(dup_key) is not None:
            reply = Reply(250, "2.0.0", "duplicate suppressed (already delivered)")
            return Sorted(same_for_all(envelope.rcpts, reply, "duplicate"), target, True)
    dest = target.dest
    if before is not None:
        await before(target)
    if dest.kind == "maildir":
        report = _deliver_maildir(settings, dest.path, target.folder, raw, envelope,
                                  names=names)
    else:
        if target.folder:
            log.warning("folder %r ignored for %s (maildir only)", target.folder, dest)
        report = deliver(dest, raw, envelope, timeout=timeout)
    if report.ok and dup_key and store is not None:
        await store.set(dup_key, b"1", ttl=settings.dedup_window)
    log.debug("sorted to %s folder=%s (%s): %s", dest, target.folder or "INBOX", target.why,
              report.summary)
    return Sorted(report, target)


def _deliver_maildir(settings: DeliverSection, path: str, folder: str | None, raw: bytes,
                     envelope: Envelope, *, names: UniqueNames | None) -> DeliveryReport:
    if settings.quota:
        quota = read_quota(path)
        if quota is not None and quota.refuses(len(raw)):
            reply = quota_reply(settings.quota_permanent, quota, len(raw))
            return same_for_all(envelope.rcpts, reply, reply.text)
    reply = deliver_maildir(path, raw, folder, sender=_sender(envelope), rcpts=envelope.rcpts,
                            names=names)
    if reply.code < 300 and settings.quota:
        record_delivery(path, len(raw))
    return same_for_all(envelope.rcpts, reply, f"maildir:{path} {folder or 'INBOX'}: {reply}")


def summary_line(result: Sorted) -> str:
    """One human line: where it went and what the agent said."""
    where = f"{result.target.dest}" + (f" folder {result.target.folder}"
                                        if result.target.folder else "")
    return f"{where} ({result.target.why}): {result.report.summary}"


def section_or_none(config: Config) -> DeliverSection | None:
    """``[deliver]`` when the configuration has that table, else ``None`` (plain delivery)."""
    return load_deliver_section(config) if "deliver" in config.raw else None


def as_dict(section: DeliverSection) -> dict[str, Any]:
    """The settings as a plain table (for ``rohrpost config`` style dumps and tests)."""
    import dataclasses

    return dataclasses.asdict(section)
