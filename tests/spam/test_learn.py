"""``rohrpost learn`` against a real spamd: TELL learns, a second TELL is "already known"."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from rohrpost.cli import main
from rohrpost.cli.learncmd import message_files
from tests.support.daemons import SpamdInstance, free_port

from .helpers import CORPUS

pytestmark = pytest.mark.integration


def corpus_maildir(target: Path, label: str, count: int) -> Path:
    """A Maildir with the first ``count`` corpus messages of ``label`` (spam/ham) in cur/."""
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    prefix = "spam-" if label == "spam" else "easy-ham-"
    with tarfile.open(CORPUS) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.split("/")[-2]
                   .startswith(prefix)][:count]
        for i, member in enumerate(members):
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            (target / "cur" / f"{i}.host:2,S").write_bytes(data)
    return target


def learn(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["learn", *args])
    return result.exit_code, result.output


def test_learn_spam_then_already_known(spamd: SpamdInstance, tmp_path: Path) -> None:
    maildir = corpus_maildir(tmp_path / "Junk", "spam", 3)
    code, out = learn("--spam", "--port", str(spamd.port), str(maildir))
    assert code == 0, out
    assert "spam: 3 messages, 3 learned, 0 already known" in out
    code, out = learn("--spam", "--port", str(spamd.port), str(maildir))
    assert code == 0, out
    assert "0 learned, 3 already known" in out
    # relearning as ham changes the class: learned again
    one = next(iter(sorted((maildir / "cur").iterdir())))
    code, out = learn("--ham", "--port", str(spamd.port), str(one))
    assert (code, "1 learned" in out) == (0, True), out


def test_learn_needs_exactly_one_class(tmp_path: Path) -> None:
    (tmp_path / "m.eml").write_bytes(b"Subject: x\n\nhi\n")
    code, out = learn("--port", "1", str(tmp_path / "m.eml"))
    assert code == 64 and "--spam or --ham" in out


def test_learn_spamd_down_fails_with_progress_bar(tmp_path: Path) -> None:
    for i in range(25):
        (tmp_path / f"{i:02}.eml").write_bytes(b"Subject: x\n\nhello\n")
    (tmp_path / ".hidden").write_bytes(b"not a message")
    assert len(list(message_files(str(tmp_path)))) == 25
    code, out = learn("--ham", "--port", str(free_port()), str(tmp_path))
    assert code == 75
    assert "25 messages, 0 learned, 0 already known, 0 skipped (size), 25 failed" in out
    assert "learning ham" in out  # the progress bar (stderr is mixed into output here)


def test_learn_size_cap_and_config(tmp_path: Path, spamd: SpamdInstance) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(f'[[filter]]\nuse = "spamassassin"\nport = {spamd.port}\n')
    (tmp_path / "big.eml").write_bytes(b"Subject: big\n\n" + b"x" * 2000)
    code, out = learn("--spam", "-c", str(config), "--max-size", "1000",
                      str(tmp_path / "big.eml"))
    assert code == 0 and "1 skipped (size)" in out, out
