"""Embedded store: ``SqliteStore``, the default backend, one SQLite file in WAL mode.

Owns the database file (created 0600, its directory 0700 when missing), its schema and the
mapping of the store semantics onto SQL. Several threads may share one ``SqliteStore`` (one
connection behind a lock) and several processes may open the same file: WAL lets readers run
beside a writer, every write is one ``BEGIN IMMEDIATE`` transaction (so the read-modify-write of
``add``, ``incr`` and ``window_add`` is atomic across processes) and ``busy_timeout`` makes a
writer wait for the lock instead of failing at once. A lock held longer than the timeout raises
``StoreError``. Do not carry an open store across ``fork()``; open one per process.

Calls run inline on the event loop: each is one short transaction. With ``synchronous=FULL``
(the default) a commit waits for fsync, which is what makes fetch's seen UIDs durable; choose
``NORMAL`` for state that may lose the last commits on power loss (rate limits).

Expiry uses the injected ``clock``: expired rows are filtered out on read, dropped when their
key is written, and purged in bulk on open and every ``_PURGE_EVERY`` writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from rohrpost.store.base import (
    StoreError,
    add_to_counter,
    check_amount,
    check_ttl,
    check_value,
    check_window,
    window_cutoff,
)

__all__ = ["SqliteStore"]

_T = TypeVar("_T")
_PURGE_EVERY = 512
_VALUE, _LIST, _WINDOW = "v", "l", "w"
_KIND_NAMES = {_VALUE: "value", _LIST: "list", _WINDOW: "window"}
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS entries ("
    " key TEXT PRIMARY KEY, kind TEXT NOT NULL, value BLOB, expires REAL) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS entries_expires ON entries(expires) WHERE expires IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS list_items ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, value BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS list_items_key ON list_items(key, id)",
    "CREATE TABLE IF NOT EXISTS window_events (key TEXT NOT NULL, ts REAL NOT NULL,"
    " weight INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS window_events_key ON window_events(key, ts)",
)


def _create_file(path: str) -> None:
    """Create ``path`` mode 0600 (and its directory 0700) unless it exists already.

    SQLite gives its -wal and -shm files the mode of the database file, so they stay private.
    """
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed bits; make the mode exact
    finally:
        os.close(fd)


class SqliteStore:
    """A ``Store`` in one SQLite file, safe for several threads and processes.

    :param path: database file; created 0600 if missing.
    :param clock: time source for expiry (``time.time``; tests pass a fake).
    :param prefix: prepended to every key, so several stores can share one file.
    :param timeout: seconds to wait for another writer's lock before raising ``StoreError``.
    :param synchronous: ``"FULL"`` (durable commits) or ``"NORMAL"``.
    :raises StoreError: if the file cannot be created or opened.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: Callable[[], float] = time.time,
        prefix: str = "",
        timeout: float = 2.0,
        synchronous: str = "FULL",
    ) -> None:
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, got {synchronous!r}")
        self._clock = clock
        self._prefix = prefix
        self._lock = threading.Lock()
        self._writes = 0
        try:
            _create_file(path)
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open state database {path}: {exc}") from exc
        try:
            self._write(self._init_schema)
        except StoreError:
            self._conn.close()
            self._conn = None
            raise

    def _init_schema(self, cur: sqlite3.Cursor) -> None:
        for statement in _SCHEMA:
            cur.execute(statement)
        self._purge(cur)

    def _purge(self, cur: sqlite3.Cursor) -> None:
        """Delete every expired entry with its list items and window events."""
        now = self._clock()
        expired = "SELECT key FROM entries WHERE expires <= ?"
        cur.execute(f"DELETE FROM list_items WHERE key IN ({expired})", (now,))  # noqa: S608
        cur.execute(f"DELETE FROM window_events WHERE key IN ({expired})", (now,))  # noqa: S608
        cur.execute("DELETE FROM entries WHERE expires <= ?", (now,))

    def _run(self, mode: str, body: Callable[[sqlite3.Cursor], _T]) -> _T:
        """Run ``body`` in one transaction (``mode`` is DEFERRED or IMMEDIATE) under the lock."""
        with self._lock:
            if self._conn is None:
                raise StoreError("store is closed")
            try:
                cur = self._conn.cursor()
                cur.execute(f"BEGIN {mode}")
                try:
                    result = body(cur)
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.rollback()
                raise StoreError(f"state database error: {exc}") from exc
            return result

    def _write(self, body: Callable[[sqlite3.Cursor], _T]) -> _T:
        """Run ``body`` in a write transaction, purging expired rows now and then."""
        self._writes += 1
        if self._writes % _PURGE_EVERY == 0:
            self._run("IMMEDIATE", self._purge)
        return self._run("IMMEDIATE", body)

    def _read(self, body: Callable[[sqlite3.Cursor], _T]) -> _T:
        """Run ``body`` in a read transaction, so that its SELECTs see one snapshot."""
        return self._run("DEFERRED", body)

    def _current(
        self, cur: sqlite3.Cursor, key: str, kind: str | None, *, writing: bool = True
    ) -> tuple[str, bytes] | None:
        """Return ``(kind, value)`` of the live entry at full ``key`` or None.

        When ``writing``, an expired entry is dropped here so that the caller starts from an
        absent key; readers leave it (a read transaction must not turn into a write one, which
        WAL may refuse with SQLITE_BUSY). ``kind``, if given, is the kind the caller needs.
        """
        row = cur.execute(
            "SELECT kind, value, expires FROM entries WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        found, value, expires = row
        if expires is not None and expires <= self._clock():
            if writing:
                self._drop(cur, key)
            return None
        if kind is not None and found != kind:
            raise StoreError(f"key {key!r} holds a {_KIND_NAMES[found]}, not a {_KIND_NAMES[kind]}")
        return found, b"" if value is None else bytes(value)

    @staticmethod
    def _drop(cur: sqlite3.Cursor, key: str) -> None:
        cur.execute("DELETE FROM entries WHERE key = ?", (key,))
        cur.execute("DELETE FROM list_items WHERE key = ?", (key,))
        cur.execute("DELETE FROM window_events WHERE key = ?", (key,))

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    async def get(self, key: str) -> bytes | None:
        """Return the value at ``key`` or None."""
        full = self._prefix + key
        found = self._read(lambda cur: self._current(cur, full, _VALUE, writing=False))
        return None if found is None else found[1]

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` at ``key``, replacing any entry."""
        data, ttl = check_value(value), check_ttl(ttl)

        def body(cur: sqlite3.Cursor) -> None:
            self._drop(cur, self._prefix + key)
            cur.execute(
                "INSERT INTO entries (key, kind, value, expires) VALUES (?, ?, ?, ?)",
                (self._prefix + key, _VALUE, data, self._expiry(ttl)),
            )

        self._write(body)

    async def add(self, key: str, value: bytes, ttl: float | None = None) -> bool:
        """Store ``value`` if ``key`` is absent; return True if stored."""
        data, ttl = check_value(value), check_ttl(ttl)

        def body(cur: sqlite3.Cursor) -> bool:
            if self._current(cur, self._prefix + key, None) is not None:
                return False
            cur.execute(
                "INSERT INTO entries (key, kind, value, expires) VALUES (?, ?, ?, ?)",
                (self._prefix + key, _VALUE, data, self._expiry(ttl)),
            )
            return True

        return self._write(body)

    async def delete(self, key: str) -> None:
        """Remove ``key``."""
        self._write(lambda cur: self._drop(cur, self._prefix + key))

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add ``amount`` to the counter at ``key``; ``ttl`` applies on creation."""
        check_amount(amount)
        ttl = check_ttl(ttl)

        def body(cur: sqlite3.Cursor) -> int:
            found = self._current(cur, self._prefix + key, _VALUE)
            total = add_to_counter(None if found is None else found[1], amount)
            data = str(total).encode("ascii")
            if found is None:
                cur.execute(
                    "INSERT INTO entries (key, kind, value, expires) VALUES (?, ?, ?, ?)",
                    (self._prefix + key, _VALUE, data, self._expiry(ttl)),
                )
            else:
                cur.execute(
                    "UPDATE entries SET value = ? WHERE key = ?", (data, self._prefix + key)
                )
            return total

        return self._write(body)

    async def window_add(self, key: str, now: float, window: float, weight: int = 1) -> int:
        """Record an event at ``now`` and return the weight sum inside the window."""
        check_window(now, window, weight)
        full, cutoff = self._prefix + key, window_cutoff(now, window)

        def body(cur: sqlite3.Cursor) -> int:
            expires = self._clock() + window
            if self._current(cur, full, _WINDOW) is None:
                cur.execute(
                    "INSERT INTO entries (key, kind, value, expires) VALUES (?, ?, NULL, ?)",
                    (full, _WINDOW, expires),
                )
            else:
                cur.execute("UPDATE entries SET expires = ? WHERE key = ?", (expires, full))
            cur.execute("DELETE FROM window_events WHERE key = ? AND ts <= ?", (full, cutoff))
            cur.execute(
                "INSERT INTO window_events (key, ts, weight) VALUES (?, ?, ?)", (full, now, weight)
            )
            return self._window_sum(cur, full, cutoff)

        return self._write(body)

    @staticmethod
    def _window_sum(cur: sqlite3.Cursor, full: str, cutoff: float) -> int:
        row = cur.execute(
            "SELECT COALESCE(SUM(weight), 0) FROM window_events WHERE key = ? AND ts > ?",
            (full, cutoff),
        ).fetchone()
        return int(row[0])

    async def window_count(self, key: str, now: float, window: float) -> int:
        """Return the weight sum of events inside the window ending at ``now``."""
        check_window(now, window)
        full, cutoff = self._prefix + key, window_cutoff(now, window)

        def body(cur: sqlite3.Cursor) -> int:
            if self._current(cur, full, _WINDOW, writing=False) is None:
                return 0
            return self._window_sum(cur, full, cutoff)

        return self._read(body)

    async def list_append(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Append ``value`` to the list at ``key``; ``ttl`` applies on creation."""
        data, ttl = check_value(value), check_ttl(ttl)
        full = self._prefix + key

        def body(cur: sqlite3.Cursor) -> None:
            if self._current(cur, full, _LIST) is None:
                cur.execute(
                    "INSERT INTO entries (key, kind, value, expires) VALUES (?, ?, NULL, ?)",
                    (full, _LIST, self._expiry(ttl)),
                )
            cur.execute("INSERT INTO list_items (key, value) VALUES (?, ?)", (full, data))

        self._write(body)

    async def list_get(self, key: str) -> list[bytes]:
        """Return the list at ``key`` (empty if absent)."""
        full = self._prefix + key

        def body(cur: sqlite3.Cursor) -> list[bytes]:
            if self._current(cur, full, _LIST, writing=False) is None:
                return []
            rows = cur.execute(
                "SELECT value FROM list_items WHERE key = ? ORDER BY id", (full,)
            ).fetchall()
            return [bytes(row[0]) for row in rows]

        return self._read(body)

    async def keys(self, prefix: str) -> list[str]:
        """Return the live keys starting with ``prefix``, without the store prefix."""
        full = self._prefix + prefix

        def body(cur: sqlite3.Cursor) -> list[str]:
            rows = cur.execute(
                "SELECT key FROM entries WHERE key >= ? AND substr(key, 1, ?) = ?"
                " AND (expires IS NULL OR expires > ?)",
                (full, len(full), full, self._clock()),
            ).fetchall()
            return sorted(str(row[0])[len(self._prefix) :] for row in rows)

        return self._read(body)

    async def close(self) -> None:
        """Close the connection; later calls raise ``StoreError``."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
