"""Maildir++ quota: read and update the ``maildirsize`` file at the root of a maildir.

Owns ``MaildirQuota``, ``read_quota`` and ``record_delivery``. The format is Courier's
Maildir++ quota: the first line is the quota definition (``"1000000S,1000C"``: bytes and/or
message count; a missing part or 0 means no limit), every further line is ``"BYTES COUNT"``
(negative for removals). The usage is the sum of those lines. A maildir without the file has no
quota. This module never walks the maildir (Dovecot and Courier recalculate the file when it
grows large); it only reads the sum and appends one line per delivery.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

from rohrpost.result import Reply

QUOTA_FILE = "maildirsize"
_MAX_FILE = 1 << 20  # a maildirsize larger than this is broken; ignore rather than stall
_DEF_RE = re.compile(r"^\s*(\d+)([SC])\s*$")


@dataclass(frozen=True)
class MaildirQuota:
    """A quota definition and the current usage (``0`` limit means unlimited)."""

    max_bytes: int
    max_count: int
    used_bytes: int
    used_count: int

    def refuses(self, size: int) -> bool:
        """True when one more message of ``size`` bytes would go over a limit."""
        if self.max_bytes and self.used_bytes + size > self.max_bytes:
            return True
        return bool(self.max_count and self.used_count + 1 > self.max_count)


def parse_maildirsize(text: str) -> MaildirQuota | None:
    """Parse the contents of a ``maildirsize`` file; ``None`` when there is no definition."""
    lines = text.splitlines()
    if not lines:
        return None
    max_bytes = max_count = 0
    for part in lines[0].split(","):
        found = _DEF_RE.match(part)
        if found and found.group(2) == "S":
            max_bytes = int(found.group(1))
        elif found:
            max_count = int(found.group(1))
    used_bytes = used_count = 0
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != 2:
            continue
        try:
            used_bytes += int(fields[0])
            used_count += int(fields[1])
        except ValueError:
            continue
    return MaildirQuota(max_bytes, max_count, used_bytes, used_count)


def read_quota(maildir: str) -> MaildirQuota | None:
    """The quota of ``maildir`` (its root ``maildirsize``), or ``None`` without one."""
    path = os.path.join(maildir, QUOTA_FILE)
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_FILE + 1)
    except FileNotFoundError:
        return None
    if len(data) > _MAX_FILE:
        return None
    return parse_maildirsize(data.decode("ascii", "replace"))


def quota_reply(permanent: bool, quota: MaildirQuota, size: int) -> Reply:
    """The refusal for a message of ``size`` that does not fit: 452 4.2.2 or 552 5.2.2."""
    text = (f"Mailbox full: quota {quota.max_bytes or '-'} bytes/{quota.max_count or '-'} "
            f"messages, used {quota.used_bytes}/{quota.used_count}, message {size} bytes")
    return Reply(552, "5.2.2", text) if permanent else Reply(452, "4.2.2", text)


def record_delivery(maildir: str, size: int) -> None:
    """Append ``"SIZE 1"`` to ``maildirsize`` if the file exists (one ``write`` with O_APPEND).

    Errors are ignored: the message is already delivered and the MUA/IMAP server recalculates
    a damaged file.
    """
    path = os.path.join(maildir, QUOTA_FILE)
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, f"{size} 1\n".encode())
        finally:
            os.close(fd)
