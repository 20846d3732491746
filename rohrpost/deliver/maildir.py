"""Maildir and Maildir++ delivery (https://cr.yp.to/proto/maildir.html).

Owns unique file names, the tmp/ -> new/ protocol and Maildir++ folder names. A message is
written to tmp/ with O_EXCL, fsynced, linked into new/ and the new/ directory fsynced, so a
crash leaves at most a stray file in tmp/ and never a partial file in new/. Folder names are
validated here so that no name can reach outside the maildir.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rohrpost.deliver.destination import DestinationError
from rohrpost.deliver.localform import local_form
from rohrpost.deliver.report import reply_for_oserror
from rohrpost.result import Reply

_MAX_NAME_TRIES = 50
_SUBDIRS = ("cur", "new", "tmp")


@dataclass
class UniqueNames:
    """Maildir file names ``seconds.M<usec>P<pid>Q<counter>.<host>``.

    The counter is per instance (no module state); O_EXCL in tmp/ and link() into new/ make a
    collision an error we retry with the next counter, never an overwrite.
    """

    clock: Callable[[], float] = time.time
    hostname: str = field(default_factory=socket.gethostname)
    counter: int = 0

    def next(self) -> str:
        """Return a fresh name."""
        self.counter += 1
        now = self.clock()
        seconds, usec = int(now), int((now % 1) * 1_000_000)
        return f"{seconds}.M{usec}P{os.getpid()}Q{self.counter}.{sanitize_host(self.hostname)}"


def sanitize_host(host: str) -> str:
    r"""Encode a host name for a maildir file name.

    "/" becomes "\057" and ":" becomes "\072" (per the maildir spec); control characters and
    backslashes are escaped the same way.
    """
    out = []
    for ch in host or "localhost":
        if ch in "/:\\" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return "".join(out)


def folder_dirname(folder: str) -> str:
    r"""Validate a Maildir++ folder name and return its directory name (``Junk`` -> ``.Junk``).

    ``"."`` separates hierarchy levels (``"Archive.2024"``), as in Maildir++. Refused: empty
    names, "/", "\\", "..", a leading or trailing ".", control characters, over 255 bytes.

    :raises DestinationError: when the name is unsafe or invalid.
    """
    problems = []
    if not folder or len(folder.encode("utf-8", "replace")) > 254:
        problems.append("must be 1 to 254 bytes")
    if "/" in folder or "\\" in folder:
        problems.append("must not contain '/' or '\\'")
    if ".." in folder or folder.startswith(".") or folder.endswith("."):
        problems.append("must not contain '..' nor start or end with '.'")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029" for ch in folder):
        problems.append("must not contain control characters")
    if problems:
        raise DestinationError(
            f"bad maildir folder name {folder!r}: {'; '.join(problems)} (example: 'Junk')"
        )
    return "." + folder


def ensure_maildir(path: str, *, subfolder: bool = False) -> None:
    """Create the maildir and its cur/, new/, tmp/ (mode 0700) when missing.

    A Maildir++ subfolder also gets an empty ``maildirfolder`` file, which Dovecot and Courier
    use to recognise it.
    """
    for sub in _SUBDIRS:
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    if subfolder:
        marker = os.path.join(path, "maildirfolder")
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        os.close(fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _create_tmp(path: str, names: UniqueNames) -> tuple[str, int]:
    """Create a new file in tmp/ with O_EXCL; retry with the next name on a collision."""
    for _ in range(_MAX_NAME_TRIES):
        name = names.next()
        tmp = os.path.join(path, "tmp", name)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return name, os.open(tmp, flags, 0o600)
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no unique file name in tmp/ after many tries")


def _publish(tmp: str, new_dir: str, name: str, names: UniqueNames) -> str:
    """Link tmp into new/ without ever replacing a file; return the path in new/.

    A name already taken in new/ (a clock or counter collision) is retried with the next
    name. File systems without hard links fall back to rename after checking the name is free.
    """
    for _ in range(_MAX_NAME_TRIES):
        new = os.path.join(new_dir, name)
        try:
            os.link(tmp, new)
        except FileExistsError:
            name = names.next()
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if os.path.lexists(new):
                name = names.next()
                continue
            os.rename(tmp, new)
            return new
        os.unlink(tmp)
        return new
    raise OSError(errno.EEXIST, "no unique file name in new/ after many tries")


def write_message(path: str, data: bytes, names: UniqueNames) -> str:
    """Write ``data`` into maildir ``path`` (which must exist) and return the new/ file path.

    On any error the tmp/ file is removed and the error re-raised; new/ is only touched by an
    atomic link of a complete, fsynced file.
    """
    name, fd = _create_tmp(path, names)
    tmp = os.path.join(path, "tmp", name)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        new = _publish(tmp, os.path.join(path, "new"), name, names)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(os.path.join(path, "new"))
    return new


def deliver_maildir(
    path: str,
    raw: bytes,
    folder: str | None = None,
    *,
    sender: str | None = None,
    rcpts: Sequence[str] = (),
    add_headers: bool = True,
    names: UniqueNames | None = None,
) -> Reply:
    """Deliver one copy of ``raw`` into maildir ``path`` (or its Maildir++ ``folder``).

    A leading mbox From_ line is dropped and CRLF becomes LF. With ``add_headers`` (default)
    ``Return-Path: <sender>`` (when ``sender`` is not None) and one ``Delivered-To:`` per
    recipient are put on top, as Postfix local(8) does. Never raises for delivery failures.

    :param folder: Maildir++ folder name such as ``"Junk"`` (``PATH/.Junk``); ``None`` or
        ``"INBOX"`` is the maildir itself. An unsafe name gives 554 5.3.5 and writes nothing.
    :returns: 250 2.0.0 with the file name, 452/451 for full disks, quotas and I/O errors,
        550 5.2.0 for errors retrying cannot fix.
    """
    target = path
    try:
        if folder is not None and folder.upper() != "INBOX":
            target = os.path.join(path, folder_dirname(folder))
    except DestinationError as exc:
        return Reply(554, "5.3.5", str(exc))
    data = local_form(raw, sender, rcpts) if add_headers else local_form(raw)
    try:
        if target != path:
            ensure_maildir(path)
        ensure_maildir(target, subfolder=target != path)
        new = write_message(target, data, names or UniqueNames())
    except OSError as exc:
        return reply_for_oserror(exc, f"deliver to maildir {target}")
    return Reply(250, "2.0.0", f"delivered to maildir as {new}")
