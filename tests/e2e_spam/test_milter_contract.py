"""Issue 4's contract through a real Postfix and one ``rohrpost milter``, with real spamd/clamd.

The pipeline is issue 4's configuration plus ``attachments`` (greylisting has its own test with
two milters and Redis): spamassassin (the session spamd), clamav (the session clamd, reject),
attachments, ``[actions] add_header = 5, reject = 15``. What is asserted is what the SMTP client
was told at the end of DATA and what reached the next hop (an aiosmtpd catcher).

The clamd-down case uses its own ClamdInstance (never stop the session one) and its own stack.
"""

from __future__ import annotations

import email
from collections.abc import Iterator
from email.policy import default as default_policy

import pytest

from tests.spam import craft
from tests.spam.helpers import SAMPLES, mail_with
from tests.support.contract import spam_virus_contract
from tests.support.daemons import EICAR, ClamdInstance, SpamdInstance, wait_until
from tests.support.fixtures_daemons import DaemonPool

from .stack import Stack, build_stack, with_marker, zip_bomb

pytestmark = pytest.mark.integration
CLIENT = "192.0.2.10"  # TEST-NET-1, no reverse DNS: SpamAssassin gives a few points, not spam


def contract(spamd_port: int, clamd_socket: str) -> str:
    """Issue 4's pipeline.toml (no greylist) plus attachments; @VAR@ is the stack's var_dir."""
    return ('[pipeline]\nhostname = "mx.rohrpost.test"\nauthserv_id = "mx.rohrpost.test"\n'
            'var_dir = "@VAR@"\n' + spam_virus_contract(spamd_port, clamd_socket))


@pytest.fixture(scope="module")
def stack(module_pool: DaemonPool, spamd: SpamdInstance, clamd: ClamdInstance) -> Iterator[Stack]:
    yield build_stack(module_pool, contract(spamd.port, clamd.tcp))


def header(raw: bytes, name: str) -> str:
    """One header of ``raw``, unfolded (``""`` when absent)."""
    value = email.message_from_bytes(raw, policy=default_policy).get(name)
    return " ".join(str(value).split()) if value is not None else ""


def test_eicar_attachment_rejected_with_virus_name(stack: Stack) -> None:
    data = with_marker(mail_with(("eicar.txt", "text/plain", EICAR)), "eicar-1")
    result, _secs = stack.send(data)
    assert [r.code for r in result.rcpts] == [250], result
    assert result.data is not None, result
    assert (result.data.code, result.data.text) == (
        554, "5.7.1 Virus found: Eicar-Test-Signature.UNOFFICIAL"), stack.diagnostics()
    # refused at end of DATA: Postfix never queued it, so nothing can arrive later
    log = stack.postfix.wait_log("milter-reject: END-OF-MESSAGE")
    assert "Virus found: Eicar-Test-Signature.UNOFFICIAL" in log
    assert stack.postfix.queue_ids() == []
    assert stack.arrived(b"eicar-1") == []


def test_gtube_rejected_by_the_reject_threshold(stack: Stack) -> None:
    data = with_marker((SAMPLES / "sample-spam.txt").read_bytes(), "gtube-1")
    result, _secs = stack.send(data)
    assert result.data is not None, result
    assert (result.data.code, result.data.text) == (
        550, "5.7.1 Message rejected as spam"), stack.diagnostics()
    assert stack.postfix.queue_ids() == []
    assert stack.arrived(b"gtube-1") == []


def test_sample_nonspam_arrives_with_spamassassin_symbols(stack: Stack) -> None:
    data = with_marker((SAMPLES / "sample-nonspam.txt").read_bytes(), "ham-1")
    # From 127.0.0.1 SpamAssassin trusts the relay and no rule hits (score 0): claim a remote
    # client (XCLIENT) so the Received header rohrpost gives spamd carries it, as in production.
    result, _secs = stack.send(data, client_ip=CLIENT)
    assert result.accepted, (result, stack.diagnostics())
    got = stack.wait_arrived(b"X-Marker: ham-1")
    status = header(got, "X-Spam-Status")
    assert status.startswith("No, score="), status
    assert header(got, "X-Spam-Flag") == ""  # only set for spam
    verdict = header(got, "X-Rohrpost-Result")
    assert verdict.startswith("action=accept score="), verdict
    # SpamAssassin's own rule names, as SA_<RULE>(points), explain the score
    listed = verdict.split("symbols=", 1)[1].split()
    sa_rules = [word for word in listed if word.startswith("SA_")]
    assert sa_rules, verdict
    assert all(rule.endswith(")") and "(" in rule for rule in sa_rules), verdict
    tests = status.split("tests=", 1)[1].split()[0].split(",")
    assert {rule.split("(")[0] for rule in sa_rules} <= set(tests), (sa_rules, tests)
    # the body came through unchanged
    sent_body = (SAMPLES / "sample-nonspam.txt").read_bytes().split(b"\n\n", 1)[1]
    assert got.split(b"\r\n\r\n", 1)[1].rstrip() == sent_body.replace(b"\n", b"\r\n").rstrip()


def test_exe_attachment_rejected_by_attachments(stack: Stack) -> None:
    payload = b"not a real program, only the name is banned\n"
    data = with_marker(mail_with(("setup.exe", "application/octet-stream", payload)), "exe-1")
    result, _secs = stack.send(data)
    assert result.data is not None, result
    assert result.data.code == 554, (result, stack.diagnostics())
    assert result.data.text.startswith("5.7.1 Message rejected: banned attachment"), result
    assert "setup.exe" in result.data.text
    assert stack.arrived(b"exe-1") == []


def test_clamd_down_tempfails_and_the_resend_is_accepted(daemon_pool: DaemonPool,
                                                         spamd: SpamdInstance) -> None:
    own = ClamdInstance(daemon_pool.directory("clamd-own"))
    daemon_pool.start(own, "own clamd", own.log_text)
    stack = build_stack(daemon_pool, contract(spamd.port, own.tcp))
    data = with_marker((SAMPLES / "sample-nonspam.txt").read_bytes(), "down-1")
    own.stop()
    down, _secs = stack.send(data)
    assert down.data is not None, down
    assert down.data.code == 451 and down.data.text.startswith("4.7.1"), (
        down, stack.diagnostics())
    assert stack.postfix.queue_ids() == []
    assert "clamav failed" in stack.milter.log()

    own.start()  # same port, same database
    again, _secs = stack.send(data)  # what a client does after a 4xx: send the same again
    assert again.accepted, (again, stack.diagnostics())
    got = stack.wait_arrived(b"X-Marker: down-1")
    assert header(got, "X-Spam-Status").startswith("No, score=")
    assert len(stack.arrived(b"X-Marker: down-1")) == 1


# ---- bombs through the milter path (attachments filter; spamd and clamd see them too)

ARCHIVE_BOMB = ((554, "5.7.1 Message rejected: archive exceeds limits"), "ATTACH_ARCHIVE_BOMB")
BOMBS = {
    "mime-1000-deep": (lambda: craft.deep_nesting(1000),
                       ((554, "5.6.0 MIME structure too complex"), "MIME_TOO_COMPLEX")),
    # 3.6 MB of one-line parts: under clamd's 4 MB stream limit, over spamd's max_size
    "mime-100k-parts": (lambda: craft.many_parts(100_000),
                        ((554, "5.6.0 MIME structure too complex"), "MIME_TOO_COMPLEX")),
    # 42.zip shape: 16 copies per level, 4 levels of zips, 4 MiB of zeros at the bottom
    # (256 GiB declared in about 17 kB): deeper than archive_max_depth = 3
    "zip-42-style": (lambda: zip_mail(zip_bomb(16, 4, 4 << 20)), ARCHIVE_BOMB),
    # within the nesting limit: 16 x 16 x 1 MiB = 256 MiB declared (archive_max_total)
    "zip-wide": (lambda: zip_mail(zip_bomb(16, 3, 1 << 20)), ARCHIVE_BOMB),
    # one zip in a zip holding 32 MiB of zeros: compression ratio about 1000 (archive_max_ratio)
    "zip-ratio": (lambda: zip_mail(zip_bomb(1, 2, 32 << 20)), ARCHIVE_BOMB),
}


def zip_mail(archive: bytes) -> bytes:
    return mail_with(("bomb.zip", "application/zip", archive))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", sorted(BOMBS))
def test_bomb_ends_with_the_configured_reject(stack: Stack, name: str) -> None:
    build, (expected, symbol) = BOMBS[name]
    data = with_marker(build(), f"bomb-{name}")
    result, secs = stack.send(data)
    assert result.data is not None, result
    assert (result.data.code, result.data.text) == expected, (result, stack.diagnostics())
    assert secs < 45, f"{name}: {secs:.1f} s"
    assert stack.arrived(f"bomb-{name}".encode()) == []
    # the verdict is the attachments filter's (its symbol in the milter's log line)
    wait_until(lambda: f'reply="{expected[0]} {expected[1]}"' in stack.milter.log(), 10,
               "the milter's log line")
    line = [x for x in stack.milter.log().splitlines() if f"{expected[1]}" in x][-1]
    assert f"{symbol}(" in line and "_FAILED(" not in line, line
    assert "Traceback" not in stack.milter.log()
