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
                     hidden_headers: int = 0) -> None:
    """Send ``changes`` to the MTA in order. Call only from the end-of-message callback.

    :param rcpts: the message's accepted recipients (for the same duplicate rule as
        ``apply_changes``: adding a recipient that is already there does nothing).
    :param hidden_headers: headers the MTA put on top without showing them to the milter.
        Postfix adds its own Received: there and counts it for smfi_insheader (not for
        smfi_chgheader), so an insert at index n >= 1 of the message the filters saw is sent
        as n + 1; index 0 stays 0 (the very top, where Authentication-Results belongs).
    """
    current = list(rcpts)
    space = actions.leading_space
    for change in changes:
        if isinstance(change, AddHeader):
            actions.addheader(change.name, milter_value(change.name, change.value, space))
        elif isinstance(change, InsertHeader):
            index = change.index + hidden_headers if change.index > 0 else 0
            actions.insheader(index, change.name,
                              milter_value(change.name, change.value, space))
        elif isinstance(change, ChangeHeader):
            value = "" if change.value is None else milter_value(change.name, change.value, space)
            actions.chgheader(change.name, change.occurrence, value)
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
