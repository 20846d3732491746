"""clamav filter against a real clamd with an offline sigtool database (session-scoped)."""

from __future__ import annotations

import asyncio
import binascii
import io
import zipfile
from email.message import EmailMessage

import pytest

from filters._clamd import ClamdClient, ClamdError, ClamdLimitError, parse_scan_reply
from filters._sockets import SocketAddress
from filters.clamav import sanitize_virus_name
from rohrpost.result import Action
from tests.support.daemons import CLAMAV_TESTFILES, EICAR, ClamdInstance, free_port

from .helpers import mail_with, run, symbols

pytestmark = pytest.mark.integration

CLEAN = b"From: a@example.net\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nJust text.\r\n"
# clam_cache_emax.tgz tests clamd's scan cache limits, not detection: no virus inside by design
TESTFILES = sorted(p.name for p in CLAMAV_TESTFILES.iterdir() if p.name != "clam_cache_emax.tgz")


def clam_toml(socket: str, extra: str = "") -> str:
    return (f'[[filter]]\nuse = "clamav"\nsocket = "{socket}"\naction = "reject"\n'
            f'on_error = "tempfail"\n{extra}\n')


def zipped(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def uuencoded(name: str, data: bytes) -> bytes:
    lines = [binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45)]
    return (b"From: a@example.net\nTo: b@example.org\nSubject: uu\n\nHere it is:\n\n"
            + f"begin 644 {name}\n".encode() + b"".join(lines) + b"`\nend\n")


def nested(inner: bytes) -> bytes:
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = "a@example.net", "b@example.org", "fwd"
    outer.set_content("forwarded message attached")
    inner_msg = EmailMessage()
    inner_msg["Subject"] = "inner"
    inner_msg.set_content("inner text")
    inner_msg.add_attachment(inner, maintype="application", subtype="octet-stream",
                             filename="payload.bin")
    outer.add_attachment(inner_msg)  # message/rfc822
    return outer.as_bytes()


EICAR_CASES = {
    "plain": b"From: a@example.net\r\nSubject: eicar\r\n\r\n" + EICAR + b"\r\n",
    "base64": mail_with(("eicar.com", "application/octet-stream", EICAR)),
    "zip": mail_with(("eicar.zip", "application/zip", zipped("eicar.com", EICAR))),
    "nested-zip": mail_with(("outer.zip", "application/zip",
                             zipped("inner.zip", zipped("eicar.com", EICAR)))),
    "uuencode": uuencoded("eicar.com", EICAR),
    "nested-mime": nested(EICAR),
}


@pytest.mark.parametrize("case", sorted(EICAR_CASES))
def test_eicar_is_rejected_with_its_name(clamd: ClamdInstance, case: str) -> None:
    done = run(clam_toml(clamd.tcp), EICAR_CASES[case])
    assert done.outcome.action is Action.REJECT
    assert str(done.outcome.verdict.reply) == \
        "554 5.7.1 Virus found: Eicar-Test-Signature.UNOFFICIAL"
    assert "CLAM_VIRUS" in symbols(done)
    assert done.outcome.runs[0].result.facts["clamav.virus"] == \
        "Eicar-Test-Signature.UNOFFICIAL"


@pytest.mark.parametrize("name", TESTFILES)
def test_clamav_testfiles_found_as_attachments(clamd: ClamdInstance, name: str) -> None:
    data = (CLAMAV_TESTFILES / name).read_bytes()
    done = run(clam_toml(clamd.unix), mail_with((name, "application/octet-stream", data)))
    assert done.outcome.action is Action.REJECT, name
    assert str(done.outcome.verdict.reply) == \
        "554 5.7.1 Virus found: ClamAV-Test-File.UNOFFICIAL"


def test_clean_mail_passes(clamd: ClamdInstance) -> None:
    done = run(clam_toml(clamd.tcp), CLEAN)
    assert done.outcome.action is Action.ACCEPT
    assert done.outcome.runs[0].result.facts["clamav.clean"] is True


@pytest.mark.parametrize(("action", "expected"), [("quarantine", Action.QUARANTINE),
                                                  ("discard", Action.DISCARD)])
def test_other_actions(clamd: ClamdInstance, action: str, expected: Action) -> None:
    toml = clam_toml(clamd.tcp).replace('action = "reject"', f'action = "{action}"')
    done = run(toml, EICAR_CASES["base64"])
    assert done.outcome.action is expected
    assert done.outcome.verdict.reason == "virus Eicar-Test-Signature.UNOFFICIAL"


def test_clamd_down_tempfails() -> None:
    for socket in (f"tcp:127.0.0.1:{free_port()}", "unix:/nonexistent/clamd.sock"):
        done = run(clam_toml(socket), EICAR_CASES["plain"])
        assert done.outcome.action is Action.TEMPFAIL, socket
        assert done.outcome.verdict.reply.code == 451
        assert "CLAMAV_FAILED" in symbols(done)


def test_instream_limit_is_an_error_or_a_skip(clamd: ClamdInstance) -> None:
    big = b"Subject: big\r\n\r\n" + b"A" * (clamd.stream_max_length + 1024 * 1024)
    done = run(clam_toml(clamd.tcp), big)
    assert done.outcome.action is Action.TEMPFAIL
    assert "ClamdLimitError" in done.outcome.runs[0].error
    done = run(clam_toml(clamd.tcp, 'on_limit = "skip"'), big)
    assert done.outcome.action is Action.ACCEPT
    assert symbols(done) == {"CLAM_SKIPPED_LIMIT": 0.0}
    done = run(clam_toml(clamd.tcp, "max_size = 1000"), big)
    assert symbols(done) == {"CLAM_SKIPPED_SIZE": 0.0}


def test_client_direct(clamd: ClamdInstance) -> None:
    client = ClamdClient(SocketAddress.parse(clamd.tcp, 3310), chunk_size=7)

    async def go() -> None:
        assert await client.ping()
        assert "ClamAV" in await client.command("VERSION")
        assert (await client.instream(EICAR)).virus == "Eicar-Test-Signature.UNOFFICIAL"
        assert (await client.instream(b"")).clean

    asyncio.run(go())


def test_reply_parser_and_sanitizer() -> None:
    assert parse_scan_reply("stream: OK\0").clean
    assert parse_scan_reply("stream: Win.Test-1 FOUND").virus == "Win.Test-1"
    with pytest.raises(ClamdLimitError):
        parse_scan_reply("INSTREAM size limit exceeded. ERROR")
    with pytest.raises(ClamdError):
        parse_scan_reply("stream: Can't allocate memory ERROR")
    with pytest.raises(ClamdError):
        parse_scan_reply("garbage")
    assert sanitize_virus_name("Evil\r\nX-Injected: yes\u202e") == "Evil__X-Injected:_yes_"
    assert len(sanitize_virus_name("A" * 500)) == 100
