"""Fetch accounts: the ``[[fetch]]`` tables of pipeline.toml, passwords and TLS contexts.

Owns ``Account`` (validated with file and line through ``Config.error``), ``load_accounts``,
``read_password`` (a 0600 file or a command run without a shell; the secret is never logged or
put into an exception) and ``tls_context`` (verification always on; a private CA by file).
It opens no mail connection; ``pop3``/``imap`` do that.
"""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from rohrpost.deliver.destination import DestinationError, parse_destination
from rohrpost.options import OptionError, build_options

if TYPE_CHECKING:
    from rohrpost.config import Config

DEFAULT_PORTS = {("pop3", True): 995, ("pop3", False): 110, ("imap", True): 993,
                 ("imap", False): 143}
MAX_PASSWORD = 4096


class FetchError(Exception):
    """A fetch job cannot go on (server, TLS, protocol, password); the message says why."""


class PasswordError(FetchError):
    """The password cannot be read (file mode, missing file, failing command): a setup error."""


@dataclass(frozen=True)
class Account:
    """One ``[[fetch]]`` table; docs/fetch.md describes every key."""

    name: str
    protocol: Literal["pop3", "imap"]
    host: str
    user: str
    deliver: str
    recipient: str
    port: int = 0
    tls: Literal["implicit", "starttls", "none"] = "implicit"
    password_file: str = ""
    password_command: list[str] = field(default_factory=list)
    ca_file: str = ""
    keep: bool = True
    folders: list[str] = field(default_factory=lambda: ["INBOX"])
    on_reject: Literal["keep", "delete"] = "keep"
    timeout: float = 60.0
    max_message_size: int = 50 * 1024 * 1024
    max_line_length: int = 1024 * 1024
    max_messages: int = 0
    interval: float = 300.0
    jitter: float = 0.1
    idle: bool = True
    rekey_days: int = 400

    @property
    def real_port(self) -> int:
        """``port``, or the protocol's default for the TLS mode (995/110, 993/143)."""
        return self.port or DEFAULT_PORTS[(self.protocol, self.tls == "implicit")]

    @property
    def label(self) -> str:
        """``user@host:port`` for logs (never the password)."""
        return f"{self.user}@{self.host}:{self.real_port}"


def load_accounts(config: Config) -> list[Account]:
    """Every ``[[fetch]]`` account, validated; relative paths resolved against the config.

    :raises ConfigError: with file and line for any problem.
    """
    entries = config.raw.get("fetch", [])
    if not isinstance(entries, list):
        raise config.error("fetch", "use [[fetch]] tables (one per account)")
    accounts: list[Account] = []
    for i, entry in enumerate(entries):
        where = f"fetch[{i}]"
        try:
            acct: Account = build_options(Account, entry, where)
        except OptionError as exc:
            raise config.error(exc.path, exc.message, exc.suggestion) from None
        _check(config, where, acct, [a.name for a in accounts])
        paths = {"password_file": acct.password_file, "ca_file": acct.ca_file}
        resolved = {k: config.resolve_path(v) for k, v in paths.items() if v}
        resolved["deliver"] = config.resolve_destination(acct.deliver)
        accounts.append(_replace(acct, resolved))
    return accounts


def _replace(acct: Account, changes: dict[str, str]) -> Account:
    import dataclasses

    return dataclasses.replace(acct, **changes)  # type: ignore[arg-type]


def _check(config: Config, where: str, acct: Account, names: list[str]) -> None:
    def bad(key: str, message: str, suggestion: str = "") -> None:
        raise config.error(f"{where}.{key}", message, suggestion)

    if not acct.name or acct.name in names:
        bad("name", f"account names must be unique and non-empty ({acct.name!r})")
    for key in ("host", "user", "recipient", "name"):
        value = getattr(acct, key)
        if not value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
            bad(key, "must be non-empty, without spaces or control characters")
    if bool(acct.password_file) == bool(acct.password_command):
        bad("password_file", "give exactly one of password_file or password_command",
            'password_file = "/etc/rohrpost/NAME.pass" (mode 0600)')
    try:
        parse_destination(acct.deliver)
    except DestinationError as exc:
        bad("deliver", str(exc))
    if acct.protocol == "pop3" and acct.folders != ["INBOX"]:
        bad("folders", "POP3 has only the inbox; folders is for protocol = \"imap\"")
    if not acct.folders or any(not f or "\r" in f or "\n" in f for f in acct.folders):
        bad("folders", "must list at least one folder name without line breaks")
    if not 0 < acct.real_port < 65536:
        bad("port", "must be 1 to 65535")
    numbers = {"timeout": acct.timeout, "max_message_size": acct.max_message_size,
               "max_line_length": acct.max_line_length, "interval": acct.interval,
               "rekey_days": acct.rekey_days}
    for key, number in numbers.items():
        if number <= 0:
            bad(key, "must be positive")
    if not 0 <= acct.jitter < 1:
        bad("jitter", "must be a fraction from 0 to below 1 (0.1 is ±10 %)")
    if acct.max_messages < 0:
        bad("max_messages", "must be 0 (no limit) or positive")


def find_account(accounts: list[Account], name: str) -> Account:
    """The account called ``name``; ``FetchError`` listing the known names otherwise."""
    for acct in accounts:
        if acct.name == name:
            return acct
    known = ", ".join(a.name for a in accounts) or "none configured"
    raise FetchError(f"no [[fetch]] account named {name!r} (known: {known})")


def read_password(acct: Account) -> str:
    """The account's password from its 0600 file or its command (argv, no shell).

    :raises FetchError: group/world-readable file, unreadable file, failing command; the text
        never contains the password.
    """
    if acct.password_command:
        try:
            proc = subprocess.run(acct.password_command, capture_output=True, timeout=30,  # noqa: S603
                                  check=False, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PasswordError(f"password_command for {acct.name} failed: "
                             f"{type(exc).__name__}") from None
        if proc.returncode != 0:
            raise PasswordError(f"password_command for {acct.name} exited {proc.returncode}")
        data = proc.stdout
    else:
        data = _read_secret_file(acct.password_file)
    text = data.decode("utf-8", "replace").rstrip("\r\n")
    if not text or len(text) > MAX_PASSWORD or "\n" in text or "\r" in text or "\0" in text:
        raise PasswordError(f"password for {acct.name} is empty, multi-line or too long")
    return text


def _read_secret_file(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PasswordError(f"cannot open password_file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PasswordError(f"password_file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise PasswordError(
                f"password_file {path} is readable by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}")
        return os.read(fd, MAX_PASSWORD + 2)
    finally:
        os.close(fd)


def tls_context(acct: Account, ca_file: str = "") -> ssl.SSLContext:
    """A client context: certificate and host name verification on, TLS 1.2 at least.

    :param ca_file: ``--ca FILE`` overrides the account's ``ca_file``; without either the
        system's trust store is used.
    """
    cafile = ca_file or acct.ca_file or None
    try:
        ctx = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"cannot load CA file {cafile}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
