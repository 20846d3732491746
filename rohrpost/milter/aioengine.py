"""The asyncio milter engine: the milter protocol spoken by rohrpost itself, one loop per worker.

Owns ``WireActions`` (``MilterActions`` as protocol packets), ``MilterProtocol`` (one MTA
connection: packets in, replies out) and ``serve_forever`` (a worker's main on an inherited
listening socket). It replaces libmilter's model, one thread per connection whose callbacks
hand every stage to a loop thread and wait, with one event loop per worker process on which
the connections' stages run directly: no thread per connection, no cross-thread hand-off per
stage, no pymilter (docs/decisions.md, "asyncio milter engine"; docs/performance.md).

Order and replies follow libmilter exactly: commands of a connection are handled one at a
time in arrival order; a command that runs filters pauses the connection until its reply is
written; headers, end of headers and body chunks are answered only where the protocol steps
negotiated do not make them reply-less. Anything unexpected (a malformed packet, a command
out of place, an exception in rohrpost's code) ends in a 451 4.7.1 reply or a dropped
connection, and Postfix's ``milter_default_action = tempfail`` keeps the mail either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from rohrpost.filter import Stage
from rohrpost.milter import wire
from rohrpost.milter.actions import GENERIC_TEMPFAIL, Rc
from rohrpost.milter.connection import MilterApp, MilterConnection
from rohrpost.pipeline import LoopRequired, run_loop_free

log = logging.getLogger("rohrpost.milter")

# The actions and protocol steps rohrpost asks for (the same as over libmilter, adapter.py).
WANTED_ACTIONS = (wire.ACT_ADDHDRS | wire.ACT_CHGHDRS | wire.ACT_CHGBODY | wire.ACT_ADDRCPT
                  | wire.ACT_DELRCPT | wire.ACT_CHGFROM | wire.ACT_QUARANTINE)
WANTED_PROTOCOL = (wire.P_NOUNKNOWN | wire.P_NODATA | wire.P_NR_HDR | wire.P_NR_EOH
                   | wire.P_NR_BODY | wire.P_HDR_LEADSPC)
# A command at whose stage no filter runs always continues: the MTA need not wait for it.
_NO_REPLY_WHEN_IDLE = {Stage.CONNECT: wire.P_NR_CONN, Stage.HELO: wire.P_NR_HELO,
                       Stage.MAIL: wire.P_NR_MAIL, Stage.RCPT: wire.P_NR_RCPT}
#: How long a connection may stay silent (libmilter's default ``smfi_settimeout``): longer
#: than any SMTP client may idle between commands (Postfix's smtpd_timeout is 300 s).
IDLE_TIMEOUT = 7210.0
#: After SIGTERM, connections get this long to finish their message before being cut.
STOP_GRACE = 10.0

_ACTION_BITS = {"ADDHDRS": wire.ACT_ADDHDRS, "CHGHDRS": wire.ACT_CHGHDRS,
                "CHGBODY": wire.ACT_CHGBODY, "ADDRCPT": wire.ACT_ADDRCPT,
                "DELRCPT": wire.ACT_DELRCPT, "CHGFROM": wire.ACT_CHGFROM,
                "QUARANTINE": wire.ACT_QUARANTINE}
_SIMPLE_REPLY = {Rc.CONTINUE: wire.CONTINUE, Rc.REJECT: wire.REJECT, Rc.DISCARD: wire.DISCARD,
                 Rc.ACCEPT: wire.ACCEPT, Rc.TEMPFAIL: wire.TEMPFAIL}
# Which macros a command's lookup sees: its own, then those of the commands before it.
_MACRO_ORDER = {wire.CONNECT: b"C", wire.HELO: b"HC", wire.MAIL: b"MHC", wire.RCPT: b"RMHC",
                wire.DATA: b"TRMHC", wire.EOH: b"NTRMHC", wire.BODYEOB: b"ENTRMHC"}
_MESSAGE_MACROS = b"MRTNE"  # forgotten when a transaction ends


class WireActions:
    """``MilterActions`` for one connection of the asyncio engine: packets to the MTA."""

    __slots__ = ("_conn", "actions", "protocol", "reply")

    def __init__(self, conn: MilterProtocol) -> None:
        self._conn = conn
        self.actions = 0
        self.protocol = 0
        self.reply: bytes | None = None  # SMFIR_REPLYCODE for the next REJECT/TEMPFAIL

    @property
    def leading_space(self) -> bool:
        """True when header values travel with their leading white space (SMFIP_HDR_LEADSPC)."""
        return bool(self.protocol & wire.P_HDR_LEADSPC)

    def can(self, action: str) -> bool:
        """Tell whether the MTA granted ``action``."""
        return bool(self.actions & _ACTION_BITS.get(action, 0))

    def getsymval(self, name: str) -> str:
        """Return the MTA macro ``name`` as the current command sees it, or ``""``."""
        return self._conn.macro(name)

    def setreply(self, code: str, enhanced: str, text: str) -> None:
        """Set the SMTP reply for the next REJECT/TEMPFAIL."""
        self.reply = wire.encode_replycode(code, enhanced, text)

    def addheader(self, name: str, value: str) -> None:
        """SMFIR_ADDHEADER."""
        self._conn.send(wire.encode_addheader(name, value))

    def insheader(self, index: int, name: str, value: str) -> None:
        """SMFIR_INSHEADER."""
        self._conn.send(wire.encode_insheader(index, name, value))

    def chgheader(self, name: str, occurrence: int, value: str) -> None:
        """SMFIR_CHGHEADER."""
        self._conn.send(wire.encode_chgheader(name, occurrence, value))

    def replacebody(self, chunk: bytes) -> None:
        """SMFIR_REPLBODY (split at the protocol's chunk size)."""
        for pkt in wire.encode_replbody(chunk):
            self._conn.send(pkt)

    def addrcpt(self, address: str) -> None:
        """SMFIR_ADDRCPT."""
        self._conn.send(wire.encode_rcpt(wire.ADDRCPT, address))

    def delrcpt(self, address: str) -> None:
        """SMFIR_DELRCPT."""
        self._conn.send(wire.encode_rcpt(wire.DELRCPT, address))

    def chgfrom(self, address: str) -> None:
        """SMFIR_CHGFROM."""
        self._conn.send(wire.encode_chgfrom(address))

    def quarantine(self, reason: str) -> None:
        """SMFIR_QUARANTINE."""
        self._conn.send(wire.encode_quarantine(reason))


class MilterProtocol(asyncio.Protocol):
    """One connection from the MTA (several SMTP sessions in a row with QUIT_NC)."""

    def __init__(self, app: MilterApp, idle_timeout: float = IDLE_TIMEOUT,
                 on_close: Callable[[MilterProtocol], None] | None = None) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self._on_close = on_close
        self._reader = wire.PacketReader()
        self._transport: asyncio.Transport | None = None
        self._actions = WireActions(self)
        self._handler: MilterConnection | None = None
        # macros by the command they came with; decoded on first lookup (most never are)
        self._macros: dict[bytes, bytes | dict[str, str]] = {}
        self._current = wire.CONNECT  # the command being handled (for macro lookups)
        self._view: dict[str, str] | None = None  # macros visible to it, merged on first use
        self._loop = asyncio.get_running_loop()  # protocols are made by the serving loop
        self._task: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._last = 0.0  # loop time of the last bytes from the MTA
        self._out: list[bytes] = []  # packets written together at the end of a step
        # a reply-less command failed: tempfail at end of message (1: this message,
        # 2: every message of the connection, when CONNECT or HELO failed)
        self._failed = 0
        self._closed = False

    # -- transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the idle timer."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        loop = self._loop
        self._last = loop.time()
        self._idle = loop.call_at(self._last + self.idle_timeout, self._check_idle)

    def data_received(self, data: bytes) -> None:
        """Take bytes; handle every complete packet unless a command is still running."""
        self._reader.feed(data)
        self._last = self._loop.time()
        if self._task is None:
            self._pump()

    def connection_lost(self, exc: Exception | None) -> None:
        """The MTA went away (or we closed): stop a running stage, clean up once."""
        del exc
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None:
            self._task.cancel()
        self._end_handler()
        if self._on_close is not None:
            self._on_close(self)

    # -- helpers for WireActions
    def send(self, data: bytes) -> None:
        """Queue one packet; ``_flush`` writes what a step produced in one system call."""
        self._out.append(data)

    def _flush(self) -> None:
        out = self._out
        if out:
            self._out = []
            if self._transport is not None and not self._closed:
                self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def macro(self, name: str) -> str:
        """Look ``name`` up like libmilter: this command's macros, then earlier commands'.

        The visible macros are merged once per command (a MAIL looks up a dozen).
        """
        view = self._view
        if view is None:
            view = {}
            for cmd in reversed(_MACRO_ORDER.get(self._current, b"C")):  # oldest first
                key = bytes((cmd,))
                table = self._macros.get(key)
                if isinstance(table, bytes):
                    table = self._macros[key] = wire.decode_macro_pairs(table)
                if table:
                    view.update(table)
            self._view = view
        value = view.get(name)
        if value is None:
            alt = name[1:-1] if name.startswith("{") and name.endswith("}") else "{" + name + "}"
            value = view.get(alt)
        return value or ""

    # -- packet handling
    def _check_idle(self) -> None:
        """One timer per connection, moved on only when it fires (not per packet)."""
        loop = asyncio.get_running_loop()
        due = self._last + self.idle_timeout
        if self._task is not None or loop.time() < due:  # a running stage has its deadline
            self._idle = loop.call_at(max(due, loop.time() + 1.0), self._check_idle)
            return
        log.warning("milter connection idle for %gs: closing", self.idle_timeout)
        self.close()

    def close(self) -> None:
        """Drop the connection (the MTA applies its milter_default_action)."""
        if self._transport is not None and not self._closed:
            self._flush()
            self._transport.close()

    def _pump(self) -> None:
        """Handle buffered packets in order until one needs the loop or the buffer is empty.

        The replies of everything handled go out together at the end.
        """
        try:
            while self._task is None and not self._closed:
                pkt = self._reader.next()
                if pkt is None:
                    return
                self._dispatch(*pkt)
        except wire.WireError as exc:
            log.warning("milter protocol error: %s: closing the connection", exc)
            self.close()
        finally:
            self._flush()

    def _handler_or_new(self) -> MilterConnection:
        if self._handler is None:  # an MTA that skipped OPTNEG: libmilter's defaults
            self._actions.actions = WANTED_ACTIONS
            self._actions.protocol = 0
            self._handler = MilterConnection(self._actions, self.app)
        return self._handler

    def _dispatch(self, cmd: bytes, data: bytes) -> None:
        self._view = None  # new macros or a new command: merge again when asked
        if cmd == wire.MACRO:
            if not data:
                raise wire.WireError("empty MACRO")
            self._macros[data[:1]] = data[1:]
            return
        method = _COMMANDS.get(cmd)
        if method is None:
            raise wire.WireError(f"unknown command {cmd!r}")
        self._current = cmd
        method(self, data)

    def _c_header(self, data: bytes) -> None:
        name, value = wire.decode_header(data)
        handler = self._handler_or_new()
        self._answer(self._call(lambda: handler.on_header(name, value)), wire.P_NR_HDR)

    def _c_body(self, data: bytes) -> None:
        handler = self._handler_or_new()
        self._answer(self._call(lambda: handler.on_body(data)), wire.P_NR_BODY)

    def _c_eoh(self, data: bytes) -> None:
        del data
        self._answer(self._call(self._handler_or_new().on_eoh), wire.P_NR_EOH)

    def _c_connect(self, data: bytes) -> None:
        conn = wire.decode_connect(data)
        self._run(Stage.CONNECT, lambda h: h.a_connect(conn.hostname, conn.address))

    def _c_helo(self, data: bytes) -> None:
        name = wire.decode_helo(data)
        self._run(Stage.HELO, lambda h: h.a_helo(name))

    def _c_mail(self, data: bytes) -> None:
        sender, params = wire.decode_args(data)
        self._run(Stage.MAIL, lambda h: h.a_mail(sender, params))

    def _c_rcpt(self, data: bytes) -> None:
        rcpt, params = wire.decode_args(data)
        self._run(Stage.RCPT, lambda h: h.a_rcpt(rcpt, params))

    def _c_eom(self, data: bytes) -> None:
        if data:  # a last body chunk may ride on the end-of-body command
            handler = self._handler_or_new()
            self._call(lambda: handler.on_body(data))
        self._run(Stage.EOM, lambda h: h.a_eom(), end_of_message=True)

    def _c_abort(self, data: bytes) -> None:
        del data
        self._call(self._abort)
        self._forget_message()

    def _c_continue(self, data: bytes) -> None:
        del data  # DATA and unknown commands (negotiated away; answered if sent anyway)
        self._reply(Rc.CONTINUE)

    def _c_quit(self, data: bytes) -> None:
        del data
        self.close()

    def _c_quit_nc(self, data: bytes) -> None:
        del data  # the MTA reuses this connection for a new SMTP session
        self._end_handler()
        self._macros.clear()
        self._view = None
        self._failed = 0

    def _c_optneg(self, data: bytes) -> None:
        offer = wire.decode_optneg(data)
        if offer.version < 2:
            raise wire.WireError(f"milter protocol version {offer.version} not supported")
        self._actions.actions = offer.actions & WANTED_ACTIONS
        # commands of stages without filters need no reply: a round trip less for each
        idle = sum(bit for stage, bit in _NO_REPLY_WHEN_IDLE.items()
                   if stage not in self.app.stages)
        self._actions.protocol = offer.protocol & (WANTED_PROTOCOL | idle)
        self.send(wire.encode_optneg(wire.OptNeg(min(offer.version, wire.VERSION),
                                                 self._actions.actions,
                                                 self._actions.protocol)))
        self._end_handler()
        self._handler = MilterConnection(self._actions, self.app)

    def _abort(self) -> Rc:
        if self._handler is not None:
            self._handler.on_abort()
        return Rc.CONTINUE

    def _end_handler(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            self._call(handler.on_close)

    def _forget_message(self) -> None:
        if self._failed == 1:
            self._failed = 0
        for cmd in _MESSAGE_MACROS:
            self._macros.pop(bytes((cmd,)), None)
        self._view = None

    def _call(self, fn: Callable[[], Rc | None]) -> Rc:
        """Run a synchronous handler step; an exception becomes a generic tempfail."""
        try:
            return fn() or Rc.CONTINUE
        except (Exception, LoopRequired):
            log.exception("milter command %r failed", self._current)
            self._actions.setreply(*GENERIC_TEMPFAIL)
            return Rc.TEMPFAIL

    def _run(self, stage: Stage, step: Callable[[MilterConnection], Coroutine[Any, Any, Rc]],
             end_of_message: bool = False) -> None:
        """Run a command that may run filters; right here when none runs at its stage.

        Else it runs in a task (filters may wait for DNS, clamd, spamd; the stage deadline
        needs a task). While it runs, further packets stay buffered: the MTA waits for this
        reply anyway.
        """
        handler = self._handler_or_new()
        if stage not in self.app.stages:
            rc = self._call(lambda: run_loop_free(step(handler)))
            no_reply = self._actions.protocol & _NO_REPLY_WHEN_IDLE.get(stage, 0)
            if no_reply:  # the MTA does not wait; a refusal waits for end of message
                self._actions.reply = None
                if rc is not Rc.CONTINUE:
                    self._failed = max(self._failed, 2 if stage <= Stage.HELO else 1)
                return
            self._finish_step(rc, end_of_message)
            return
        self._task = asyncio.get_running_loop().create_task(
            self._step(step(handler), end_of_message))

    async def _step(self, coro: Coroutine[Any, Any, Rc], end_of_message: bool) -> None:
        try:
            rc = await coro
        except Exception:
            log.exception("milter command %r failed", self._current)
            self._actions.setreply(*GENERIC_TEMPFAIL)
            rc = Rc.TEMPFAIL
        self._task = None
        self._finish_step(rc, end_of_message)
        self._pump()

    def _finish_step(self, rc: Rc, end_of_message: bool) -> None:
        if end_of_message:
            if self._failed:  # an earlier reply-less command failed: never accept the mail
                self._actions.setreply(*GENERIC_TEMPFAIL)
                rc = Rc.TEMPFAIL
            self._forget_message()
        self._reply(rc)

    def _answer(self, rc: Rc, no_reply_bit: int) -> None:
        """Reply to a header/body/EOH step unless it was negotiated reply-less."""
        if rc is Rc.CONTINUE and self._actions.protocol & no_reply_bit:
            return
        self._reply(rc)

    def _reply(self, rc: Rc) -> None:
        if rc is Rc.NOREPLY:
            return
        reply, self._actions.reply = self._actions.reply, None
        if rc in (Rc.REJECT, Rc.TEMPFAIL) and reply is not None:
            self.send(reply)
        else:
            self.send(wire.packet(_SIMPLE_REPLY[rc]))


_COMMANDS: dict[bytes, Callable[[MilterProtocol, bytes], None]] = {
    wire.OPTNEG: MilterProtocol._c_optneg, wire.CONNECT: MilterProtocol._c_connect,
    wire.HELO: MilterProtocol._c_helo, wire.MAIL: MilterProtocol._c_mail,
    wire.RCPT: MilterProtocol._c_rcpt, wire.HEADER: MilterProtocol._c_header,
    wire.EOH: MilterProtocol._c_eoh, wire.BODY: MilterProtocol._c_body,
    wire.BODYEOB: MilterProtocol._c_eom, wire.ABORT: MilterProtocol._c_abort,
    wire.DATA: MilterProtocol._c_continue, wire.UNKNOWN: MilterProtocol._c_continue,
    wire.QUIT: MilterProtocol._c_quit, wire.QUIT_NC: MilterProtocol._c_quit_nc,
}


async def serve_forever(app: MilterApp, sock: socket.socket, *,
                        idle_timeout: float = IDLE_TIMEOUT,
                        ready: Callable[[], None] | None = None,
                        stop_requested: Callable[[], bool] = lambda: False) -> None:
    """Accept MTA connections on the listening ``sock`` until SIGTERM, SIGINT or SIGHUP.

    On a signal the socket stops accepting, connections get ``STOP_GRACE`` seconds to finish
    (a message in progress is answered, not cut), then the rest are closed.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    live: set[MilterProtocol] = set()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    if stop_requested():  # a signal that came before the handlers above
        stop.set()

    def factory() -> MilterProtocol:
        proto = MilterProtocol(app, idle_timeout, live.discard)
        live.add(proto)
        return proto

    server = await loop.create_server(factory, sock=sock, backlog=128)
    if ready is not None:
        ready()
    try:
        await stop.wait()
    finally:
        server.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        deadline = loop.time() + STOP_GRACE
        while any(p._task is not None for p in live) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for proto in list(live):
            proto.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2)
