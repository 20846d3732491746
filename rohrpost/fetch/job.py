"""One run of one fetch account: list, retrieve, filter, deliver, commit, delete.

Owns ``FetchJob`` and ``FetchStats``. Per message, in this order (docs/fetch.md explains why
this gives exactly-once delivery across kill -9):

1. skip when the seen key is committed (delete it remotely now if the account deletes);
2. retrieve (size-bounded); compute the content fingerprint (Message-ID + body hash);
3. skip when that content was already handled under another key (UIDVALIDITY change);
4. if a crash journal entry exists and its maildir file is there, the delivery happened;
5. add Received, run the pipeline (``rohrpost.runner.process``);
6. tempfail: leave it for the next run; reject/discard: record; quarantine: store durably;
   accept: journal the maildir file name, deliver sorted (fsync before return);
7. commit content then seen key, clear the journal; only then delete on the server.
"""

from __future__ import annotations

import email.utils
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rohrpost.config import Config
from rohrpost.deliver.dedup import message_fingerprint
from rohrpost.deliver.destination import parse_destination
from rohrpost.deliver.maildir import folder_dirname
from rohrpost.deliver.sorting import DeliverSection, Target, deliver_sorted
from rohrpost.envelope import Envelope
from rohrpost.envsource import new_queue_id, sender_from_message
from rohrpost.fetch.accounts import Account, FetchError, read_password, tls_context
from rohrpost.fetch.remote import Mailbox, RemoteMessage
from rohrpost.fetch.seen import PresetNames, SeenState, journal_name, maildir_has
from rohrpost.filter import Services
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.policy import Outcome
from rohrpost.result import Action

log = logging.getLogger("rohrpost.fetch")
_ID_UNSAFE = re.compile(r"[^\x21-\x7e]|[;()<>]")
Progress = Callable[[int, int], None]


@dataclass
class FetchStats:
    """What one run did; ``summary`` is the line ``rohrpost fetch`` prints."""

    listed: int = 0
    fetched: int = 0
    delivered: int = 0
    duplicates: int = 0
    rejected: int = 0
    quarantined: int = 0
    tempfailed: int = 0
    skipped_seen: int = 0
    deleted: int = 0
    too_large: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def left_for_later(self) -> int:
        """Messages not handled this time (retried on the next run)."""
        return self.tempfailed + self.too_large + self.failed

    def summary(self) -> str:
        """One line: counts of everything that happened."""
        return (f"{self.fetched} fetched, {self.delivered} delivered, {self.rejected} "
                f"rejected/discarded, {self.quarantined} quarantined, {self.duplicates} "
                f"duplicates suppressed, {self.skipped_seen} skipped as seen, {self.tempfailed} "
                f"deferred, {self.too_large + self.failed} failed, {self.deleted} deleted "
                f"on the server")


def open_mailbox(acct: Account, ca_file: str = "") -> Mailbox:
    """Connect and log in (the password is read here and dropped right after)."""
    password = read_password(acct)
    context: ssl.SSLContext | None = None
    if acct.tls != "none":
        context = tls_context(acct, ca_file)
    if acct.protocol == "pop3":
        from rohrpost.fetch.pop3 import Pop3Mailbox

        return Pop3Mailbox(acct, password, context)
    from rohrpost.fetch.imap import ImapMailbox

    return ImapMailbox(acct, password, context)


def received_header(acct: Account, msg: RemoteMessage, protocol: str, *, hostname: str,
                    now: float, crlf: bool) -> bytes:
    """``Received: from HOST by HOSTNAME (rohrpost fetch ...) with PROTO id ID; DATE``."""
    ident = _ID_UNSAFE.sub("_", msg.key.split(":", 1)[-1] or msg.ref)[:120]
    host = _ID_UNSAFE.sub("_", acct.host)
    tls = "TLS" if acct.tls != "none" else "no TLS"
    nl = "\r\n" if crlf else "\n"
    date = email.utils.formatdate(now, localtime=True)
    text = (f"Received: from {host} by {_ID_UNSAFE.sub('_', hostname)}{nl}\t(rohrpost fetch "
            f"{_ID_UNSAFE.sub('_', acct.name)}, {tls}) with {protocol} id {ident}{nl}"
            f"\tfor <{_ID_UNSAFE.sub('_', acct.recipient)}>; {date}{nl}")
    return text.encode("ascii", "replace")


def prepare(raw: bytes, received: bytes) -> bytes:
    """Put Received on top and drop the server's Return-Path headers (the envelope has it)."""
    message = Message(raw)
    for header in message.get_all("Return-Path"):
        raw = raw.replace(header.raw, b"", 1)
    return received + raw


class FetchJob:
    """Fetch one account once; ``run`` returns the stats or raises ``FetchError``."""

    def __init__(self, config: Config, acct: Account, pipeline: Pipeline, services: Services,
                 sorting: DeliverSection, *, ca_file: str = "", progress: Progress | None = None,
                 stop: threading.Event | None = None) -> None:
        self.config, self.acct, self.pipeline, self.services = config, acct, pipeline, services
        self.sorting, self.ca_file, self.progress = sorting, ca_file, progress
        self.stop = stop or threading.Event()
        self.stats = FetchStats()
        self.dest = parse_destination(acct.deliver)
        self.seen = SeenState(services.store, acct.name, acct.rekey_days)

    async def run(self) -> FetchStats:
        """Fetch every folder; the connection is closed (POP3: QUIT) in every case."""
        mailbox = open_mailbox(self.acct, self.ca_file)
        try:
            for folder in self.acct.folders:
                if self.stop.is_set():
                    break
                await self._folder(mailbox, folder)
        finally:
            mailbox.close()
        return self.stats

    async def _folder(self, mailbox: Mailbox, folder: str) -> None:
        messages = mailbox.list_messages(folder)
        if messages and not messages[0].key and self.acct.keep:
            raise FetchError(
                f"{self.acct.label}: the POP3 server does not support UIDL, so messages cannot "
                "be told apart across sessions; set keep = false (delete mode) for this account")
        self.stats.listed += len(messages)
        if messages and messages[0].key:
            scope = "uidl:" if mailbox.protocol == "POP3" else f"imap:{folder}:"
            await self.seen.prune(scope, {m.key for m in messages})
        budget = self.acct.max_messages or len(messages)
        for i, msg in enumerate(messages[:budget]):
            if self.stop.is_set():
                break
            await self._one(mailbox, msg)
            if self.progress is not None:
                self.progress(i + 1, min(budget, len(messages)))
        mailbox.end_folder(folder)

    def _deletes(self, how: str) -> bool:
        if how == "rejected":
            return self.acct.on_reject == "delete"
        return not self.acct.keep

    async def _finish(self, mailbox: Mailbox, msg: RemoteMessage, key: str, fp: str,
                      how: str) -> None:
        await self.seen.mark(key, fp, how)
        await self.seen.clear_pending(key)
        if self._deletes(how):
            mailbox.delete(msg)
            self.stats.deleted += 1

    async def _one(self, mailbox: Mailbox, msg: RemoteMessage) -> None:
        if msg.key:
            how = await self.seen.how(msg.key)
            if how is not None:
                self.stats.skipped_seen += 1
                if self._deletes(how):
                    mailbox.delete(msg)
                    self.stats.deleted += 1
                return
        if msg.size > self.acct.max_message_size:
            self.stats.too_large += 1
            self._problem(f"message {msg.ref} is {msg.size} bytes, over max_message_size "
                          f"{self.acct.max_message_size}; left on the server")
            return
        raw = mailbox.retrieve(msg)
        self.stats.fetched += 1
        fp = message_fingerprint(Message(raw), self.sorting.dedup_key)
        key = msg.key or f"content:{fp}"
        if await self.seen.content_key(fp) is not None:
            self.stats.duplicates += 1
            await self._finish(mailbox, msg, key, fp, "duplicate")
            return
        journal = await self.seen.pending(key)
        if journal is not None and maildir_has(*journal):
            log.info("%s: %s was delivered before a crash (%s); not delivering again",
                     self.acct.name, key, journal[1])
            self.stats.delivered += 1
            await self._finish(mailbox, msg, key, fp, "delivered")
            return
        how = await self._filter_and_deliver(msg, key, raw, mailbox.protocol)
        if how:
            await self._finish(mailbox, msg, key, fp, how)

    async def _filter_and_deliver(self, msg: RemoteMessage, key: str, raw: bytes,
                                  protocol: str) -> str:
        from rohrpost.runner import log_outcome, process

        now = self.services.clock()
        received = received_header(self.acct, msg, protocol, hostname=self.config.hostname, now=now,
                                   crlf=b"\r\n" in raw[:2000])
        message = Message(prepare(raw, received))
        sender = sender_from_message(Message(raw))
        sources = {"rcpts": f"fetch account {self.acct.name}"}
        if sender is not None:
            sources["mail_from"] = "message Return-Path"
        envelope = Envelope(mail_from=sender or "", rcpts=(self.acct.recipient,),
                            queue_id=new_queue_id(), sources=sources)
        done = await process(self.pipeline, self.services, envelope, message)
        log_outcome(done.envelope, done.outcome, done.ms, f"fetch:{self.acct.name}")
        action = done.outcome.action
        to_junk = action is Action.QUARANTINE and self.sorting.quarantine_to_junk
        if action is Action.TEMPFAIL:
            self.stats.tempfailed += 1
            return ""
        if action in (Action.REJECT, Action.DISCARD):
            self.stats.rejected += 1
            return "rejected"
        if action is Action.QUARANTINE and not to_junk:
            self._quarantine(done.message.raw, done.envelope, done.outcome)
            self.stats.quarantined += 1
            return "quarantined"
        return await self._deliver(key, done.message.raw, done.envelope,
                                   spam=done.outcome.is_spam or to_junk)

    async def _deliver(self, key: str, raw: bytes, envelope: Envelope, *, spam: bool) -> str:
        name = journal_name(self.config.hostname)

        async def journal(target: Target) -> None:
            if target.dest.kind == "maildir":
                folder = target.folder
                path = target.dest.path
                if folder and folder.upper() != "INBOX":
                    path = f"{path}/{folder_dirname(folder)}"
                await self.seen.set_pending(key, path, name)

        result = await deliver_sorted(
            self.sorting, self.dest, raw, envelope, spam=spam, store=self.services.store,
            account=self.acct.name, names=PresetNames(preset=name), before=journal)
        if result.duplicate:
            self.stats.duplicates += 1
            return "duplicate"
        if result.report.ok:
            self.stats.delivered += 1
            return "delivered"
        self.stats.failed += 1
        self._problem(f"delivery of {key} failed, left on the server: {result.report.summary}")
        return ""

    def _quarantine(self, raw: bytes, envelope: Envelope, outcome: Outcome) -> None:
        from rohrpost.quarantine import Quarantine

        q = Quarantine(self.config.quarantine_dir)
        q.store(raw, envelope, reason=outcome.verdict.reason, by=outcome.verdict.by,
                score=outcome.score, symbols=[s.name for s in outcome.symbols],
                subject=Message(raw).get("Subject"))

    def _problem(self, text: str) -> None:
        log.warning("%s: %s", self.acct.name, text)
        self.stats.problems.append(text)


def jittered(interval: float, jitter: float, rand: Callable[[], float]) -> float:
    """``interval`` ± ``jitter`` (a fraction), ``rand`` giving [0, 1)."""
    return max(1.0, interval * (1 + jitter * (2 * rand() - 1)))


def now() -> float:
    """Wall-clock seconds (kept in one place for the daemon)."""
    return time.time()
