"""Apply rohrpost changes with libmilter calls (addheader, chgheader, replacebody, ...).

Owns ``apply_via_milter`` and ``milter_value``. Follows the same header-index rule as
``rohrpost.apply.apply_changes`` (a ``ChangeHeader`` addresses the n-th header of that name as
the message is at that moment), which is how Postfix's cleanup applies milter requests, and
uses the same folding (``rohrpost.apply.fold``), so both modes produce the same header bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from rohrpost.apply import fold
from rohrpost.changes import (
    AddHeader,
    AddRecipient,
    Change,
    ChangeHeader,
    ChangeSender,
    DeleteRecipient,
    InsertHeader,
    ReplaceBody,
)
from rohrpost.milter.actions import MilterActions

BODY_CHUNK = 65536


def milter_value(name: str, value: str, leading_space: bool) -> str:
    r"""Return the header value as libmilter wants it: folded with ``"\n\t"``, no final newline.

    With SMFIP_HDR_LEADSPC negotiated the MTA takes the value verbatim after the colon, so the
    space after the colon is part of the value; otherwise the MTA adds it.
    """
    folded = fold(name, value, b"\n").decode("utf-8")
    text = folded[len(name) + 1 :].removesuffix("\n")
    return text if leading_space else text.removeprefix(" ")


def apply_via_milter(actions: MilterActions, rcpts: Sequence[str], changes: Sequence[Change], *,
                     hidden_headers: int = 0, header_names: Sequence[str] = ()) -> None:
    """Send ``changes`` to the MTA in order. Call only from the end-of-message callback.

    :param rcpts: the message's accepted recipients (for the same duplicate rule as
        ``apply_changes``: adding a recipient that is already there does nothing).
    :param hidden_headers: headers the MTA put on top without showing them to the milter.
        Postfix adds its own Received: there and counts it for smfi_insheader (not for
        smfi_chgheader); ``_Inserts`` turns the filters' insert positions into the MTA's.
    :param header_names: the names of the message's headers as the filters saw them (needed
        with ``hidden_headers`` to follow where the hidden ones end up).
    """
    inserts = _Inserts(header_names, hidden_headers)
    current = list(rcpts)
    space = actions.leading_space
    for change in changes:
        if isinstance(change, AddHeader):
            actions.addheader(change.name, milter_value(change.name, change.value, space))
            inserts.names.append(change.name.lower())
        elif isinstance(change, InsertHeader):
            actions.insheader(inserts.insert(change.index, change.name), change.name,
                              milter_value(change.name, change.value, space))
        elif isinstance(change, ChangeHeader):
            value = "" if change.value is None else milter_value(change.name, change.value, space)
            actions.chgheader(change.name, change.occurrence, value)
            inserts.change(change.name, change.occurrence, deleted=change.value is None)
        elif isinstance(change, ReplaceBody):
            body = change.body
            actions.replacebody(body[:BODY_CHUNK])  # an empty body still needs one call
            for start in range(BODY_CHUNK, len(body), BODY_CHUNK):
                actions.replacebody(body[start : start + BODY_CHUNK])
        elif isinstance(change, AddRecipient):
            if change.address.lower() not in (r.lower() for r in current):
                actions.addrcpt(change.address)
                current.append(change.address)
        elif isinstance(change, DeleteRecipient):
            for rcpt in [r for r in current if r.lower() == change.address.lower()]:
                actions.delrcpt(rcpt)
                current.remove(rcpt)
        elif isinstance(change, ChangeSender):
            actions.chgfrom(change.address)


class _Inserts:
    """Where the MTA's hidden headers sit among the visible ones while changes are applied.

    They start on top. An insert at a visible position at or above them goes above them (so
    index 0 stays the very top) and pushes them down; one below them is sent ``hidden``
    further down; deleting a visible header above them moves them up. This is how an insert
    lands where ``rohrpost.apply`` puts it in pipe mode, whatever inserts came before it.
    """

    def __init__(self, names: Sequence[str], hidden: int) -> None:
        self.names = [n.lower() for n in names]
        self.hidden = hidden
        self.pos = 0  # visible headers above the hidden ones

    def insert(self, index: int, name: str) -> int:
        """Record an insert at visible ``index``; return the MTA's index for it."""
        index = min(index, len(self.names))
        self.names.insert(index, name.lower())
        if index <= self.pos:
            self.pos += 1
            return index
        return index + self.hidden

    def change(self, name: str, occurrence: int, *, deleted: bool) -> None:
        """Record a chgheader (``rohrpost.apply``'s rule: a missing header is appended)."""
        lname, seen = name.lower(), 0
        for i, existing in enumerate(self.names):
            if existing == lname:
                seen += 1
                if seen == occurrence:
                    if deleted:
                        del self.names[i]
                        if i < self.pos:
                            self.pos -= 1
                    return
        if not deleted:
            self.names.append(lname)
