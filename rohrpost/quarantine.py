"""The local quarantine: held messages with their envelope and the reason, on disk.

Owns ``Quarantine``: store (write, fsync, rename; folder 0700, files 0600), list, show, delete
and release (re-deliver with the original envelope through a destination, then delete). Ids are
made here and checked on every use, so no path can be smuggled in through an id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from rohrpost.envelope import Envelope

_ID_RE = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{10}$")


class QuarantineError(LookupError):
    """Unknown or malformed quarantine id, or an unusable quarantine folder."""


@dataclass(frozen=True)
class Entry:
    """What the quarantine knows about one held message."""

    id: str
    time: float
    reason: str
    by: str
    score: float
    symbols: list[str]
    size: int
    mail_from: str
    rcpts: list[str]
    client_ip: str
    helo: str
    auth_user: str
    queue_id: str
    subject: str = ""

    def envelope(self) -> Envelope:
        """The original envelope, for release."""
        return Envelope(client_ip=self.client_ip, helo=self.helo, mail_from=self.mail_from,
                        rcpts=tuple(self.rcpts), auth_user=self.auth_user, queue_id=self.queue_id)


class Quarantine:
    """A quarantine folder. ``clock`` is injectable for tests."""

    def __init__(self, directory: str, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock

    def _path(self, qid: str, ext: str) -> str:
        if not _ID_RE.match(qid):
            raise QuarantineError(f"not a quarantine id: {qid!r}")
        return os.path.join(self.directory, f"{qid}.{ext}")

    def store(self, raw: bytes, envelope: Envelope, *, reason: str, by: str = "",
              score: float = 0.0, symbols: list[str] | None = None, subject: str = "") -> str:
        """Keep ``raw`` with its envelope; return the new id. Durable when this returns."""
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        now = self.clock()
        qid = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(5)
        entry = Entry(qid, now, reason, by, score, symbols or [], len(raw), envelope.mail_from,
                      list(envelope.rcpts), envelope.client_ip, envelope.helo,
                      envelope.auth_user, envelope.queue_id, subject[:200])
        _write_durably(self._path(qid, "eml"), raw)
        _write_durably(self._path(qid, "json"), json.dumps(asdict(entry)).encode())
        _fsync_dir(self.directory)
        return qid

    def list(self) -> list[Entry]:
        """Every held message, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        out = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json") and _ID_RE.match(name[:-5]):
                try:
                    out.append(self.entry(name[:-5]))
                except (QuarantineError, ValueError):
                    continue
        return out

    def entry(self, qid: str) -> Entry:
        """The metadata of ``qid``."""
        try:
            with open(self._path(qid, "json"), "rb") as fh:
                data: dict[str, Any] = json.load(fh)
        except FileNotFoundError:
            raise QuarantineError(f"no quarantined message {qid}") from None
        return Entry(**data)

    def raw(self, qid: str) -> bytes:
        """The held message's bytes."""
        try:
            with open(self._path(qid, "eml"), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            raise QuarantineError(f"no quarantined message {qid}") from None

    def delete(self, qid: str) -> None:
        """Remove ``qid`` (message first, then metadata)."""
        self.entry(qid)
        for ext in ("eml", "json"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(qid, ext))
        _fsync_dir(self.directory)


def _write_durably(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
