"""What a fetch account has already handled, kept in the state store.

Owns the fetch keys in ``Store`` (all under ``fetch:ACCOUNT:``) and the crash journal:

* ``seen:KEY`` → how the message was handled (``delivered``, ``duplicate``, ``rejected``,
  ``quarantined``). KEY is ``uidl:UID`` (POP3) or ``imap:FOLDER:UIDVALIDITY:UID``; for a POP3
  server without UIDL it is ``content:FINGERPRINT``. No expiry; entries whose message left the
  server are pruned after a complete listing.
* ``content:FINGERPRINT`` → the seen KEY, for ``rekey_days``: the same message (Message-ID and
  body hash) under a new key (UIDVALIDITY changed, no UIDL, crash window) is not delivered again.
* ``pending:KEY`` → ``{"dir": MAILDIR, "name": FILE}`` written *before* a maildir delivery with
  a file name chosen in advance; after a crash between the durable delivery and the commit of
  ``seen``, finding that file proves the delivery happened, so nothing is delivered twice.

Every write is a separate committed transaction (SQLite ``synchronous=full`` by default). The
order of writes is the exactly-once argument; docs/fetch.md spells it out.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass

from rohrpost.deliver.maildir import UniqueNames, sanitize_host
from rohrpost.store import Store

DAY = 86400.0


@dataclass
class PresetNames(UniqueNames):
    """Maildir names whose first value is chosen in advance (recorded in the journal)."""

    preset: str = ""

    def next(self) -> str:
        """The preset name once, then fresh unique names (collisions only)."""
        if self.preset:
            name, self.preset = self.preset, ""
            return name
        return super().next()


def journal_name(hostname: str, clock: float | None = None) -> str:
    """A maildir file name unique without a counter: time, random token, pid, host."""
    now = time.time() if clock is None else clock
    return (f"{int(now)}.R{secrets.token_hex(8)}P{os.getpid()}."
            f"{sanitize_host(hostname)}")


def maildir_has(directory: str, name: str) -> bool:
    """True when ``name`` is in new/ or (renamed by a reader, ``name:2,FLAGS``) in cur/."""
    if os.path.exists(os.path.join(directory, "new", name)):
        return True
    try:
        entries = os.listdir(os.path.join(directory, "cur"))
    except OSError:
        return False
    return any(e == name or e.startswith(name + ":") for e in entries)


class SeenState:
    """The seen/content/pending keys of one account in ``store``."""

    def __init__(self, store: Store, account: str, rekey_days: int) -> None:
        self.store = store
        self.prefix = f"fetch:{account}:"
        self.content_ttl = rekey_days * DAY

    async def how(self, key: str) -> str | None:
        """How ``key`` was handled, or None when it is new."""
        value = await self.store.get(self.prefix + "seen:" + key)
        return None if value is None else value.decode("ascii", "replace")

    async def content_key(self, fingerprint: str) -> str | None:
        """The seen key under which this content was handled, if any."""
        value = await self.store.get(self.prefix + "content:" + fingerprint)
        return None if value is None else value.decode("utf-8", "replace")

    async def mark(self, key: str, fingerprint: str, how: str) -> None:
        """Commit the message as handled (content first, then the seen key)."""
        await self.store.set(self.prefix + "content:" + fingerprint, key.encode(),
                             ttl=self.content_ttl)
        await self.store.set(self.prefix + "seen:" + key, how.encode())

    async def set_pending(self, key: str, directory: str, name: str) -> None:
        """Journal a maildir delivery about to happen."""
        data = json.dumps({"dir": directory, "name": name}).encode()
        await self.store.set(self.prefix + "pending:" + key, data)

    async def pending(self, key: str) -> tuple[str, str] | None:
        """The journalled (maildir folder, file name) of an unfinished delivery."""
        value = await self.store.get(self.prefix + "pending:" + key)
        if value is None:
            return None
        try:
            data = json.loads(value)
            return str(data["dir"]), str(data["name"])
        except (ValueError, KeyError, TypeError):
            return None

    async def clear_pending(self, key: str) -> None:
        """Drop the journal entry (after ``mark``)."""
        await self.store.delete(self.prefix + "pending:" + key)

    async def prune(self, scope: str, present: set[str]) -> int:
        """Forget seen keys starting with ``scope`` whose message is gone from the server."""
        base = self.prefix + "seen:"
        gone = [k for k in await self.store.keys(base + scope) if k[len(base):] not in present]
        for key in gone:
            await self.store.delete(key)
        return len(gone)
