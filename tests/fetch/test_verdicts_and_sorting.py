"""Verdicts during fetch (reject, tempfail, quarantine, spam → Junk) and delivery sorting:
rules, plus-address and recipient folders, duplicate suppression, Maildir++ quota."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from rohrpost.config import ConfigError, load_config, parse_config
from rohrpost.deliver.destination import parse_destination
from rohrpost.deliver.quota import parse_maildirsize
from rohrpost.deliver.sorting import deliver_sorted, load_deliver_section, plan
from rohrpost.envelope import Envelope
from rohrpost.filter import Context, Filter, Mail
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.quarantine import Quarantine
from rohrpost.result import Action, FilterResult, Symbol, Verdict
from rohrpost.services import make_services
from rohrpost.store.memory import MemoryStore
from tests.core.core_helpers import make_pipeline
from tests.fetch.helpers import account, maildir_files, make_message, seed, write_config
from tests.support.daemons import DovecotInstance


@dataclass(frozen=True)
class _NoOptions:
    pass


class BySubject(Filter):
    """Test filter: the Subject says what to do (reject, tempfail, quarantine, spam)."""

    name = "by-subject"
    description = "test"
    Options = _NoOptions

    def __init__(self) -> None:
        super().__init__(_NoOptions())

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        assert mail.message is not None
        subject = mail.message.get("Subject")
        for word, action in (("reject", Action.REJECT), ("tempfail", Action.TEMPFAIL),
                             ("quarantine", Action.QUARANTINE)):
            if word in subject:
                return FilterResult(verdict=Verdict.of(action, reason=f"subject {word}"))
        if "spam" in subject:
            return FilterResult(symbols=[Symbol("TEST_SPAM", 10.0)])
        return FilterResult()


@pytest.mark.integration
def test_fetch_verdicts(pop_imap: DovecotInstance, workdir: Path) -> None:
    subjects = ["plain", "please reject", "please tempfail", "quarantine me", "spam offer"]
    seed(pop_imap, "alice@example.test",
         [make_message(i, subject=s) for i, s in enumerate(subjects)])
    extra = "[actions]\nadd_header = 5\n"
    cfg = load_config(str(write_config(workdir, [account(pop_imap, workdir)], extra)))
    from rohrpost.fetch.accounts import load_accounts
    from rohrpost.fetch.job import FetchJob

    base = make_pipeline([("by-subject", BySubject())])
    pipeline = Pipeline(cfg, base.steps)

    async def run() -> FetchJob:
        services = make_services(cfg)
        job = FetchJob(cfg, load_accounts(cfg)[0], pipeline, services,
                       load_deliver_section(cfg))
        try:
            await job.run()
        finally:
            await services.aclose()
        return job

    job = asyncio.run(run())
    s = job.stats
    assert (s.fetched, s.delivered, s.rejected, s.quarantined, s.tempfailed) == (5, 2, 1, 1, 1)
    box = workdir / "Maildir"
    assert len(maildir_files(box)) == 1
    junk = maildir_files(box, "Junk")
    assert len(junk) == 1 and b"X-Spam-Flag: YES" in junk[0].read_bytes()
    assert len(Quarantine(cfg.quarantine_dir).list()) == 1
    again = asyncio.run(run()).stats  # only the tempfailed message is tried again
    assert (again.fetched, again.tempfailed, again.skipped_seen) == (1, 1, 4)


def _config(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "pipeline.toml"
    path.write_text(f'[pipeline]\nvar_dir = "{tmp_path}/var"\n' + text)
    return load_config(str(path))


SORT_TOML = r'''
[deliver]
recipient_folders = { "sales@example.net" = "Sales" }

[[deliver.rule]]
header = "List-Id"
regex = '<(?P<list>[a-z0-9-]+)\.'
folder = "lists.{list}"

[[deliver.rule]]
header = "Subject"
regex = "invoice"
folder = "Invoices"
'''


@pytest.mark.parametrize(("headers", "rcpt", "spam", "folder"), [
    ("Subject: hi\n", "bob@example.net", False, None),
    ("Subject: hi\n", "bob@example.net", True, "Junk"),
    ("List-Id: Python <python-dev.python.org>\n", "bob@example.net", False, "lists.python-dev"),
    ("List-Id: evil <..%2f..>\n", "bob@example.net", False, None),
    ("Subject: Your INVOICE\n", "bob@example.net", False, "Invoices"),
    ("Subject: hi\n", "sales@example.net", False, "Sales"),
    ("Subject: hi\n", "bob+Lists/../x@example.net", False, "lists_x"),
    ("Subject: hi\nDelivered-To: bob+news@example.net\n", "bob@example.net", False, "news"),
])
def test_plan(tmp_path: Path, headers: str, rcpt: str, spam: bool, folder: str | None) -> None:
    section = load_deliver_section(_config(tmp_path, SORT_TOML))
    msg = Message((headers + "\nbody\n").encode())
    target = plan(section, parse_destination(f"maildir:{tmp_path}/M"), msg,
                  Envelope(rcpts=(rcpt,)), spam=spam)
    assert target.folder == folder


@pytest.mark.parametrize(("text", "key"), [
    ('[deliver]\njunk_folder = "../x"\n', "deliver.junk_folder"),
    ('[deliver]\n[[deliver.rule]]\nheader = "Subject"\nregex = "("\nfolder = "X"\n',
     "deliver.rule[0].regex"),
    ('[deliver]\ndedup_windw = 5\n', "deliver.dedup_windw"),
    ('[deliver]\n[[deliver.rule]]\nregex = "x"\n', "deliver.rule[0]"),
])
def test_deliver_section_errors_are_located(text: str, key: str) -> None:
    config = parse_config(text, "p.toml")
    with pytest.raises(ConfigError) as info:
        load_deliver_section(config)
    assert info.value.key == key and info.value.line > 0


def test_dedup_per_destination_and_window(tmp_path: Path) -> None:
    section = load_deliver_section(_config(tmp_path, "[deliver]\ndedup_window = 60\n"))
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    env = Envelope(rcpts=("bob@example.net",))
    raw = make_message(1)
    dest_a = parse_destination(f"maildir:{tmp_path}/A")
    dest_b = parse_destination(f"maildir:{tmp_path}/B")

    async def go(dest, data):  # type: ignore[no-untyped-def]
        return await deliver_sorted(section, dest, data, env, spam=False, store=store)

    assert not asyncio.run(go(dest_a, raw)).duplicate
    relayed = b"Received: from elsewhere\r\nX-Other: 1\r\n" + raw  # same message, new headers
    assert asyncio.run(go(dest_a, relayed)).duplicate
    assert not asyncio.run(go(dest_b, raw)).duplicate  # per destination
    now[0] += 61
    assert not asyncio.run(go(dest_a, raw)).duplicate  # window over
    assert len(maildir_files(tmp_path / "A")) == 2


@pytest.mark.parametrize(("permanent", "code", "exit_code"), [(False, 452, 75), (True, 552, 69)])
def test_maildir_quota(tmp_path: Path, permanent: bool, code: int, exit_code: int) -> None:
    toml = f"[deliver]\ndedup = false\nquota_permanent = {str(permanent).lower()}\n"
    section = load_deliver_section(_config(tmp_path, toml))
    box = tmp_path / "M"
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    (box / "maildirsize").write_text("1000S,10C\n900 3\n")
    env = Envelope(rcpts=("bob@example.net",))
    dest = parse_destination(f"maildir:{box}")
    small = b"Subject: s\n\nx\n"
    ok = asyncio.run(deliver_sorted(section, dest, small, env, spam=False))
    assert ok.report.ok
    quota = parse_maildirsize((box / "maildirsize").read_text())
    assert quota is not None and quota.used_bytes == 900 + len(small) and quota.used_count == 4
    big = b"Subject: b\n\n" + b"x" * 200 + b"\n"
    refused = asyncio.run(deliver_sorted(section, dest, big, env, spam=False))
    assert refused.report.outcomes[0].reply.code == code
    assert refused.report.exit_code == exit_code
    assert len(maildir_files(box)) == 1


def test_contrib_pipeline_fetch_validates() -> None:
    from rohrpost.fetch.accounts import load_accounts

    root = Path(__file__).resolve().parents[2]
    config = load_config(str(root / "contrib" / "pipeline-fetch.toml"))
    accounts = load_accounts(config)
    assert [a.name for a in accounts] == ["old-provider", "work-imap"]
    assert accounts[0].real_port == 995 and accounts[1].real_port == 143
    assert len(load_deliver_section(config).rule) == 2


def test_deliver_command_sorts_with_config(tmp_path: Path) -> None:
    import subprocess

    from tests.fetch.helpers import BIN

    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[pipeline]\nvar_dir = "{tmp_path}/var"\n[deliver]\n')
    box = tmp_path / "M"
    spam = b"X-Spam-Flag: YES\nSubject: buy\nMessage-ID: <s@x>\n\nbuy now\n"
    for expect in (0, 0):
        done = subprocess.run([*BIN, "deliver", "-c", str(cfg), f"maildir:{box}"], input=spam,
                              capture_output=True, timeout=30, check=False)
        assert done.returncode == expect, done.stderr
    assert len(maildir_files(box, "Junk")) == 1  # the second copy was a duplicate
    plain = subprocess.run([*BIN, "deliver", "-c", str(cfg), f"maildir:{box}",
                            "--recipient", "bob+News@example.net"],
                           input=b"Subject: hi\n\nhello\n", capture_output=True, timeout=30,
                           check=False)
    assert plain.returncode == 0, plain.stderr
    assert len(maildir_files(box, "news")) == 1


def test_run_deliver_sorts_with_deliver_table(tmp_path: Path) -> None:
    import subprocess

    from tests.fetch.helpers import BIN

    cfg = tmp_path / "p.toml"
    cfg.write_text(f'[pipeline]\nvar_dir = "{tmp_path}/var"\n[deliver]\n')
    box = tmp_path / "M"
    done = subprocess.run([*BIN, "run", "-c", str(cfg), "--deliver", f"maildir:{box}",
                           "--recipient", "bob+lists@example.net"],
                          input=b"Subject: hi\nMessage-ID: <l@x>\n\nhello\n",
                          capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    files = maildir_files(box, "lists")
    assert len(files) == 1 and b"X-Rohrpost-Result: action=accept" in files[0].read_bytes()


@pytest.mark.parametrize(("entry", "key", "words"), [
    ('tls = "startls"', "fetch[0].tls", "must be one of"),
    ('folders = ["Lists"]', "fetch[0].folders", "POP3 has only the inbox"),
    ('password_command = ["x"]', "fetch[0].password_file", "exactly one"),
    ('deliver = "maildir"', "fetch[0].deliver", "unknown destination"),
    ('kep = true', "fetch[0].kep", "did you mean 'keep'"),
])
def test_fetch_account_errors_are_located(entry: str, key: str, words: str) -> None:
    from rohrpost.fetch.accounts import load_accounts

    base = {"name": '"a"', "protocol": '"pop3"', "host": '"h"', "user": '"u"',
            "password_file": '"/p"', "deliver": '"maildir:/m"', "recipient": '"r@x"'}
    name = entry.split(" ", maxsplit=1)[0]
    if name != "password_command":
        base.pop(name, None)
    text = "[[fetch]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items()) + entry + "\n"
    config = parse_config(text, "p.toml")
    with pytest.raises(ConfigError) as info:
        load_accounts(config)
    assert info.value.key == key and words in str(info.value) and info.value.line > 1


def test_relative_destinations_in_the_config_follow_its_folder(tmp_path: Path) -> None:
    """fetch.md: all paths are relative to pipeline.toml's folder (deliver = too)."""
    from rohrpost.fetch.accounts import load_accounts

    text = ('[deliver]\n[[deliver.rule]]\nheader = "Subject"\nregex = "x"\n'
            'deliver = "maildir:archive"\n'
            '[[fetch]]\nname = "a"\nprotocol = "pop3"\nhost = "h"\nuser = "u"\n'
            'password_file = "p"\ndeliver = "maildir:Maildir"\nrecipient = "r@x"\n')
    config = parse_config(text, str(tmp_path / "p.toml"))
    (acct,) = load_accounts(config)
    assert acct.deliver == f"maildir:{tmp_path}/Maildir"
    assert acct.password_file == f"{tmp_path}/p"
    assert load_deliver_section(config).rule[0].deliver == f"maildir:{tmp_path}/archive"


def test_rule_destination_condition_with_relative_paths(tmp_path: Path) -> None:
    text = ('[deliver]\n[[deliver.rule]]\ndestination = "maildir:Maildir"\nfolder = "Only"\n'
            'regex = "."\n')
    config = parse_config(text, str(tmp_path / "p.toml"))
    section = load_deliver_section(config)
    msg = Message(b"Subject: x\n\nb\n")
    env = Envelope(rcpts=("r@x",))
    for base in (f"maildir:{tmp_path}/Maildir", f"maildir:{tmp_path}/./Maildir"):
        assert plan(section, parse_destination(base), msg, env, spam=False).folder == "Only"
    assert plan(section, parse_destination(f"maildir:{tmp_path}/Other"), msg, env,
                spam=False).folder is None
