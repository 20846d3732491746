"""Replay messages through the real milter code with pymilter's TestCtx (no MTA, no socket).

``ExactCtx`` is pymilter's ``Milter.testctx.TestCtx`` with the transport calls that change a
message modelled exactly as Postfix's cleanup applies them (header list with insert index,
n-th occurrence for chgheader, "" deletes, a missing header is added), so the header list it
ends up with can be compared byte for byte with ``rohrpost.apply.apply_changes``.
``replay`` drives the callbacks in libmilter's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import Milter
from Milter.testctx import TestCtx

from rohrpost.message import Message
from rohrpost.milter.adapter import Bridge


def wire_value(raw_header: bytes) -> bytes:
    """What Postfix sends as a header value: bytes after the colon, LF between folded lines."""
    value = raw_header.split(b":", 1)[1]
    return value.rstrip(b"\r\n").replace(b"\r\n", b"\n")


class ExactCtx(TestCtx):
    """TestCtx whose header/recipient/body changes follow Postfix's semantics exactly."""

    HIDDEN = ("Received", b" (hidden: added by the MTA, not shown to the milter)")

    def __init__(self, postfix: bool = False) -> None:
        super().__init__()
        # like Postfix: macro v names the MTA, and its own Received: sits on top, counted by
        # insheader but invisible to the milter and to chgheader
        self.postfix = postfix
        if postfix:
            self._setsymval("v", "Postfix 3.7.11")
        self.headers: list[tuple[str, bytes]] = []  # (name, value as sent: leading space kept)
        self.added_rcpts: list[str] = []
        self.deleted_rcpts: list[str] = []
        self.new_from: str | None = None
        self.new_body: bytes | None = None
        self.quarantined: str | None = None
        self.body_calls = 0

    def addheader(self, field, value, idx):
        entry = (field, value.encode())
        if idx is None or idx < 0:
            self.headers.append(entry)
        else:
            self.headers.insert(min(idx, len(self.headers)), entry)

    def chgheader(self, field, idx, value):
        seen = 0
        for i, entry in enumerate(self.headers):
            name = entry[0]
            if entry == self.HIDDEN:
                continue
            if name.lower() == field.lower():
                seen += 1
                if seen == idx:
                    if value == "":
                        del self.headers[i]
                    else:
                        self.headers[i] = (field, value.encode())
                    return
        if value != "":
            self.headers.append((field, value.encode()))

    def addrcpt(self, rcpt, params=None):
        self.added_rcpts.append(rcpt)

    def delrcpt(self, rcpt):
        self.deleted_rcpts.append(rcpt)

    def chgfrom(self, sender, params=None):
        self.new_from = sender

    def replacebody(self, chunk):
        self.new_body = (self.new_body or b"") + chunk

    def quarantine(self, reason):
        self.quarantined = reason

    def header_bytes(self) -> bytes:
        """The header block now, CRLF line ends (as Postfix would write it)."""
        out = b""
        for name, value in self.headers:
            if (name, value) == self.HIDDEN:
                continue
            out += (name.encode() + b":" + value).replace(b"\n", b"\r\n") + b"\r\n"
        return out


@dataclass
class Replay:
    """What the client was told at each step."""

    connect: int = Milter.CONTINUE
    mail: int | None = None
    rcpts: list[int] = field(default_factory=list)
    eom: int | None = None
    replies: list[tuple] = field(default_factory=list)


def _reply(ctx: ExactCtx, rc: int, out: Replay) -> None:
    if rc in (Milter.REJECT, Milter.TEMPFAIL):
        out.replies.append(ctx._reply)


def replay(ctx: ExactCtx, raw: bytes, sender: str, rcpts: list[str], *,
           ip: str = "192.0.2.1", helo: str = "client.example", connect: bool = True,
           macros: dict[str, str] | None = None, chunk: int = 7000) -> Replay:
    """Send one message through ``ctx`` in libmilter's order; stop where the MTA would."""
    out = Replay()
    for k, v in (macros or {}).items():
        ctx._setsymval(k, v)
    if connect:
        out.connect = ctx._connect("client.example", helo, ip)
        if out.connect != Milter.CONTINUE:
            _reply(ctx, out.connect, out)
            return out
    out.mail = ctx._envfrom(f"<{sender}>")
    if out.mail != Milter.CONTINUE:
        _reply(ctx, out.mail, out)
        return out
    for rcpt in rcpts:
        ctx._reply = None
        rc = ctx._envrcpt(f"<{rcpt}>")
        out.rcpts.append(rc)
        _reply(ctx, rc, out)
    if not any(rc == Milter.CONTINUE for rc in out.rcpts):
        ctx._priv.abort()
        return out
    message = Message(raw)
    shown = [(h.name, wire_value(h.raw)) for h in message.headers]
    ctx.headers = ([ExactCtx.HIDDEN] if ctx.postfix else []) + shown
    for name, value in shown:
        rc = ctx._priv.header_bytes(name, value)
        assert rc in (Milter.CONTINUE, Milter.NOREPLY)
    assert ctx._eoh() in (Milter.CONTINUE, Milter.NOREPLY)
    body = message.body
    for start in range(0, len(body), chunk):
        ctx.body_calls += 1
        assert ctx._priv.body(body[start : start + chunk]) in (Milter.CONTINUE, Milter.NOREPLY)
    ctx._reply = None
    out.eom = ctx._eom()
    _reply(ctx, out.eom, out)
    return out


def bridge_factory(handler_factory):
    """A zero-argument factory for ``Milter.factory`` (what TestCtx's negotiate uses)."""
    return lambda: Bridge(handler_factory)
