"""The click-free ``rohrpost run`` (rohrpost.launch): the same bytes and exit codes as click's.

Every argument list below runs twice: through ``bin/rohrpost`` (the launcher, which takes the
fast path when the arguments are plain) and through the click group alone (what the launcher
falls back to, and what ``bin/rohrpost`` ran before). Output, the status line, the log lines
(time, pid, queue id and timings masked) and the exit code must be the same.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rohrpost.launch import RUN_OPTIONS, parse_run

ROOT = Path(__file__).resolve().parents[2]
BIN = str(ROOT / "bin" / "rohrpost")
PIPELINE = ROOT / "pipeline.toml"
CLICK = ("import sys\nsys.path.insert(0, sys.argv.pop(1))\nfrom rohrpost.cli import main\n"
         "main(prog_name='rohrpost')")
MODULES = ("import atexit, sys\nsys.path.insert(0, sys.argv.pop(1))\n"
           "atexit.register(lambda: print('MODULES', *sorted(sys.modules), file=sys.stderr))\n"
           "from rohrpost.launch import main\nmain(prog_name='rohrpost')")

HAM = b"From: alice@example.org\nTo: bob@example.net\nSubject: hello\nList-Id: <l.example>\n\nhi\n"
SPAMMY = b"From: alice@example.org\nSubject: Buy NOW cheap\n\nhi\n"
PARTNER = (b"Return-Path: <x@partner.example>\nFrom: x@partner.example\nSubject: contract\n\n"
           b"see attachment\n")
ENVELOPE = ("-f", "alice@example.org", "-r", "bob@example.net", "--client-ip", "192.0.2.1",
            "--helo", "mail.example.org")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("SENDER", "RECIPIENT", "ROHRPOST_CONFIG", "ROHRPOST_LOG_LEVEL")
            and not k.endswith("_COMPLETE")}


def _masked(stderr: bytes) -> bytes:
    text = re.sub(rb"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} rohrpost\[\d+\]", b"TIME rohrpost[PID]",
                  stderr, flags=re.M)
    text = re.sub(rb"\b[0-9A-F]{12}\b", b"QUEUEID", text)
    text = re.sub(rb"quarantined as [^:]+:", b"quarantined as QID:", text)
    return re.sub(rb"(ms=|:)\d+\.\d\b", rb"\1N", text)


def _both(args: list[str], data: bytes, tmp_path: Path) -> tuple[subprocess.CompletedProcess[bytes],
                                                                   subprocess.CompletedProcess[bytes]]:
    """Run ``args`` through the launcher and through click, each in a fresh copy of the files."""
    results = []
    for kind in ("launcher", "click"):
        work = tmp_path / kind
        work.mkdir()
        shutil.copy(PIPELINE, work / "pipeline.toml")
        (work / "folder").mkdir()
        argv = [BIN] if kind == "launcher" else [sys.executable, "-c", CLICK, str(ROOT)]
        results.append(subprocess.run([*argv, *args], input=data, capture_output=True,
                                      cwd=work, env=_env(), timeout=60, check=False))
    return results[0], results[1]


# (arguments, stdin, the exit code both must give): the codes show the cases differ
SAME_AS_CLICK = [
    (["run", "-c", "pipeline.toml", *ENVELOPE], HAM, 0),
    (["run", "--config", "pipeline.toml"], HAM, 0),
    (["run", "--config=pipeline.toml", "--sender=", "--recipient=a@example.net",
      "--recipient", "b@example.net"], HAM, 0),
    (["run", "-c", "pipeline.toml", *ENVELOPE], SPAMMY, 77),  # reject
    (["run", "-c", "pipeline.toml"], PARTNER, 0),  # quarantine: X-Rohrpost-Action
    (["run", "-c", "pipeline.toml", "--auth-user", "alice"], HAM, 0),
    (["run", "-c", "pipeline.toml", "--client-ip", "not-an-ip"], HAM, 75),
    (["run", "-c", "pipeline.toml"], b"", 75),  # empty input
    (["run", "-c", "missing.toml"], HAM, 75),  # configuration error
    (["run", "-c", "pipeline.toml", "--deliver", "nowhere:x"], HAM, 75),  # bad destination
    (["run", "-c", "pipeline.toml", "--deliver", "maildir:md", "-r", "bob@example.net"], HAM, 0),
    (["run", "-c", "pipeline.toml", "-f", "a\u00e9@example.org"], HAM, 0),  # non-ASCII
    (["run", "-c", "pipeline.toml", "-f", "a@example.org\x1b[31m"], HAM, 0),  # escape sequence
    # what the launcher leaves to click: it must fall back, with click's message and status
    (["run", "-c", "folder"], HAM, 75),  # click.Path(dir_okay=False)
    (["run", "--help"], b"", 0),
    (["run", "-h"], b"", 0),
    (["run", "--bogus"], HAM, 75),
    (["run", "-c"], HAM, 75),  # value missing: MTA-facing, so 75 too (finding 28, fixed)
    (["run", "-c", "pipeline.toml", "-f", "-r"], HAM, 0),  # click takes "-r" as the sender
    (["run", "-c", "pipeline.toml", "-c", "missing.toml"], HAM, 75),  # the last one wins
    (["run", "-cpipeline.toml"], HAM, 0),
    (["run", "-c", "pipeline.toml", "extra"], HAM, 75),
    (["run", "-c", "pipeline.toml", "--", "-f"], HAM, 75),
    (["--help"], b"", 0),
    ([], b"", 64),  # no command: the help, as a usage error
]


@pytest.mark.parametrize(("args", "data", "code"), SAME_AS_CLICK)
def test_launcher_is_byte_identical_to_click(args: list[str], data: bytes, code: int,
                                             tmp_path: Path) -> None:
    fast, slow = _both(args, data, tmp_path)
    assert (fast.returncode, slow.returncode) == (code, code), (fast.stderr, slow.stderr)
    assert fast.stdout == slow.stdout
    assert _masked(fast.stderr) == _masked(slow.stderr)
    delivered = [sorted(p.read_bytes() for p in (tmp_path / kind / "md" / "new").iterdir())
                 if (tmp_path / kind / "md").exists() else [] for kind in ("launcher", "click")]
    assert delivered[0] == delivered[1]


def test_an_internal_error_is_a_tempfail_on_both_paths(tmp_path: Path) -> None:
    """stdin closed (sys.stdin is None): an unexpected exception, which must exit 75."""
    out = []
    for argv in ([BIN], [sys.executable, "-c", CLICK, str(ROOT)]):
        shutil.copy(PIPELINE, tmp_path / "pipeline.toml")
        res = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", *argv, "run", "-c",
                              "pipeline.toml"], capture_output=True, cwd=tmp_path, env=_env(),
                             timeout=60, check=False)
        out.append((res.returncode, res.stdout, _masked(res.stderr)))
    assert out[0] == out[1]
    assert out[0][0] == 75 and out[0][2].startswith(b"4.3.0 rohrpost: internal error"), out[0]


def _modules(args: list[str], data: bytes, cwd: Path) -> tuple[int, set[str]]:
    res = subprocess.run([sys.executable, "-c", MODULES, str(ROOT), *args], input=data,
                         capture_output=True, cwd=cwd, env=_env(), timeout=60, check=False)
    line = next(ln for ln in res.stderr.decode().splitlines() if ln.startswith("MODULES "))
    return res.returncode, set(line.split()[1:])


def test_run_with_the_default_pipeline_imports_neither_click_nor_asyncio(tmp_path: Path) -> None:
    shutil.copy(PIPELINE, tmp_path / "pipeline.toml")
    code, modules = _modules(["run", "-c", "pipeline.toml", *ENVELOPE], HAM, tmp_path)
    assert code == 0
    assert "rohrpost.filters.rules" in modules  # the run really happened
    heavy = {"click", "asyncio", "dataclasses", "inspect", "email.parser", "json", "pkgutil"}
    assert heavy & modules == set()


@pytest.mark.parametrize("args", [["run", "--help"], ["run", "-c", "pipeline.toml", "--bogus"],
                                  ["check", "--help"]])
def test_anything_unusual_goes_through_click(tmp_path: Path, args: list[str]) -> None:
    shutil.copy(PIPELINE, tmp_path / "pipeline.toml")
    _code, modules = _modules(args, HAM, tmp_path)
    assert "click" in modules


@pytest.mark.parametrize(("argv", "expected"), [
    (["run"], {}),
    (["run", "-c", "p.toml", "-f", "", "-r", "a@x", "--recipient", "b@x"],
     {"config_path": "p.toml", "sender": "", "recipients": ("a@x", "b@x")}),
    (["run", "--sender=s@x", "--client-ip", "192.0.2.1", "--helo", "h", "--auth-user", "u",
      "--deliver=maildir:/tmp/x"],
     {"sender": "s@x", "client_ip": "192.0.2.1", "helo": "h", "auth_user": "u",
      "deliver": "maildir:/tmp/x"}),
    (["run", "--deliver", "pipe:/bin/cat"], {"deliver": "pipe:/bin/cat"}),
])
def test_plain_arguments_are_parsed(argv: list[str], expected: dict[str, object]) -> None:
    args = parse_run(argv, {})
    assert args is not None
    defaults = {"config_path": None, "deliver": None, "sender": None, "recipients": (),
                "client_ip": "", "helo": "", "auth_user": ""}
    assert {k: getattr(args, k) for k in defaults} == {**defaults, **expected}


@pytest.mark.parametrize("argv", [
    [], ["check"], ["--help", "run"], ["run", "-h"], ["run", "--help"], ["run", "--version"],
    ["run", "-c"], ["run", "-f", "-r"], ["run", "-f", "-"], ["run", "-c", "a", "-c", "b"],
    ["run", "--sender", "a", "-f", "b"], ["run", "-cp.toml"], ["run", "-c=p.toml"],
    ["run", "--conf", "p.toml"], ["run", "x"], ["run", "--", "-f"], ["run", "--bogus=1"],
    ["filter", "size"], ["run", "--list"],
])
def test_unusual_arguments_are_left_to_click(argv: list[str]) -> None:
    assert parse_run(argv, {}) is None


def test_completion_and_refused_paths_are_left_to_click(tmp_path: Path) -> None:
    assert parse_run(["run"], {"_ROHRPOST_COMPLETE": "bash_source"}) is None
    assert parse_run(["run"], {"_ROHRPOST_COMPLETE": ""}) is not None
    assert parse_run(["run", "-c", str(tmp_path)], {}) is None  # a folder
    unreadable = tmp_path / "secret.toml"
    unreadable.write_text("")
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything; click checks os.access too
        assert parse_run(["run", "-c", str(unreadable)], {}) is not None
    else:
        assert parse_run(["run", "-c", str(unreadable)], {}) is None
    assert parse_run(["run", "-c", str(tmp_path / "missing.toml")], {}) is not None


def test_every_option_of_run_is_known_to_the_launcher() -> None:
    from rohrpost.cli.pipe import run_cmd

    spellings = {opt for p in run_cmd.params for opt in p.opts}
    assert spellings == set(RUN_OPTIONS)
    assert {p.name for p in run_cmd.params} == set(RUN_OPTIONS.values())
