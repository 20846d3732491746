"""The DKIM key table: ``[[filter.key]]`` entries, loaded once, and who may sign with which.

Owns ``KeySpec`` (one key entry: domain, selector, key file, sender patterns, users),
``LoadedKey`` and ``load_keys`` (read and parse every key at filter start-up, OptionError if
unreadable, a warning if group- or world-readable), and ``keys_for`` (the signing table: which
keys sign a message from a given address and user). Shared by ``dkim-sign``, ``arc-seal`` and
``rohrpost dkim check``; it parses keys through ``_dkim_adapter`` and imports nothing else.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rohrpost.options import OptionError

log = logging.getLogger("rohrpost.filters.dkim")

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def check_names(domain: str, selector: str) -> None:
    """Refuse a signing domain or selector that is not a DNS name (RFC 6376 3.1, 3.5).

    Such a name would give signatures nobody can verify, and ``rohrpost dkim keygen`` uses
    both in the key's file name, so ``../x`` must never get that far.

    :raises OptionError: with path ``domain`` or ``selector``.
    """
    for what, value in (("domain", domain), ("selector", selector)):
        if len(value) > 253 or not _NAME_RE.fullmatch(value):
            raise OptionError(what, f"{value!r} is not a valid DNS name (letters, digits, "
                                    "hyphens; labels separated by dots; no trailing dot)")


@dataclass(frozen=True)
class KeySpec:
    """One ``[[filter.key]]`` entry.

    :param domain: the signing domain (``d=``).
    :param selector: the selector (``s=``); the public key is at ``S._domainkey.D``.
    :param key: path of the private key file (PEM; Ed25519 also as dkimpy's base64 seed).
    :param senders: From address patterns (``*@example.org``, ``bob@sub.example.org``,
        shell-style, case-insensitive) this key signs for. Default: any address in ``domain``
        or one of its subdomains.
    :param users: authenticated users (SASL names) allowed to use this key; empty: any.
        Mail from trusted networks has no user and is not restricted by this list.
    """

    domain: str
    selector: str
    key: str
    senders: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_names(self.domain, self.selector)
        if not self.key:
            raise OptionError("key", "must not be empty")


@dataclass(frozen=True)
class LoadedKey:
    """A key entry with its parsed private key (an ``_dkim_adapter.PrivateKey``)."""

    spec: KeySpec
    key: Any

    def may_sign(self, address: str, user: str) -> bool:
        """Return True when ``address`` matches the sender patterns and ``user`` may use the key."""
        address = address.lower()
        domain = self.spec.domain.lower().rstrip(".")
        patterns = [p.lower() for p in self.spec.senders] or [f"*@{domain}", f"*@*.{domain}"]
        if not any(fnmatch.fnmatchcase(address, p) for p in patterns):
            return False
        return not (user and self.spec.users and user not in self.spec.users)


def load_keys(specs: Sequence[KeySpec], where: str = "key") -> list[LoadedKey]:
    """Read and parse every key file once.

    :raises OptionError: for a missing, unreadable or unparsable key file.
    """
    from ._dkim_adapter import DkimKeyError, load_private_key

    loaded = []
    for i, spec in enumerate(specs):
        path = f"{where}[{i}].key"
        try:
            st = os.stat(spec.key)
            with open(spec.key, "rb") as fh:
                data = fh.read(1 << 16)
        except OSError as exc:
            raise OptionError(path, f"cannot read key file {spec.key}: {exc.strerror}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("DKIM key %s is readable by group or others (mode %o); chmod 600 it",
                        spec.key, stat.S_IMODE(st.st_mode))
        try:
            key = load_private_key(data)
        except DkimKeyError as exc:
            raise OptionError(path, f"{spec.key}: {exc}") from None
        loaded.append(LoadedKey(spec, key))
    return loaded


def keys_for(keys: Sequence[LoadedKey], address: str, user: str) -> list[LoadedKey]:
    """Return the keys that sign mail from ``address`` submitted by ``user`` (may be several)."""
    if "@" not in address:
        return []
    return [k for k in keys if k.may_sign(address, user)]
