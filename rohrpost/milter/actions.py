"""What a milter connection may ask of the MTA, whichever engine carries it.

Owns ``Rc`` (what a command's handling tells the MTA, libmilter's SMFIS_* values),
``GENERIC_TEMPFAIL`` and the ``MilterActions`` protocol: libmilter's ``smfi_*`` calls as
rohrpost uses them.
``rohrpost.milter.adapter.Actions`` implements it over pymilter, and
``rohrpost.milter.aioengine.WireActions`` over rohrpost's own protocol code; the connection
logic (``rohrpost.milter.connection``, ``rohrpost.milter.mchanges``) only sees this.
"""

from __future__ import annotations

import enum
from typing import Protocol

GENERIC_TEMPFAIL = ("451", "4.7.1", "Temporary local problem, please try again later")


class Rc(enum.IntEnum):
    """What a command's handling tells the MTA (libmilter's ``SMFIS_*`` values)."""

    CONTINUE = 0
    REJECT = 1
    DISCARD = 2
    ACCEPT = 3
    TEMPFAIL = 4
    NOREPLY = 7


class MilterActions(Protocol):
    """The MTA-facing calls available to a connection (most only at end of message)."""

    @property
    def leading_space(self) -> bool:
        """True when header values travel with their leading white space (SMFIP_HDR_LEADSPC)."""

    def can(self, action: str) -> bool:
        """Tell whether the MTA granted ``action`` (``"QUARANTINE"``, ``"CHGFROM"``, ...)."""

    def getsymval(self, name: str) -> str:
        """Return the MTA macro ``name`` (``"{auth_authen}"``, ``"i"``) or ``""``."""

    def setreply(self, code: str, enhanced: str, text: str) -> None:
        """Set the SMTP reply for the next REJECT/TEMPFAIL."""

    def addheader(self, name: str, value: str) -> None:
        """Append a header."""

    def insheader(self, index: int, name: str, value: str) -> None:
        """Insert a header at ``index`` (0 = top)."""

    def chgheader(self, name: str, occurrence: int, value: str) -> None:
        """Change the ``occurrence``-th ``name``; ``""`` deletes it."""

    def replacebody(self, chunk: bytes) -> None:
        """Replace the body; called repeatedly with the new body in chunks."""

    def addrcpt(self, address: str) -> None:
        """Add a recipient."""

    def delrcpt(self, address: str) -> None:
        """Remove a recipient."""

    def chgfrom(self, address: str) -> None:
        """Change the envelope sender."""

    def quarantine(self, reason: str) -> None:
        """Have the MTA hold the message (Postfix: the hold queue)."""
