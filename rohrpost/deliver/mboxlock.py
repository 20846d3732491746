"""Mailbox locking as procmail and Postfix local(8) do it: a dot-lock plus a kernel lock.

Owns ``PATH.lock`` dot-lock files (created with O_EXCL, considered stale after five minutes)
and fcntl ``lockf`` locks taken by polling with a deadline (no SIGALRM, which would disturb
the caller's signal handling and threads).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator

STALE_AFTER = 300.0
_POLL = 0.05


class LockTimeoutError(OSError):
    """The mailbox stayed locked by someone else until the deadline."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EAGAIN, f"{what} still locked at the deadline")


def _try_dotlock(lock: str, clock: Callable[[], float]) -> bool:
    """Create the dot-lock; remove it first when it is older than ``STALE_AFTER``."""
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        with contextlib.suppress(FileNotFoundError):
            if clock() - os.lstat(lock).st_mtime > STALE_AFTER:
                os.unlink(lock)
        return False
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)
    return True


@contextlib.contextmanager
def dotlock(path: str, deadline: float, clock: Callable[[], float] = time.time) -> Iterator[bool]:
    """Hold the dot-lock ``path + ".lock"`` for the ``with`` body.

    Yields False when the directory does not allow creating it (EACCES: we then rely on the
    kernel lock, as procmail does for mail spools it cannot write).

    :param deadline: ``time.monotonic()`` value after which :class:`LockTimeoutError` is raised.
    """
    lock = path + ".lock"
    while True:
        try:
            if _try_dotlock(lock, clock):
                break
        except PermissionError:
            yield False
            return
        if time.monotonic() >= deadline:
            raise LockTimeoutError(lock)
        time.sleep(_POLL)
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def lockf_polling(fd: int, deadline: float) -> None:
    """Take an exclusive ``lockf`` lock on ``fd``, polling until ``deadline`` (monotonic)."""
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        else:
            return
        if time.monotonic() >= deadline:
            raise LockTimeoutError("mailbox (fcntl lock)")
        time.sleep(_POLL)
