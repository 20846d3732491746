"""Delivery outcomes: one SMTP-style reply per recipient, and the exit code they add up to.

Owns ``RcptOutcome``, ``DeliveryReport`` (with the sysexits mapping that Postfix pipe(8) and
procmail read) and the helpers that turn an ``OSError`` into a reply. Agents build reports;
nothing here performs I/O.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

from rohrpost.result import Reply

EX_OK = 0
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_NOPERM = 77

#: Enhanced code used only for permanent failures to write a local mailbox (maps to 73).
LOCAL_WRITE_PERMANENT = "5.2.0"

_TEMP_ERRNOS = {
    errno.ENOSPC: (452, "4.3.1", "Insufficient system storage"),
    errno.EDQUOT: (452, "4.2.2", "Mailbox full (quota exceeded)"),
    errno.EFBIG: (452, "4.2.2", "Mailbox full (file size limit)"),
    errno.EIO: (451, "4.3.0", "I/O error"),
}
_PERMANENT_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.ELOOP,
     errno.ENAMETOOLONG}
)


@dataclass(frozen=True)
class RcptOutcome:
    """The reply for one recipient: 2xx delivered, 4xx try later, 5xx permanent failure.

    ``rcpt`` is ``""`` when a local agent delivered a message that had no envelope recipient.
    """

    rcpt: str
    reply: Reply


@dataclass(frozen=True)
class DeliveryReport:
    """What happened to one delivery attempt.

    Definitions (one exit code must summarise all recipients):

    * ``ok``: every outcome is 2xx (and there is at least one outcome).
    * ``temporary``: not ok and at least one outcome is 4xx, even if others are 5xx. A single
      exit code cannot say both, and a temporary failure must never become a bounce; the price
      is that the MTA retries the whole message (possibly a duplicate for the 2xx recipients).
    * ``permanent``: not ok and not temporary, i.e. every failure is 5xx.
    """

    outcomes: tuple[RcptOutcome, ...]
    detail: str

    @property
    def ok(self) -> bool:
        """True when every recipient got a 2xx reply."""
        return bool(self.outcomes) and all(o.reply.code < 300 for o in self.outcomes)

    @property
    def temporary(self) -> bool:
        """True when not ok and any recipient got a 4xx reply (see the class docstring)."""
        return not self.ok and (
            not self.outcomes or any(400 <= o.reply.code < 500 for o in self.outcomes)
        )

    @property
    def permanent(self) -> bool:
        """True when delivery failed and every failure is permanent (5xx)."""
        return not self.ok and not self.temporary

    @property
    def exit_code(self) -> int:
        """The sysexits.h code for this report, as Postfix pipe(8) and procmail read it.

        0 ok; 75 temporary; for permanent failures the first 5xx outcome decides: 5.1.1 (unknown
        user) 67, 5.7.x (policy) 77, 5.2.0 (local mailbox cannot be written) 73, else 69.
        """
        if self.ok:
            return EX_OK
        if self.temporary:
            return EX_TEMPFAIL
        first = next(o.reply for o in self.outcomes if o.reply.code >= 500)
        if first.enhanced == "5.1.1":
            return EX_NOUSER
        if first.enhanced.startswith("5.7."):
            return EX_NOPERM
        if first.enhanced == LOCAL_WRITE_PERMANENT:
            return EX_CANTCREAT
        return EX_UNAVAILABLE

    @property
    def summary(self) -> str:
        """One line per recipient, ``rcpt: reply``, for logs and stderr."""
        return "; ".join(f"{o.rcpt or '-'}: {o.reply}" for o in self.outcomes)


def same_for_all(rcpts: Iterable[str], reply: Reply, detail: str) -> DeliveryReport:
    """Build a report where every recipient (or the single ``""`` recipient) gets ``reply``."""
    names = tuple(rcpts) or ("",)
    return DeliveryReport(tuple(RcptOutcome(r, reply) for r in names), detail)


def reply_for_oserror(exc: OSError, what: str) -> Reply:
    """Map an ``OSError`` from a local mailbox write to a reply.

    Full disks, quotas and I/O errors are temporary (452/451); errors that retrying cannot fix
    (permission, read-only file system, a directory where a file should be) are 550 5.2.0 and
    exit 73; anything unknown is temporary, so nothing bounces by accident.
    """
    reason = exc.strerror or type(exc).__name__
    if exc.errno in _TEMP_ERRNOS:
        code, enhanced, text = _TEMP_ERRNOS[exc.errno]
        return Reply(code, enhanced, f"{text}: cannot {what}: {reason}")
    if exc.errno in _PERMANENT_ERRNOS:
        return Reply(550, LOCAL_WRITE_PERMANENT, f"cannot {what}: {reason}")
    return Reply(451, "4.3.0", f"cannot {what}: {reason}")


def internal_error(what: str) -> Reply:
    """Return a generic temporary reply for an unexpected error (details go to the log)."""
    return Reply(451, "4.3.0", f"internal error while {what}; try again later")
