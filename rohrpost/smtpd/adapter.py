"""The only module that imports aiosmtpd: its SMTP/LMTP protocol wired to a ``Conversation``.

Owns ``protocol_factory``. aiosmtpd parses commands and DATA; this adapter adds what it lacks
and hides what rohrpost must not inherit:

* ``XFORWARD`` (a ``smtp_XFORWARD`` command method), advertised in the EHLO/LHLO reply only
  to trusted clients, plus ``PIPELINING`` (aiosmtpd reads commands one at a time from a
  buffer, so pipelined commands are answered in order);
* a session gate: a connection over the limit is greeted with 421 and closed;
* per-instance command length limits (aiosmtpd keeps them in a dict shared by all
  connections and clears it on every new one) and lines up to 64 KiB in DATA instead of
  aiosmtpd's 1001, so a long line is passed on as received rather than bounced with 500;
* the command timer is stretched while a message is filtered and delivered, so aiosmtpd
  does not close the connection under a slow next hop (an answer after delivery is the point);
* ``handle_exception`` answers ``451 4.3.0`` with a generic text, never aiosmtpd's
  ``500 Error: (Exc) msg`` (exception text and a 5xx for an internal error).

Messages stay bytes (``decode_data=False``, ``original_content``); 8BITMIME and SMTPUTF8 are
advertised. aiosmtpd is untyped, so its classes are ``Any`` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from rohrpost.smtpd import replies
from rohrpost.smtpd.conversation import Conversation
from rohrpost.smtpd.xforward import ADVERTISED

log = logging.getLogger("rohrpost.smtpd")

# open a Conversation for (peer ip, peer port, close callback); None means "too many sessions"
Opener = Callable[[str, int, Callable[[], None]], Conversation | None]
Releaser = Callable[[Conversation], None]

DATA_LINE_LIMIT = 65536
COMMAND_LINE_LIMIT = 2048
_TIMER_MARGIN = 30.0


class _Handler:
    """aiosmtpd's hook object for one connection: translates hooks into Conversation calls."""

    def __init__(self, lmtp: bool, message_timeout: float) -> None:
        self.lmtp = lmtp
        self.message_timeout = message_timeout
        self.conv: Conversation | None = None

    def _conv(self) -> Conversation:
        if self.conv is None:
            raise RuntimeError("SMTP command before the session was opened")
        return self.conv

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,  # noqa: N802
                          responses: list[str]) -> list[str]:
        """EHLO/LHLO: run the connection stages, add our keywords to aiosmtpd's list."""
        conv = self._conv()
        await conv.hello(hostname, "LMTP" if self.lmtp else "ESMTP")
        session.host_name = hostname
        extra = ["250-PIPELINING"] + ([f"250-{ADVERTISED}"] if conv.trusted else [])
        return [*responses[:-1], *extra, responses[-1]]

    async def handle_HELO(self, server: Any, session: Any, envelope: Any,  # noqa: N802
                          hostname: str) -> str:
        """HELO: like EHLO without extensions."""
        await self._conv().hello(hostname, "SMTP")
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          mail_options: list[str]) -> str:
        """MAIL FROM: aiosmtpd records the sender only when the hook says so."""
        accepted, reply = await self._conv().mail(address, list(mail_options))
        if accepted:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          rcpt_options: list[str]) -> str:
        """RCPT TO: a rejected recipient never reaches ``rcpt_tos``."""
        accepted, reply = await self._conv().rcpt(address)
        if accepted:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """End of DATA: one reply line (SMTP) or one per accepted recipient (LMTP)."""
        server._reset_timeout(self.message_timeout + _TIMER_MARGIN)
        raw: bytes = envelope.original_content or b""
        return replies.join(await self._conv().data(raw))

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """RSET: forget the transaction."""
        self._conv().reset()
        return replies.RSET_OK

    async def handle_exception(self, error: Exception) -> str:
        """Any error escaping a hook: log the detail, answer a generic tempfail."""
        log.error("internal error in the SMTP session", exc_info=error)
        return str(replies.INTERNAL_ERROR)


class _Common:
    """What the SMTP and LMTP protocol classes add to aiosmtpd's (mixed in before them)."""

    line_length_limit = DATA_LINE_LIMIT
    event_handler: _Handler
    _opener: Opener
    _releaser: Releaser

    def _setup(self, opener: Opener, releaser: Releaser) -> None:
        self._opener, self._releaser = opener, releaser
        self.command_size_limits: collections.defaultdict[str, int] = collections.defaultdict(
            lambda: COMMAND_LINE_LIMIT)
        self.command_size_limit = COMMAND_LINE_LIMIT

    def _close(self) -> None:
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.close()

    async def _handle_client(self) -> None:
        sup: Any = super()
        peer = getattr(getattr(self, "session", None), "peer", None)
        host, port = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else ("", 0)
        conv = self._opener(host, port, self._close)
        if conv is None:
            await sup.push(replies.TOO_MANY_SESSIONS)
            self._close()
            return
        self.event_handler.conv = conv
        try:
            await sup._handle_client()
        finally:
            conv.closed()
            self._releaser(conv)

    async def smtp_XFORWARD(self, arg: str | None) -> None:  # noqa: N802
        """XFORWARD attribute=value... (Postfix content_filter)."""
        sup: Any = super()
        if await sup.check_helo_needed("EHLO"):
            return
        await sup.push(self.event_handler._conv().xforward(arg or ""))


class _SMTP(_Common, SMTP):  # type: ignore[misc]  # aiosmtpd is untyped
    pass


class _LMTP(_Common, LMTP):  # type: ignore[misc]
    pass


def protocol_factory(*, lmtp: bool, hostname: str, max_size: int, command_timeout: float,
                     message_timeout: float, opener: Opener,
                     releaser: Releaser) -> Callable[[], asyncio.Protocol]:
    """Make the factory for ``loop.create_server``: one protocol and handler per connection.

    :param opener: called once a client connects; returns its ``Conversation`` or ``None``
        when the server is full (the client then gets 421).
    :param releaser: called with the conversation when the connection ends.
    """
    cls = _LMTP if lmtp else _SMTP
    loop = asyncio.get_running_loop()

    def make() -> asyncio.Protocol:
        handler = _Handler(lmtp, message_timeout)
        proto: Any = cls(handler, data_size_limit=max_size, enable_SMTPUTF8=True,
                         decode_data=False, hostname=hostname, ident="rohrpost",
                         timeout=command_timeout, loop=loop)
        proto._setup(opener, releaser)
        result: asyncio.Protocol = proto
        return result

    return make
