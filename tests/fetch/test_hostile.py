"""Hostile POP3/IMAP servers (tiny fakes on loopback): the job fails clearly, nothing is
delivered or marked seen, and the local state stays usable."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rohrpost.config import load_config
from rohrpost.deliver.sorting import load_deliver_section
from rohrpost.fetch.accounts import FetchError, load_accounts
from rohrpost.fetch.job import FetchJob
from rohrpost.pipeline import Pipeline
from rohrpost.services import make_services
from tests.fetch.helpers import maildir_files, write_config

Script = Callable[[socket.socket], None]


class FakeServer:
    """Accept connections on loopback and run ``script`` on each one in a thread."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(10)
                self.script(conn)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self.sock.close()


def lines(conn: socket.socket) -> Iterator[bytes]:
    buf = b""
    while True:
        while b"\n" not in buf:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
        line, buf = buf.split(b"\n", 1)
        yield line.rstrip(b"\r")


MSG = b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nhello\r\n"


def pop3(conn: socket.socket, *, caps: bytes = b"UIDL\r\nUSER\r\n", stls_extra: bytes = b"",
         list_size: bytes = b"30", retr: bytes = MSG, endless: bool = False,
         uidl: bool = True) -> None:
    conn.sendall(b"+OK fake\r\n")
    if endless:
        chunk = b"A" * 65536
        for _ in range(40):
            conn.sendall(chunk)
        for _line in lines(conn):  # keep the connection open until the client gives up
            pass
        return
    for line in lines(conn):
        cmd = line.split(b" ")[0].upper()
        if cmd == b"CAPA":
            conn.sendall(b"+OK\r\n" + caps + b".\r\n")
        elif cmd == b"STLS":
            conn.sendall(b"+OK begin TLS\r\n" + stls_extra)
            return
        elif cmd in (b"USER", b"PASS", b"DELE", b"NOOP"):
            conn.sendall(b"+OK\r\n")
        elif cmd == b"LIST":
            conn.sendall(b"+OK\r\n1 " + list_size + b"\r\n.\r\n")
        elif cmd == b"UIDL":
            conn.sendall(b"+OK\r\n1 uid-one\r\n.\r\n" if uidl else b"-ERR no UIDL\r\n")
        elif cmd == b"RETR":
            conn.sendall(b"+OK\r\n" + retr + b".\r\n")
        elif cmd == b"QUIT":
            conn.sendall(b"+OK bye\r\n")
            return


def imap(conn: socket.socket, *, caps: bytes = b"IMAP4rev1", literal: bytes = b"",
         starttls_extra: bytes = b"") -> None:
    conn.sendall(b"* OK [CAPABILITY " + caps + b"] fake\r\n")
    for line in lines(conn):
        tag, _, rest = line.partition(b" ")
        cmd = rest.split(b" ")[0].upper()
        if cmd == b"CAPABILITY":
            conn.sendall(b"* CAPABILITY " + caps + b"\r\n" + tag + b" OK done\r\n")
        elif cmd == b"STARTTLS":
            conn.sendall(tag + b" OK begin TLS\r\n" + starttls_extra)
            return
        elif cmd == b"LOGIN":
            conn.sendall(tag + b" OK logged in\r\n")
        elif cmd == b"SELECT" or cmd == b"EXAMINE":
            conn.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] x\r\n" + tag + b" OK done\r\n")
        elif cmd == b"UID" and b"RFC822.SIZE" in rest:
            conn.sendall(b"* 1 FETCH (UID 5 RFC822.SIZE 40)\r\n" + tag + b" OK done\r\n")
        elif cmd == b"UID" and b"BODY.PEEK" in rest:
            conn.sendall(b"* 1 FETCH (UID 5 BODY[] " + literal + b"\r\n")
            conn.sendall(b")\r\n" + tag + b" OK done\r\n")
        elif cmd == b"LOGOUT":
            conn.sendall(b"* BYE\r\n" + tag + b" OK done\r\n")
            return


def _job(workdir: Path, port: int, protocol: str, tls: str, **extra: object) -> FetchJob:
    pw = workdir / "pw"
    pw.write_text("secret-password\n")
    pw.chmod(0o600)
    acct = {"name": "evil", "protocol": protocol, "host": "127.0.0.1", "port": port,
            "tls": tls, "user": "bob", "password_file": str(pw), "keep": True,
            "deliver": f"maildir:{workdir}/Maildir", "recipient": "bob@example.net",
            "timeout": 5.0, **extra}
    config = load_config(str(write_config(workdir, [acct])))
    services = make_services(config)
    return FetchJob(config, load_accounts(config)[0], Pipeline.build(config), services,
                    load_deliver_section(config))


def _run(job: FetchJob) -> None:
    async def go() -> None:
        try:
            await job.run()
        finally:
            await job.services.aclose()

    asyncio.run(go())


def _nothing_happened(job: FetchJob, workdir: Path) -> None:
    assert maildir_files(workdir / "Maildir") == []

    async def keys() -> list[str]:
        try:
            return await job.services.store.keys("fetch:")
        finally:
            await job.services.aclose()

    assert asyncio.run(keys()) == []


CASES: dict[str, tuple[str, str, Script, dict[str, object], str]] = {
    "pop3 STLS stripped": ("pop3", "starttls", pop3, {}, "does not offer STLS"),
    "pop3 STLS injection": ("pop3", "starttls",
                            lambda c: pop3(c, caps=b"STLS\r\nUIDL\r\n",
                                           stls_extra=b"+OK injected\r\n"), {}, "injection"),
    "pop3 endless line": ("pop3", "none", lambda c: pop3(c, endless=True),
                          {"max_line_length": 100000}, "line longer than"),
    "pop3 bogus size": ("pop3", "none", lambda c: pop3(c, list_size=b"-5"), {}, "bogus size"),
    "pop3 lying size": ("pop3", "none",
                        lambda c: pop3(c, list_size=b"10",
                                       retr=MSG + b"X" * 2000 + b"\r\n"),
                        {"max_message_size": 1000}, "more than max_message_size"),
    "pop3 no UIDL with keep": ("pop3", "none", lambda c: pop3(c, uidl=False), {},
                               "does not support UIDL"),
    "imap STARTTLS stripped": ("imap", "starttls", imap, {},
                               "does not offer STARTTLS"),
    "imap STARTTLS injection": ("imap", "starttls",
                                lambda c: imap(c, caps=b"IMAP4rev1 STARTTLS",
                                               starttls_extra=b"* CAPABILITY IMAP4rev1\r\n"),
                                {}, "injection"),
    "imap giant literal": ("imap", "none", lambda c: imap(c, literal=b"{99999999999}"),
                           {"max_message_size": 1000000}, "literal of 99999999999 bytes"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_server_fails_cleanly(case: str, workdir: Path) -> None:
    protocol, tls, script, extra, expect = CASES[case]
    server = FakeServer(script)
    try:
        job = _job(workdir, server.port, protocol, tls, **extra)
        with pytest.raises(FetchError, match=expect) as info:
            _run(job)
        assert "secret-password" not in str(info.value)
        _nothing_happened(job, workdir)
    finally:
        server.close()


def test_pop3_without_uidl_works_in_delete_mode(workdir: Path) -> None:
    server = FakeServer(lambda c: pop3(c, uidl=False))
    try:
        job = _job(workdir, server.port, "pop3", "none", keep=False)
        _run(job)
        assert job.stats.delivered == 1 and job.stats.deleted == 1
        assert len(maildir_files(workdir / "Maildir")) == 1
        # the server "forgot" to delete it: the content key stops a second delivery
        job2 = _job(workdir, server.port, "pop3", "none", keep=False)
        _run(job2)
        assert job2.stats.delivered == 0 and job2.stats.duplicates == 1
        assert len(maildir_files(workdir / "Maildir")) == 1
    finally:
        server.close()
