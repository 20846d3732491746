"""The command-line contract: run, filter, check, deliver, config check, quarantine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = str(ROOT / "bin" / "rohrpost")
PIPELINE = str(ROOT / "pipeline.toml")

HAM = b"From: alice@example.org\nTo: bob@example.net\nSubject: hello\nList-Id: <l.example>\n\nhi\n"
SPAMMY = b"From: alice@example.org\nSubject: Buy NOW cheap\n\nhi\n"
PARTNER = (b"Return-Path: <x@partner.example>\nFrom: x@partner.example\nSubject: contract\n\n"
           b"see attachment\n")


def rp(*args: str, data: bytes = b"", env: dict[str, str] | None = None,
       cwd: str | None = None) -> subprocess.CompletedProcess[bytes]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("SENDER", "RECIPIENT", "ROHRPOST_CONFIG")}
    environ.update(env or {})
    return subprocess.run([BIN, *args], input=data, capture_output=True, timeout=60,
                          env=environ, cwd=cwd, check=False)


@pytest.fixture
def config(tmp_path: Path) -> str:
    text = Path(PIPELINE).read_text()
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    return str(path)


def test_run_accepts_and_writes_headers(config: str) -> None:
    res = rp("run", "-c", config, "--sender", "alice@example.org", "--recipient",
             "bob@example.net", data=HAM)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.endswith(b"\n\nhi\n")
    assert b"X-Newsletter: yes\n" in out
    assert b"X-Spam-Status: No, score=2.5 required=5.0 tests=NEWSLETTER" in out
    assert b"X-Rohrpost-Result: action=accept score=2.5 symbols=NEWSLETTER(2.5)" in out
    assert b"mode=run" in res.stderr and b"action=accept" in res.stderr


def test_reject_exits_77_with_enhanced_code_and_writes_nothing(config: str) -> None:
    res = rp("run", "-c", config, data=SPAMMY)
    assert res.returncode == 77
    assert res.stdout == b""
    assert b"5.7.1 Blocked by local policy" in res.stderr


def test_quarantine_keeps_a_copy_and_marks_the_output(config: str, tmp_path: Path) -> None:
    res = rp("run", "-c", config, data=PARTNER)
    assert res.returncode == 0, res.stderr
    assert b"X-Rohrpost-Action: quarantine\n" in res.stdout
    listed = rp("quarantine", "list", "-c", config, "--json")
    entries = json.loads(listed.stdout)
    assert len(entries) == 1
    assert entries[0]["mail_from"] == "x@partner.example"
    assert entries[0]["symbols"] == ["HOLD_FOR_REVIEW"]
    qid = entries[0]["id"]
    shown = rp("quarantine", "show", "-c", config, qid, "--raw")
    assert b"see attachment" in shown.stdout
    maildir = tmp_path / "released"
    rel = rp("quarantine", "release", "-c", config, qid, "--to", f"maildir:{maildir}")
    assert rel.returncode == 0, rel.stderr
    assert len(list((maildir / "new").iterdir())) == 1
    assert json.loads(rp("quarantine", "list", "-c", config, "--json").stdout) == []
    assert rp("quarantine", "show", "-c", config, "../../etc/passwd").returncode == 66


def test_run_with_deliver(config: str, tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    res = rp("run", "-c", config, "--deliver", f"maildir:{maildir}", "-r", "bob@example.net",
             data=HAM)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b""
    (msg,) = list((maildir / "new").iterdir())
    body = msg.read_bytes()
    assert b"Delivered-To: bob@example.net" in body and b"X-Newsletter: yes" in body
    assert list((maildir / "tmp").iterdir()) == []
    res = rp("run", "-c", config, "--deliver", f"maildir:{maildir}", data=PARTNER)
    assert res.returncode == 0
    assert len(list((maildir / "new").iterdir())) == 1  # quarantined, not delivered


@pytest.mark.parametrize(("args", "data"), [
    (("run", "--bogus"), HAM),
    (("run", "--client-ip", "not-an-ip"), HAM),
    (("run",), b""),
    (("run",), b"\n\n"),
    (("deliver", "nowhere:x"), HAM),
    (("filter", "nosuchfilter"), HAM),
    (("filter", "size", "--max-size", "many"), HAM),
])
def test_mta_facing_problems_are_tempfail(config: str, args: tuple[str, ...], data: bytes) -> None:
    res = rp(*args[:1], "-c", config, *args[1:], data=data) if args[0] != "deliver" \
        else rp(*args, data=data)
    assert res.returncode == 75, res.stderr
    assert res.stdout == b""
    assert res.stderr.strip()


def test_bad_config_is_tempfail_for_run_and_78_for_config_check(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\n\n[[filter]]\nuse = "rules"\n[[filter.rule]]\nname = "X"\n'
                   'header = "Subject"\nregexx = "a"\n')
    res = rp("run", "-c", str(bad), data=HAM)
    assert res.returncode == 75
    assert f"{bad}:8".encode() in res.stderr
    assert b"regexx" in res.stderr and b"did you mean 'regex'" in res.stderr
    chk = rp("config", "check", "-c", str(bad))
    assert chk.returncode == 78
    assert f"{bad}:8".encode() in chk.stderr
    ok = rp("config", "check", "-c", PIPELINE)
    assert ok.returncode == 0 and b"OK (4 filters" in ok.stdout


def test_filter_alone_with_options(config: str) -> None:
    res = rp("filter", "size", "--max-size", "10", data=HAM)
    assert res.returncode == 69
    assert b"5.3.4" in res.stderr
    res = rp("filter", "size", "--max-size=100000", "--score-over", "10", data=HAM)
    assert res.returncode == 0
    assert b"SIZE_LARGE(1)" in res.stdout
    listing = rp("filter", "--list")
    assert listing.returncode == 0
    for name in (b"rules", b"size", b"received", b"headers"):
        assert b"\n" + name + b"  [" in b"\n" + listing.stdout


def test_check_table_and_json(config: str, tmp_path: Path) -> None:
    files = []
    for i, data in enumerate((HAM, SPAMMY, PARTNER)):
        f = tmp_path / f"m{i}.eml"
        f.write_bytes(data)
        files.append(str(f))
    res = rp("check", "-c", config, "--json", *files)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert [d["action"] for d in data] == ["accept", "reject", "quarantine"]
    assert data[1]["reply"] == "550 5.7.1 Blocked by local policy"
    rules = next(f for f in data[0]["filters"] if f["name"] == "rules")
    assert rules["symbols"][0]["name"] == "NEWSLETTER"
    assert any("X-Newsletter" in c for c in rules["changes"])
    table = rp("check", "-c", config, *files)
    assert b"=> REJECT" in table.stdout and b"NEWSLETTER(2.5)" in table.stdout
    # check changes nothing: no quarantine entry was made
    assert json.loads(rp("quarantine", "list", "-c", config, "--json").stdout) == []
    assert rp("check", "-c", config, str(tmp_path / "missing.eml")).returncode == 66


def test_envelope_from_postfix_environment(config: str, tmp_path: Path) -> None:
    maildir = tmp_path / "md"
    res = rp("run", "-c", config, "--deliver", f"maildir:{maildir}", data=HAM,
             env={"SENDER": "env@example.org", "RECIPIENT": "rcpt@example.net"})
    assert res.returncode == 0, res.stderr
    assert b"sources=mail_from=environment SENDER,rcpts=environment RECIPIENT" in res.stderr
    (msg,) = list((maildir / "new").iterdir())
    assert msg.read_bytes().startswith(b"Return-Path: <env@example.org>\nDelivered-To: "
                                       b"rcpt@example.net\n")


def test_deliver_command(tmp_path: Path) -> None:
    mbox = tmp_path / "mbox"
    res = rp("deliver", f"mbox:{mbox}", "--sender", "a@example.org", "-r", "b@example.net",
             data=HAM)
    assert res.returncode == 0, res.stderr
    assert mbox.read_bytes().startswith(b"From a@example.org ")
    res = rp("deliver", "pipe:/bin/sh -c 'exit 67'", data=HAM)
    assert res.returncode == 67


@pytest.mark.parametrize("case", ["reject", "delivery"])
def test_status_line_is_the_first_line_on_stderr(config: str, tmp_path: Path, case: str) -> None:
    """pipe(8) takes the enhanced status code from the start of the output and puts the output
    into the bounce: the per-message log line must come after the status line, not before."""
    if case == "reject":
        res = rp("run", "-c", config, "--sender", "a@example.org", "--recipient", "b@example.net",
                 data=SPAMMY)
        assert res.returncode == 77
        expected = b"5.7.1 Blocked by local policy"
    else:
        blocker = tmp_path / "file"
        blocker.write_text("not a directory")
        res = rp("run", "-c", config, "--sender", "a@example.org", "--recipient", "b@example.net",
                 "--deliver", f"maildir:{blocker}/Maildir", data=HAM)
        assert res.returncode in (73, 75)
        expected = b"4." if res.returncode == 75 else b"5.2.0"
    lines = res.stderr.splitlines()
    assert lines[0].startswith(expected), res.stderr
    assert any(b"mode=run" in line for line in lines[1:]), res.stderr  # still logged, after it


def test_config_destinations_do_not_depend_on_the_working_directory(tmp_path: Path) -> None:
    """[quarantine] release_to = "maildir:var/Maildir" (the default pipeline.toml) lands beside
    the configuration file, wherever the command runs (systemd starts services in /)."""
    etc, elsewhere = tmp_path / "etc", tmp_path / "elsewhere"
    etc.mkdir()
    elsewhere.mkdir()
    config = etc / "pipeline.toml"
    config.write_text(Path(PIPELINE).read_text())
    res = rp("run", "-c", str(config), data=PARTNER, cwd=str(elsewhere))
    assert res.returncode == 0, res.stderr
    (qid,) = [p.stem for p in (etc / "var" / "quarantine").glob("*.eml")]
    res = rp("quarantine", "release", "-c", str(config), qid, cwd=str(elsewhere))
    assert res.returncode == 0, res.stderr
    assert len(list((etc / "var" / "Maildir" / "new").iterdir())) == 1
    assert list(elsewhere.iterdir()) == []


def test_forged_action_header_is_removed(config: str) -> None:
    """An outsider's X-Rohrpost-Action: discard must not make the documented procmail recipe
    (`* ^X-Rohrpost-Action: (quarantine|discard)` -> /dev/null) drop an accepted message."""
    forged = HAM.replace(b"\n\n", b"\nX-Rohrpost-Action: discard\n\n", 1)
    res = rp("run", "-c", config, data=forged)
    assert res.returncode == 0, res.stderr
    assert b"X-Rohrpost-Action" not in res.stdout
    held = PARTNER.replace(b"\n\n", b"\nX-Rohrpost-Action: discard\n\n", 1)
    res = rp("run", "-c", config, data=held)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count(b"X-Rohrpost-Action") == 1
    assert b"X-Rohrpost-Action: quarantine\n" in res.stdout


FETCH_ACCOUNT = """
[[fetch]]
name = "old-provider"
protocol = "pop3"
host = "pop.example.com"
port = 995
tls = "implicit"
user = "bob"
password_file = "/etc/rohrpost/old-provider.pass"
keep = true
folders = ["INBOX"]
deliver = "maildir:/home/bob/Maildir"
recipient = "bob@example.net"
"""


@pytest.mark.parametrize(("old", "new", "key", "message"), [
    ('keep = true', 'kep = true', "fetch[0].kep", "unknown option (did you mean 'keep'?)"),
    ('tls = "implicit"', 'tls = "startls"', "fetch[0].tls", "must be one of"),
    ('[serve]', '[deliver]\njunk_foldr = "Junk"\n[serve]', "deliver.junk_foldr",
     "did you mean 'junk_folder'?"),
    ('deliver = "maildir:var/Maildir"', 'deliver = "maildr:var/Maildir"', "serve.deliver",
     "unknown destination 'maildr:var/Maildir'"),
    ('release_to = "maildir:var/Maildir"', 'release_to = "smtp:localhost"',
     "quarantine.release_to", "smtp: expected HOST:PORT"),
])
def test_config_check_validates_fetch_deliver_and_destinations(tmp_path: Path, old: str, new: str,
                                                               key: str, message: str) -> None:
    """config check (systemd's ExecStartPre) must find what fetch, serve and release would."""
    path = tmp_path / "pipeline.toml"
    text = Path(PIPELINE).read_text() + FETCH_ACCOUNT
    path.write_text(text)
    assert rp("config", "check", "-c", str(path)).returncode == 0
    assert old in text
    changed = text.replace(old, new, 1)
    path.write_text(changed)
    name = key.rsplit(".", 1)[1].split("[", maxsplit=1)[0]
    line = next(n for n, t in enumerate(changed.splitlines(), 1)
                if t.startswith(f"{name} =") and n >= changed[:changed.index(new)].count("\n"))
    res = rp("config", "check", "-c", str(path))
    assert res.returncode == 78, res.stderr
    err = res.stderr.decode()
    assert f"pipeline.toml:{line}: {key}: " in err and message in err, err


def test_run_with_loop_free_filters_does_not_import_asyncio(config: str) -> None:
    """The default pipeline's filters never await: pipe mode skips asyncio's import."""
    code = ("import sys\nsys.path.insert(0, sys.argv[1])\nfrom rohrpost.cli import main\n"
            "try:\n    main(sys.argv[2:], prog_name='rohrpost')\nfinally:\n"
            "    print('asyncio' in sys.modules, 'email.parser' in sys.modules, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code, str(ROOT), "run", "-c", config],
                         input=HAM, capture_output=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    assert b"X-Newsletter: yes\n" in res.stdout
    assert res.stderr.splitlines()[-1] == b"False False"


def test_check_all_shows_filters_past_a_final_verdict(config: str, tmp_path: Path) -> None:
    f = tmp_path / "spammy-news.eml"
    f.write_bytes(b"From: a@example.org\nSubject: buy now\nList-Id: <l>\n\nx\n")
    cfg = Path(config)
    cfg.write_text(cfg.read_text().replace('[[filter]]\nuse = "headers"',
                                           '[[filter]]\nuse = "size"\nname = "tiny"\n'
                                           'max_size = 10\n\n[[filter]]\nuse = "headers"'))
    faithful = json.loads(rp("check", "-c", config, "--json", str(f)).stdout)[0]
    assert faithful["reply"].startswith("552 5.3.4")
    assert [x["name"] for x in faithful["filters"]] == ["tiny"]
    everything = json.loads(rp("check", "-c", config, "--json", "--all", str(f)).stdout)[0]
    assert everything["reply"].startswith("552 5.3.4")
    names = [x["name"] for x in everything["filters"]]
    assert names[0] == "tiny" and "rules" in names
    rules = next(x for x in everything["filters"] if x["name"] == "rules")
    assert rules["verdict"]["reply"] == "550 5.7.1 Blocked by local policy"
