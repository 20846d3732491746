"""Shared helpers for the fetch tests: messages, Dovecot seeding, configs, maildir reading."""

from __future__ import annotations

import email.utils
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.support.daemons import DovecotInstance

ROOT = Path(__file__).resolve().parents[2]
BIN = [sys.executable, str(ROOT / "bin" / "rohrpost")]


def make_message(i: int, *, subject: str = "", body: str = "", sender: str = "carol@example.org",
                 msgid: str | None = None) -> bytes:
    mid = msgid or f"<msg-{i}-{os.getpid()}@example.org>"
    return (
        f"Return-Path: <{sender}>\r\n"
        f"From: Carol <{sender}>\r\n"
        f"To: alice@example.test\r\n"
        f"Subject: {subject or f'message {i}'}\r\n"
        f"Message-ID: {mid}\r\n"
        f"Date: {email.utils.formatdate(localtime=True)}\r\n"
        "\r\n"
        f"{body or f'body of message {i}'}\r\nEND-OF-MESSAGE-{i}\r\n"
    ).encode()


def chown_tree(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def seed(dc: DovecotInstance, user: str, messages: list[bytes], folder: str = "") -> None:
    """Write messages straight into the Dovecot user's Maildir (fast; Dovecot indexes later)."""
    base = dc.maildir_of(user)
    target = base / f".{folder}" if folder else base
    for sub in ("cur", "new", "tmp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
        (target / sub).mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    for i, raw in enumerate(messages):
        name = f"{stamp}.S{i}R{os.urandom(4).hex()}.seed"
        (target / "new" / name).write_bytes(raw.replace(b"\r\n", b"\n"))
    chown_tree(dc.mail_dir, dc.mail_uid, dc.mail_gid)


def password_file(directory: Path, password: str = DovecotInstance.PASSWORD,
                  mode: int = 0o600) -> Path:
    path = directory / "account.pass"
    path.write_text(password + "\n")
    path.chmod(mode)
    return path


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(directory: Path, accounts: list[dict[str, object]], extra: str = "") -> Path:
    lines = ["[pipeline]", f'var_dir = "{directory}/var"', 'hostname = "fetcher.test"', ""]
    for acct in accounts:
        lines.append("[[fetch]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in acct.items()]
        lines.append("")
    path = directory / "pipeline.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def account(dc: DovecotInstance, directory: Path, *, protocol: str = "pop3",
            tls: str = "implicit", **over: object) -> dict[str, object]:
    ports = {("pop3", "implicit"): dc.pop3s_port, ("pop3", "starttls"): dc.pop3_port,
             ("imap", "implicit"): dc.imaps_port, ("imap", "starttls"): dc.imap_port}
    acct: dict[str, object] = {
        "name": "old-provider", "protocol": protocol, "host": "127.0.0.1",
        "port": ports[(protocol, tls)], "tls": tls, "user": "alice@example.test",
        "password_file": str(password_file(directory)), "keep": True,
        "deliver": f"maildir:{directory}/Maildir", "recipient": "bob@example.net",
        "ca_file": str(dc.cert_file),
    }
    acct.update(over)
    return acct


def run_fetch(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*BIN, "fetch", "-c", str(config), *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def maildir_files(path: Path, folder: str = "") -> list[Path]:
    base = path / f".{folder}" if folder else path
    out: list[Path] = []
    for sub in ("new", "cur"):
        d = base / sub
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.is_file())
    return out


def maildir_messages(path: Path, folder: str = "") -> list[bytes]:
    return [p.read_bytes() for p in maildir_files(path, folder)]


def server_count(dc: DovecotInstance, user: str, folder: str = "") -> int:
    return len(maildir_files(dc.maildir_of(user), folder))
