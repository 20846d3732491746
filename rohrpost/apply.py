"""Apply changes to message bytes and envelope (pipe and SMTP modes).

Owns ``apply_changes`` and ``fold``. The milter adapter maps the same changes to libmilter
calls instead; both follow one rule for header indexes: a ``ChangeHeader`` addresses the
n-th header of that name as the message is at that moment (after earlier changes), which is how
Postfix's cleanup applies milter requests. The message is rebuilt only when something changed.
"""

from __future__ import annotations

from collections.abc import Sequence

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
from rohrpost.envelope import Envelope
from rohrpost.message import Message

MAX_LINE = 78


def fold(name: str, value: str, eol: bytes = b"\n") -> bytes:
    r"""Render ``Name: value`` folded at white space so lines stay near 78 characters.

    Explicit ``"\\n\\t"`` folds in ``value`` (used for Authentication-Results) are kept.
    """
    out: list[str] = []
    for k, segment in enumerate(value.split("\n")):
        line = f"{name}: {segment.strip()}" if k == 0 else "\t" + segment.strip()
        while len(line) > MAX_LINE:
            cut = line.rfind(" ", 1, MAX_LINE)
            if cut <= len(name) + 1:
                cut = line.find(" ", MAX_LINE)
                if cut < 0:
                    break
            out.append(line[:cut])
            line = "\t" + line[cut + 1 :]
        out.append(line)
    return eol.join(s.encode("utf-8") for s in out) + eol


def apply_changes(message: Message, envelope: Envelope,
                  changes: Sequence[Change]) -> tuple[Message, Envelope]:
    """Return the message and envelope with ``changes`` applied in order.

    When no change touches the message, the very same ``Message`` object is returned, so
    untouched mail is never re-serialized.
    """
    if not changes:
        return message, envelope
    eol = b"\r\n" if message.crlf else b"\n"
    headers = [(h.name, h.raw) for h in message.headers]
    body = message.body
    touched = False
    for change in changes:
        if isinstance(change, AddHeader):
            headers.append((change.name, fold(change.name, change.value, eol)))
        elif isinstance(change, InsertHeader):
            pos = min(change.index, len(headers))
            headers.insert(pos, (change.name, fold(change.name, change.value, eol)))
        elif isinstance(change, ChangeHeader):
            _change_header(headers, change, eol)
        elif isinstance(change, ReplaceBody):
            body = change.body
        else:
            envelope = _envelope_change(envelope, change)
            continue
        touched = True
    if not touched:
        return message, envelope
    raw = message.from_line + b"".join(raw for _n, raw in headers) + eol + body
    return Message(raw), envelope


def _change_header(headers: list[tuple[str, bytes]], change: ChangeHeader, eol: bytes) -> None:
    lname = change.name.lower()
    seen = 0
    for i, (name, _raw) in enumerate(headers):
        if name.lower() != lname:
            continue
        seen += 1
        if seen == change.occurrence:
            if change.value is None:
                del headers[i]
            else:
                headers[i] = (name, fold(name, change.value, eol))
            return
    if change.value is not None:
        # like milter's chgheader: changing a header that is not there adds it
        headers.append((change.name, fold(change.name, change.value, eol)))


def _envelope_change(envelope: Envelope, change: Change) -> Envelope:
    if isinstance(change, AddRecipient):
        if change.address.lower() in (r.lower() for r in envelope.rcpts):
            return envelope
        return envelope.replace(rcpts=(*envelope.rcpts, change.address))
    if isinstance(change, DeleteRecipient):
        keep = tuple(r for r in envelope.rcpts if r.lower() != change.address.lower())
        return envelope.replace(rcpts=keep)
    if isinstance(change, ChangeSender):
        return envelope.replace(mail_from=change.address)
    raise TypeError(f"not an envelope change: {change!r}")
