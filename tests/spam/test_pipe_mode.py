"""The filters in pipe mode (``rohrpost filter NAME``): exit codes an MTA reads."""

from __future__ import annotations

from click.testing import CliRunner

from rohrpost.cli import main
from tests.support.daemons import free_port

from .helpers import mail_with


def test_attachments_reject_exits_77_and_clean_mail_passes() -> None:
    bad = mail_with(("setup.exe", "application/octet-stream", b"x"))
    result = CliRunner().invoke(main, ["filter", "attachments", "-f", "a@example.net",
                                       "-r", "b@example.org"], input=bad)
    assert result.exit_code == 77, result.output
    good = mail_with(("notes.txt", "text/plain", b"hello"))
    result = CliRunner().invoke(main, ["filter", "attachments", "-f", "a@example.net",
                                       "-r", "b@example.org"], input=good)
    assert result.exit_code == 0, result.output
    assert b"X-Rohrpost-Result: action=accept" in result.stdout_bytes


def test_clamav_down_exits_75() -> None:
    result = CliRunner().invoke(main, ["filter", "clamav", "--socket",
                                       f"tcp:127.0.0.1:{free_port()}", "-f", "a@example.net",
                                       "-r", "b@example.org"], input=b"Subject: x\n\nhi\n")
    assert result.exit_code == 75, result.output
