"""The asyncio milter engine against a scripted MTA over a real Unix socket.

The MTA side frames its packets with ``struct`` here, independently of rohrpost's
``wire`` module, and reads the replies byte by byte, so both directions are checked against
the protocol rather than against rohrpost's own encoder. Postfix itself drives both engines
in test_postfix.py; this covers what Postfix does not send on its own (QUIT_NC, a body chunk
on end-of-body, malformed packets, no reply-less steps, a client that vanishes mid-stage).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import tempfile
from pathlib import Path

import pytest

from rohrpost.changes import AddHeader, AddRecipient, InsertHeader
from rohrpost.filter import Mail, Stage
from rohrpost.milter import aioengine
from rohrpost.result import Action, FilterResult, Verdict
from tests.milter.conftest import FnFilter, MilterRig, const

ALL_ACTIONS = 0x1FF
NR_ALL = 0x80 | 0x40000 | 0x80000 | 0x100 | 0x200 | 0x100000  # what Postfix 3.7 offers too
OFFER = 0x1FFFFF
NR_CONN, NR_HELO, NR_MAIL, NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000


def pkt(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd + data


def z(*parts: str | bytes) -> bytes:
    return b"".join((p.encode() if isinstance(p, str) else p) + b"\0" for p in parts)


class Mta:
    """The MTA end of one milter connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.protocol = 0  # negotiated: which commands get no reply

    async def reply_to(self, nr_bit: int) -> tuple[bytes, bytes] | None:
        """The reply to a command, or None when the milter asked not to answer it."""
        return None if self.protocol & nr_bit else await self.read()

    async def send(self, *packets: bytes) -> None:
        self.writer.write(b"".join(packets))
        await self.writer.drain()

    async def read(self) -> tuple[bytes, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(5), 10)
        length = struct.unpack(">I", head[:4])[0]
        data = await self.reader.readexactly(length - 1)
        return head[4:5], data

    async def until_final(self) -> tuple[list[tuple[bytes, bytes]], tuple[bytes, bytes]]:
        """Modification packets, then the final reply of an end-of-message."""
        mods = []
        while True:
            cmd, data = await self.read()
            if cmd in b"+-behimq":
                mods.append((cmd, data))
            else:
                return mods, (cmd, data)

    async def negotiate(self, protocol: int = OFFER) -> tuple[int, int, int]:
        await self.send(pkt(b"O", struct.pack(">III", 6, ALL_ACTIONS, protocol)))
        cmd, data = await self.read()
        assert cmd == b"O"
        version, actions, self.protocol = struct.unpack(">III", data)
        return version, actions, self.protocol

    async def session(self, ip: str = "192.0.2.9") -> None:
        await self.send(pkt(b"D", b"C" + z("j", "mx.test", "v", "Postfix 3.7.11")),
                        pkt(b"C", z("client.example") + b"4" + struct.pack(">H", 4000)
                            + z(ip)))
        assert await self.reply_to(NR_CONN) in (None, (b"c", b""))
        await self.send(pkt(b"H", z("client.example")))
        assert await self.reply_to(NR_HELO) in (None, (b"c", b""))

    async def envelope(self, sender: str, *rcpts: str) -> list[tuple[bytes, bytes]]:
        await self.send(pkt(b"D", b"M" + z("i", "QID42", "{auth_authen}", "alice")),
                        pkt(b"M", z(f"<{sender}>", "SIZE=100")))
        assert await self.reply_to(NR_MAIL) in (None, (b"c", b""))
        replies = []
        for rcpt in rcpts:
            await self.send(pkt(b"R", z(f"<{rcpt}>")))
            replies.append(await self.reply_to(NR_RCPT))
        return replies

    async def message(self, ip: str = "192.0.2.9", negotiate: bool = True,
                      session: bool = True) -> tuple[bytes, bytes]:
        """A whole plain transaction (a@example.org to b@example.net); the final reply."""
        if negotiate:
            await self.negotiate()
        if session:
            await self.session(ip)
        await self.envelope("a@example.org", "b@example.net")
        await self.content(HEADERS, b"x\r\n")
        return (await self.until_final())[1]

    async def content(self, headers: list[tuple[str, bytes]], body: bytes,
                      on_eob: bytes = b"") -> None:
        await self.send(*(pkt(b"L", name.encode() + b"\0" + value + b"\0")
                          for name, value in headers))
        await self.send(pkt(b"N"), pkt(b"B", body), pkt(b"E", on_eob))


HEADERS = [("From", b" Alice <alice@example.org>"), ("Subject", b" hello"),
           ("X-Folded", b" first\n\tsecond")]
RAW = (b"From: Alice <alice@example.org>\r\nSubject: hello\r\nX-Folded: first\r\n\tsecond\r\n"
       b"\r\nbody line\r\n")


@contextlib.asynccontextmanager
async def engine(app, idle_timeout: float = aioengine.IDLE_TIMEOUT):
    """serve_forever on a fresh Unix socket; yields a connect() for scripted MTAs."""
    with tempfile.TemporaryDirectory(prefix="rp-aio-", dir="/tmp") as d:
        path = str(Path(d) / "m.sock")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.listen(16)
        sock.setblocking(False)
        ready = asyncio.Event()
        task = asyncio.create_task(aioengine.serve_forever(
            app, sock, idle_timeout=idle_timeout, ready=ready.set))
        await ready.wait()
        opened: list[Mta] = []

        async def connect() -> Mta:
            mta = Mta(*await asyncio.open_unix_connection(path))
            opened.append(mta)
            return mta

        try:
            yield connect
        finally:
            for mta in opened:
                mta.writer.close()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            sock.close()


@pytest.fixture
def aio_rig(tmp_path, monkeypatch) -> MilterRig:
    return MilterRig(str(tmp_path), None, monkeypatch)  # no loop thread: the asyncio engine


def test_whole_transaction_exact_message_envelope_and_changes(aio_rig):
    async def eom_check(mail: Mail) -> FilterResult:
        return FilterResult(changes=[InsertHeader(0, "X-Top", "top"),
                                     AddHeader("X-End", "end"),
                                     AddRecipient("archive@example.net")])

    eom = FnFilter(Stage.EOM, eom_check)
    mail_f = FnFilter(Stage.MAIL, const(FilterResult()))
    app = aio_rig.app(("mail", mail_f), ("eom", eom))

    async def run():
        async with engine(app) as connect:
            mta = await connect()
            version, actions, protocol = await mta.negotiate()
            assert version == 6 and actions == aioengine.WANTED_ACTIONS
            # no filter at CONNECT, HELO, RCPT: those need no reply; MAIL has one
            assert protocol == aioengine.WANTED_PROTOCOL | NR_CONN | NR_HELO | NR_RCPT
            await mta.session()
            assert await mta.envelope("alice@example.org", "bob@example.net") == [None]
            await mta.content(HEADERS, b"body line\r\n")
            return await mta.until_final()

    mods, final = asyncio.run(run())
    assert final == (b"c", b"")
    assert (b"i", struct.pack(">I", 0) + b"X-Top\0 top\0") in mods
    assert (b"h", b"X-End\0 end\0") in mods
    assert (b"+", b"<archive@example.net>\0") in mods
    seen = eom.calls[0]
    assert seen.message is not None and seen.message.raw == RAW
    env = seen.envelope
    assert (env.mail_from, env.rcpts, env.client_ip, env.helo) == (
        "alice@example.org", ("bob@example.net",), "192.0.2.9", "client.example")
    assert (env.queue_id, env.auth_user) == ("QID42", "alice")
    assert mail_f.calls[0].envelope.mail_params == ("SIZE=100",)


def test_reject_at_eom_sends_the_reply_code(aio_rig):
    verdict = Verdict.of(Action.REJECT, "550 5.7.1 100% blocked", "no", "eom")
    app = aio_rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult(verdict=verdict)))))

    async def run():
        async with engine(app) as connect:
            return await (await connect()).message()

    assert asyncio.run(run()) == (b"y", b"550 5.7.1 100%% blocked\0")


def test_rcpt_reject_refuses_that_recipient_only(aio_rig):
    async def rcpt_check(mail: Mail) -> FilterResult:
        if mail.rcpt == "bad@example.net":
            return FilterResult(verdict=Verdict.of(Action.REJECT, "550 5.1.1 no such user",
                                                   "unknown", "rcpt"))
        return FilterResult()

    eom = FnFilter(Stage.EOM, const(FilterResult()))
    app = aio_rig.app(("rcpt", FnFilter(Stage.RCPT, rcpt_check)), ("eom", eom))

    async def run():
        async with engine(app) as connect:
            mta = await connect()
            await mta.negotiate()
            await mta.session()
            replies = await mta.envelope("a@example.org", "bad@example.net", "ok@example.net")
            await mta.content(HEADERS, b"x\r\n")
            return replies, await mta.until_final()

    replies, (_mods, final) = asyncio.run(run())
    assert replies == [(b"y", b"550 5.1.1 no such user\0"), (b"c", b"")]
    assert final == (b"c", b"")
    assert eom.calls[0].envelope.rcpts == ("ok@example.net",)


def test_stage_timeout_and_filter_crash_tempfail(aio_rig):
    async def slow(mail: Mail) -> FilterResult:
        await asyncio.sleep(30)
        return FilterResult()

    async def crash(mail: Mail) -> FilterResult:
        raise RuntimeError("boom")

    for check in (slow, crash):
        rig = MilterRig(aio_rig.tmp, None, aio_rig.monkeypatch, timeout=0.5)
        app = rig.app(("eom", FnFilter(Stage.EOM, check), 10.0, "tempfail"))

        async def run(app=app):
            async with engine(app) as connect:
                return await (await connect()).message()

        final = asyncio.run(run())
        assert final[0] == b"y" and final[1].startswith(b"451 4."), (check, final)


def test_without_reply_less_steps_every_header_and_chunk_is_answered(aio_rig):
    eom = FnFilter(Stage.EOM, const(FilterResult()))
    app = aio_rig.app(("eom", eom))

    async def run():
        async with engine(app) as connect:
            mta = await connect()
            _v, _a, protocol = await mta.negotiate(protocol=0)  # an old MTA: no NR steps
            assert protocol == 0
            await mta.session()
            await mta.envelope("a@example.org", "b@example.net")
            await mta.send(pkt(b"L", b"Subject\0hello\0"))
            assert await mta.read() == (b"c", b"")
            await mta.send(pkt(b"N"))
            assert await mta.read() == (b"c", b"")
            await mta.send(pkt(b"B", b"part one "))
            assert await mta.read() == (b"c", b"")
            await mta.send(pkt(b"E", b"and the rest on end-of-body\r\n"))
            return await mta.until_final()

    _mods, final = asyncio.run(run())
    assert final == (b"c", b"")
    # no SMFIP_HDR_LEADSPC: the space after the colon is added back
    assert eom.calls[0].message.raw == (b"Subject: hello\r\n\r\npart one and the rest on "
                                        b"end-of-body\r\n")


def test_quit_nc_starts_a_new_session_on_the_same_connection(aio_rig):
    eom = FnFilter(Stage.EOM, const(FilterResult()))
    app = aio_rig.app(("eom", eom))

    async def run():
        async with engine(app) as connect:
            mta = await connect()
            for ip in ("192.0.2.1", "192.0.2.2"):
                assert await mta.message(ip) == (b"c", b"")
                await mta.send(pkt(b"K"))

    asyncio.run(run())
    assert [c.envelope.client_ip for c in eom.calls] == ["192.0.2.1", "192.0.2.2"]
    # macros of the first session's message are gone in the second
    assert all(c.envelope.queue_id == "QID42" for c in eom.calls)


@pytest.mark.parametrize("garbage", [struct.pack(">I", 0), struct.pack(">I", 1 << 30) + b"B",
                                     pkt(b"Z", b"what")])
def test_malformed_packet_closes_without_a_reply_and_the_server_goes_on(aio_rig, garbage):
    eom = FnFilter(Stage.EOM, const(FilterResult()))
    app = aio_rig.app(("eom", eom))

    async def run():
        async with engine(app) as connect:
            bad = await connect()
            await bad.negotiate()
            await bad.send(garbage)
            assert await asyncio.wait_for(bad.reader.read(), 10) == b""  # closed, no reply
            return await (await connect()).message()

    assert asyncio.run(run()) == (b"c", b"")


def test_mta_vanishing_mid_stage_cancels_it_and_the_server_goes_on(aio_rig):
    calls: list[str] = []

    async def slow_once(mail: Mail) -> FilterResult:
        calls.append(mail.envelope.client_ip)
        if mail.envelope.client_ip == "192.0.2.66":
            await asyncio.sleep(5)
        return FilterResult()

    app = aio_rig.app(("eom", FnFilter(Stage.EOM, slow_once)))

    async def run():
        async with engine(app) as connect:
            gone = await connect()
            await gone.negotiate()
            await gone.session("192.0.2.66")
            await gone.envelope("a@example.org", "b@example.net")
            await gone.content(HEADERS, b"x\r\n")
            while not calls:
                await asyncio.sleep(0.01)
            gone.writer.close()
            return await (await connect()).message()

    assert asyncio.run(run()) == (b"c", b"")
    assert calls == ["192.0.2.66", "192.0.2.9"]


def test_idle_connection_is_closed(aio_rig):
    app = aio_rig.app(("eom", FnFilter(Stage.EOM, const(FilterResult()))))

    async def run():
        async with engine(app, idle_timeout=0.3) as connect:
            mta = await connect()
            await mta.negotiate()
            return await asyncio.wait_for(mta.reader.read(), 10)

    assert asyncio.run(run()) == b""


def test_a_failed_reply_less_command_tempfails_at_end_of_message(aio_rig, monkeypatch):
    from rohrpost.milter import connection

    async def broken_mail(self, sender, params):
        raise RuntimeError("bookkeeping bug")

    monkeypatch.setattr(connection.MilterConnection, "a_mail", broken_mail)
    eom = FnFilter(Stage.EOM, const(FilterResult()))
    app = aio_rig.app(("eom", eom))

    async def run():
        async with engine(app) as connect:
            mta = await connect()
            _v, _a, protocol = await mta.negotiate()
            assert protocol & NR_MAIL  # no MAIL filter: MAIL is reply-less
            first = await mta.message(negotiate=False)
            await mta.send(pkt(b"A"))  # the next message starts clean
            monkeypatch.undo()
            return first, await mta.message(negotiate=False, session=False)

    first, second = asyncio.run(run())
    assert first[0] == b"y" and first[1].startswith(b"451 4.7.1")
    assert second == (b"c", b"")
