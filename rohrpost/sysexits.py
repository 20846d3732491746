"""Exit codes from sysexits.h, and the mapping from SMTP replies to them.

Owns the numbers and ``exit_code_for``. Postfix pipe(8) treats only 75 (EX_TEMPFAIL) and 71
(EX_OSERR) as temporary; every other non-zero status bounces. procmail reads the same table.
The full table is in docs/pipes.md.
"""

from __future__ import annotations

from rohrpost.result import Reply

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


def exit_code_for(reply: Reply) -> int:
    """The exit status that tells an MTA what ``reply`` means.

    2xx → 0; 4xx → 75; 5.1.x (bad address/user) → 67; 5.7.x (policy) → 77; other 5xx → 69.
    """
    klass = reply.code // 100
    if klass == 2:
        return EX_OK
    if klass == 4:
        return EX_TEMPFAIL
    if reply.enhanced.startswith("5.1."):
        return EX_NOUSER
    if reply.enhanced.startswith("5.7."):
        return EX_NOPERM
    return EX_UNAVAILABLE
