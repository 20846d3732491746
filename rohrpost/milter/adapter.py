"""The one module that imports pymilter (``Milter`` and the C module ``milter``).

Owns the typed boundary to libmilter: ``Handler`` (what a connection implements, fully
typed), ``Actions`` (the libmilter calls a handler may make, ``MilterActions`` over pymilter),
``Bridge`` (the ``Milter.Base`` subclass libmilter and pymilter's ``TestCtx`` drive) and the
process-level calls ``register``, ``open_socket``, ``run_main`` and ``stop``. Nothing here
knows about filters or the pipeline; nothing outside this module touches pymilter.

pymilter is untyped, so every value that crosses this boundary is converted to a plain typed
Python value here.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol

import Milter
import milter

from rohrpost.milter.actions import GENERIC_TEMPFAIL, Rc

log = logging.getLogger("rohrpost.milter")

# rohrpost's Rc are libmilter's SMFIS_* codes; pymilter passes them through unchanged
assert [int(r) for r in Rc] == [milter.CONTINUE, milter.REJECT, milter.DISCARD, milter.ACCEPT,
                                milter.TEMPFAIL, milter.NOREPLY]


# The actions rohrpost may ask for (smfi_* calls), negotiated per connection.
WANTED_ACTIONS = (milter.ADDHDRS | milter.CHGHDRS | milter.CHGBODY | milter.ADDRCPT
                  | milter.DELRCPT | milter.CHGFROM | milter.QUARANTINE)
# Protocol steps: skip DATA and unknown commands, no reply needed for headers, end of headers
# and body chunks (they only collect bytes), header values with their leading space kept.
WANTED_PROTOCOL = (milter.P_NOUNKNOWN | milter.P_NODATA | milter.P_NR_HDR | milter.P_NR_EOH
                   | milter.P_NR_BODY | milter.P_HDR_LEADSPC)


class Actions:
    """The libmilter calls available to a handler (most only from end of message)."""

    def __init__(self, bridge: Any) -> None:
        self._bridge = bridge

    @property
    def leading_space(self) -> bool:
        """True when header values travel with their leading white space (SMFIP_HDR_LEADSPC)."""
        return bool(self._bridge.negotiated_protocol & milter.P_HDR_LEADSPC)

    def can(self, action: str) -> bool:
        """Tell whether the MTA granted ``action`` (``"QUARANTINE"``, ``"CHGFROM"``, ...)."""
        return bool(self._bridge.negotiated_actions & getattr(milter, action))

    def getsymval(self, name: str) -> str:
        """Return the MTA macro ``name`` (``"{auth_authen}"``, ``"i"``) or ``""``."""
        value = self._bridge.getsymval(name)
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return str(value) if value is not None else ""

    def setreply(self, code: str, enhanced: str, text: str) -> None:
        """Set the SMTP reply for the next REJECT/TEMPFAIL ("%" is doubled as libmilter needs)."""
        self._bridge.setreply(code, enhanced or None, text.replace("%", "%%"))

    def addheader(self, name: str, value: str) -> None:
        """smfi_addheader: append a header."""
        self._bridge.addheader(name, value, -1)

    def insheader(self, index: int, name: str, value: str) -> None:
        """smfi_insheader: insert a header at ``index`` (0 = top)."""
        self._bridge.addheader(name, value, index)

    def chgheader(self, name: str, occurrence: int, value: str) -> None:
        """smfi_chgheader: change the ``occurrence``-th ``name``; ``""`` deletes it."""
        self._bridge.chgheader(name, occurrence, value)

    def replacebody(self, chunk: bytes) -> None:
        """smfi_replacebody: call repeatedly with the new body in chunks."""
        self._bridge.replacebody(chunk)

    def addrcpt(self, address: str) -> None:
        """smfi_addrcpt."""
        self._bridge.addrcpt(f"<{address}>")

    def delrcpt(self, address: str) -> None:
        """smfi_delrcpt."""
        self._bridge.delrcpt(f"<{address}>")

    def chgfrom(self, address: str) -> None:
        """smfi_chgfrom."""
        self._bridge.chgfrom(f"<{address}>")

    def quarantine(self, reason: str) -> None:
        """smfi_quarantine: the MTA holds the message (Postfix: the hold queue)."""
        self._bridge.quarantine(reason)


class Handler(Protocol):
    """One SMTP connection as seen by rohrpost; every method returns what libmilter gets."""

    def on_connect(self, hostname: str, address: str) -> Rc:
        """Start a connection from ``address`` (IP, or "" for a Unix socket) named ``hostname``."""

    def on_helo(self, name: str) -> Rc:
        """Check HELO/EHLO."""

    def on_mail(self, sender: str, params: list[str]) -> Rc:
        """Start a message at MAIL FROM (angle brackets included, as the MTA sent it)."""

    def on_rcpt(self, rcpt: str, params: list[str]) -> Rc:
        """Check one RCPT TO."""

    def on_header(self, name: str, value: bytes) -> Rc:
        """Take one header field, value as the MTA sent it."""

    def on_eoh(self) -> Rc:
        """Note the end of headers."""

    def on_body(self, chunk: bytes) -> Rc:
        """Take a chunk of the body."""

    def on_eom(self) -> Rc:
        """Decide and apply at the end of the message."""

    def on_abort(self) -> None:
        """Forget the current message (RSET, QUIT, lost client)."""

    def on_close(self) -> None:
        """Clean up: the connection closed."""


HandlerFactory = Callable[[Actions], Handler]


def _guard(name: str, call: Callable[[], Rc], bridge: Any) -> int:
    """Run a handler callback; anything it lets escape becomes a generic tempfail."""
    try:
        return int(call())
    except Exception:
        log.exception("milter callback %s failed", name)
        try:
            bridge.setreply(*GENERIC_TEMPFAIL)
        except Exception:
            log.debug("setreply failed in %s", name, exc_info=True)
        return int(Rc.TEMPFAIL)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


class Bridge(Milter.Base):  # type: ignore[misc]  # pymilter is untyped
    """The object libmilter (or ``Milter.testctx.TestCtx``) calls; forwards to a ``Handler``."""

    def __init__(self, factory: HandlerFactory) -> None:
        self._factory = factory
        self.handler: Handler | None = None
        self.negotiated_actions = int(milter.CURR_ACTS)
        self.negotiated_protocol = 0

    def _handler(self) -> Handler:
        if self.handler is None:  # MTA without negotiation: create on first use
            self.handler = self._factory(Actions(self))
        return self.handler

    def negotiate(self, opts: list[int]) -> int:
        """Ask for the actions and protocol steps rohrpost uses, as far as the MTA offers them."""
        actions, protocol = int(opts[0]), int(opts[1])
        self._actions = self.negotiated_actions = actions & WANTED_ACTIONS
        self._protocol = self.negotiated_protocol = protocol & WANTED_PROTOCOL
        opts[0], opts[1], opts[2], opts[3] = self._actions, self._protocol, 0, 0
        self._handler()
        return int(Rc.CONTINUE)

    def _reply(self, rc: int, no_reply_bit: int) -> int:
        """NOREPLY where negotiated (libmilter then sends nothing for CONTINUE)."""
        if rc == Rc.CONTINUE and self.negotiated_protocol & no_reply_bit:
            return int(Rc.NOREPLY)
        return rc

    def connect(self, hostname: Any, family: Any, hostaddr: Any) -> int:
        """xxfi_connect."""
        address = ""
        if family in (socket.AF_INET, socket.AF_INET6):
            address = str(hostaddr[0] if isinstance(hostaddr, tuple) else hostaddr)
        name = _text(hostname)
        return _guard("connect", lambda: self._handler().on_connect(name, address), self)

    def hello(self, hostname: Any) -> int:
        """xxfi_helo."""
        return _guard("helo", lambda: self._handler().on_helo(_text(hostname)), self)

    def envfrom_bytes(self, *args: Any) -> int:
        """xxfi_envfrom with the raw bytes from libmilter."""
        return self.envfrom(*args)

    def envfrom(self, sender: Any, *params: Any) -> int:
        """xxfi_envfrom (TestCtx calls this one directly)."""
        plist = [_text(p) for p in params]
        return _guard("envfrom", lambda: self._handler().on_mail(_text(sender), plist), self)

    def envrcpt_bytes(self, *args: Any) -> int:
        """xxfi_envrcpt with the raw bytes from libmilter."""
        return self.envrcpt(*args)

    def envrcpt(self, rcpt: Any, *params: Any) -> int:
        """xxfi_envrcpt."""
        plist = [_text(p) for p in params]
        return _guard("envrcpt", lambda: self._handler().on_rcpt(_text(rcpt), plist), self)

    def header_bytes(self, name: Any, value: Any) -> int:
        """xxfi_header: the value stays bytes (exact, for DKIM)."""
        raw = value if isinstance(value, bytes) else _text(value).encode("utf-8", "surrogateescape")
        rc = _guard("header", lambda: self._handler().on_header(_text(name), raw), self)
        return self._reply(rc, milter.P_NR_HDR)

    def header(self, name: Any, value: Any) -> int:
        """xxfi_header for callers that pass text."""
        return self.header_bytes(name, value)

    def eoh(self) -> int:
        """xxfi_eoh."""
        return self._reply(_guard("eoh", lambda: self._handler().on_eoh(), self), milter.P_NR_EOH)

    def body(self, chunk: Any) -> int:
        """xxfi_body."""
        data = bytes(chunk)
        rc = _guard("body", lambda: self._handler().on_body(data), self)
        return self._reply(rc, milter.P_NR_BODY)

    def data(self) -> int:
        """xxfi_data: not used (negotiated away)."""
        return int(Rc.CONTINUE)

    def unknown(self, cmd: Any) -> int:
        """xxfi_unknown: not used (negotiated away)."""
        del cmd
        return int(Rc.CONTINUE)

    def eom(self) -> int:
        """xxfi_eom."""
        return _guard("eom", lambda: self._handler().on_eom(), self)

    def abort(self) -> int:
        """xxfi_abort."""

        def call() -> Rc:
            if self.handler is not None:
                self.handler.on_abort()
            return Rc.CONTINUE

        return _guard("abort", call, self)

    def close(self) -> int:
        """xxfi_close."""

        def call() -> Rc:
            if self.handler is not None:
                self.handler.on_close()
                self.handler = None
            return Rc.CONTINUE

        return _guard("close", call, self)


def register(name: str, factory: HandlerFactory) -> None:
    """Install libmilter's callbacks so that each connection gets ``factory(actions)``."""

    def negotiate_cb(ctx: Any, opts: list[int]) -> int:
        bridge = Bridge(factory)
        bridge._setctx(ctx)
        return bridge.negotiate(opts)

    def priv(ctx: Any) -> Any:
        bridge = ctx.getpriv()
        if bridge is None:  # the MTA did not negotiate
            bridge = Bridge(factory)
            bridge._setctx(ctx)
        return bridge

    def close_cb(ctx: Any) -> int:
        bridge = ctx.getpriv()
        if bridge is None:
            return int(Rc.CONTINUE)
        try:
            return int(bridge.close())
        finally:
            bridge._setctx(None)

    milter.set_connect_callback(lambda ctx, h, f, a: priv(ctx).connect(h, f, a))
    milter.set_helo_callback(lambda ctx, h: priv(ctx).hello(h))
    milter.set_envfrom_callback(lambda ctx, *b: priv(ctx).envfrom_bytes(*b))
    milter.set_envrcpt_callback(lambda ctx, *b: priv(ctx).envrcpt_bytes(*b))
    milter.set_header_callback(lambda ctx, f, v: priv(ctx).header_bytes(f, v))
    milter.set_eoh_callback(lambda ctx: priv(ctx).eoh())
    milter.set_body_callback(lambda ctx, chunk: priv(ctx).body(chunk))
    milter.set_eom_callback(lambda ctx: priv(ctx).eom())
    milter.set_abort_callback(lambda ctx: priv(ctx).abort())
    milter.set_close_callback(close_cb)
    milter.register(name, data=lambda ctx: priv(ctx).data(),
                    unknown=lambda ctx, cmd: priv(ctx).unknown(cmd), negotiate=negotiate_cb)


def open_socket(spec: str, timeout: int, backlog: int = 128) -> None:
    """``smfi_setconn`` + ``smfi_opensocket``: listen now (before forking workers).

    A stale Unix socket is removed first. Call after ``register``.
    """
    milter.setconn(spec)
    if timeout > 0:
        milter.settimeout(timeout)
    milter.setbacklog(backlog)
    milter.opensocket(True)


def run_main() -> None:
    """``smfi_main``: accept connections on the already opened socket until stopped."""
    milter.main()


def stop() -> None:
    """``smfi_stop``: make ``run_main`` return."""
    milter.stop()


MilterError: type[Exception] = milter.error
