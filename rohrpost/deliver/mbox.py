"""mbox delivery in the mboxrd format, safe against concurrent writers and full disks.

Owns the From_ line, mboxrd quoting and the append itself. Appends hold a dot-lock and an
fcntl lock (see ``mboxlock``), separate messages by a blank line, fsync, and on any failure
truncate the file back to its size before the append, so a reader never sees a partial
message. Also offers ``split_mbox`` (the inverse) for tests and tools.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Sequence

from rohrpost.deliver.localform import header_safe_address, local_form
from rohrpost.deliver.mboxlock import LockTimeoutError, dotlock, lockf_polling
from rohrpost.deliver.report import reply_for_oserror
from rohrpost.result import Reply

_QUOTE_RE = re.compile(rb"^(>*From )", re.M)
_UNQUOTE_RE = re.compile(rb"^>(>*From )", re.M)
_SEPARATOR_RE = re.compile(rb"(?:^|\n\n)From [^\n]*\n")
_FROM_SAFE_RE = re.compile(rb"[\s\x00-\x1f\x7f]")


def from_line(sender: str, when: float) -> bytes:
    """``From sender asctime-date`` in UTC; ``MAILER-DAEMON`` for the null sender."""
    name = _FROM_SAFE_RE.sub(b"_", header_safe_address(sender)) or b"MAILER-DAEMON"
    return b"From " + name + b" " + time.asctime(time.gmtime(when)).encode("ascii") + b"\n"


def mboxrd_quote(body: bytes) -> bytes:
    """Add one ">" to every line matching ``>*From `` (mboxrd), so the quoting is reversible."""
    return _QUOTE_RE.sub(rb">\1", body)


def mboxrd_unquote(body: bytes) -> bytes:
    """Undo :func:`mboxrd_quote`."""
    return _UNQUOTE_RE.sub(rb"\1", body)


def mbox_entry(message: bytes, sender: str, when: float) -> bytes:
    """Build a complete mbox entry: From_ line, quoted message ending in LF, a blank line."""
    body = mboxrd_quote(message)
    if not body.endswith(b"\n"):
        body += b"\n"
    return from_line(sender, when) + body + b"\n"


def split_mbox(data: bytes) -> list[bytes]:
    """Split an mboxrd file into unquoted messages (without From_ line and separator line)."""
    starts = [m.start() if m.start() == 0 else m.start() + 2 for m in _SEPARATOR_RE.finditer(data)]
    messages = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(data)
        chunk = data[start:end]
        body = chunk[chunk.index(b"\n") + 1 :]
        if body.endswith(b"\n\n"):
            body = body[:-1]
        messages.append(mboxrd_unquote(body))
    return messages


def _separator_needed(fd: int, size: int) -> bytes:
    """Return what to write so the new entry follows a blank line (b"" for an empty file)."""
    if size == 0:
        return b""
    tail = os.pread(fd, 2, max(0, size - 2))
    if tail.endswith(b"\n\n") or (size == 1 and tail == b"\n"):
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _append_locked(fd: int, entry: bytes) -> None:
    """Append ``entry`` at the end; on failure truncate back to the original size."""
    size = os.fstat(fd).st_size
    data = _separator_needed(fd, size) + entry
    try:
        view = memoryview(data)
        offset = size
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written
        os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
            os.fsync(fd)
        raise


def append_mbox(path: str, entry: bytes, deadline: float) -> None:
    """Lock mbox ``path`` (dot-lock, then fcntl), append ``entry`` and unlock.

    :raises OSError: on lock timeouts (:class:`LockTimeout`) and write errors.
    """
    with dotlock(path, deadline):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            lockf_polling(fd, deadline)
            _append_locked(fd, entry)
        finally:
            os.close(fd)  # closing releases the fcntl lock


def deliver_mbox(
    path: str,
    raw: bytes,
    *,
    sender: str | None = None,
    rcpts: Sequence[str] = (),
    add_headers: bool = True,
    timeout: float = 60.0,
    clock: Callable[[], float] = time.time,
) -> Reply:
    """Append one copy of ``raw`` to mbox ``path``; never raises for delivery failures.

    A leading From_ line is dropped and CRLF becomes LF before quoting; with ``add_headers``
    the trace headers (``Return-Path``, ``Delivered-To``) go on top.

    :returns: 250 2.0.0; 451 4.2.1 when the lock is not free within ``timeout``; 452/451 for
        full disks and I/O errors; 550 5.2.0 for errors retrying cannot fix.
    """
    message = local_form(raw, sender, rcpts) if add_headers else local_form(raw)
    entry = mbox_entry(message, sender or "", clock())
    try:
        append_mbox(path, entry, time.monotonic() + timeout)
    except LockTimeoutError as exc:
        return Reply(451, "4.2.1", f"mailbox {path} busy: {exc.strerror}")
    except OSError as exc:
        return reply_for_oserror(exc, f"append to mbox {path}")
    return Reply(250, "2.0.0", f"delivered to mbox {path}")
