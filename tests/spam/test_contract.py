"""Issue 4's configuration (without greylist, built elsewhere) with real spamd and clamd."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rohrpost.cli import main
from rohrpost.result import Action
from tests.support.contract import spam_virus_contract
from tests.support.daemons import EICAR, ClamdInstance, SpamdInstance, free_port

from .helpers import SAMPLES, mail_with, run, symbols

pytestmark = pytest.mark.integration


def contract(spamd_port: int, clamd_socket: str) -> str:
    return spam_virus_contract(spamd_port, clamd_socket, backend="memory")


def test_contract_config(spamd: SpamdInstance, clamd: ClamdInstance) -> None:
    toml = contract(spamd.port, clamd.tcp)
    gtube = run(toml, (SAMPLES / "sample-spam.txt").read_bytes())
    assert gtube.outcome.action is Action.REJECT
    assert gtube.outcome.verdict.by == "actions"
    virus = run(toml, mail_with(("eicar.txt", "text/plain", EICAR)))
    assert virus.outcome.action is Action.REJECT
    assert str(virus.outcome.verdict.reply) == \
        "554 5.7.1 Virus found: Eicar-Test-Signature.UNOFFICIAL"
    ham = run(toml, (SAMPLES / "sample-nonspam.txt").read_bytes())
    assert ham.outcome.action is Action.ACCEPT
    assert ham.message.get("X-Spam-Status").startswith("No, score=")
    banned = run(toml, mail_with(("a.pdf.exe", "application/octet-stream", b"x")))
    assert banned.outcome.action is Action.REJECT and "ATTACH_DOUBLE_EXT" in symbols(banned)


def test_contract_clamd_down_tempfails(spamd: SpamdInstance) -> None:
    toml = contract(spamd.port, f"tcp:127.0.0.1:{free_port()}")
    done = run(toml, (SAMPLES / "sample-nonspam.txt").read_bytes())
    assert done.outcome.action is Action.TEMPFAIL
    assert str(done.outcome.verdict.reply).startswith("451 4.7.1")


def test_rohrpost_check_shows_spamassassin_rules(spamd: SpamdInstance, clamd: ClamdInstance,
                                                 tmp_path: Path) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text('[pipeline]\nauthserv_id = "mx.example.org"\nhostname = "mx.example.org"\n'
                      + contract(spamd.port, clamd.unix))
    result = CliRunner().invoke(main, ["check", "-c", str(config),
                                       str(SAMPLES / "sample-spam.txt")])
    assert result.exit_code == 0, result.output
    assert "SA_GTUBE(1000): 1000 pts: BODY: Generic Test for Unsolicited Bulk Email" in \
        result.output
    assert "=> REJECT" in result.output
