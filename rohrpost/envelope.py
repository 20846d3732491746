"""The SMTP envelope: who connected, who sends, who receives.

Owns the immutable ``Envelope`` value and address helpers. Every mode (milter, SMTP/LMTP,
pipe) fills what it knows; filters read it and never modify it (they return changes).
"""

from __future__ import annotations

from collections.abc import Mapping

from rohrpost.record import FrozenRecord, replace

_set = object.__setattr__


class Envelope(FrozenRecord):
    """What the MTA knows about a message besides its bytes.

    :param client_ip: the connecting client's address ("" when unknown, e.g. in a pipe).
    :param client_name: the client's reverse-DNS name as the MTA saw it.
    :param helo: the HELO/EHLO argument.
    :param mail_from: the MAIL FROM address without angle brackets ("" is the null sender).
    :param mail_params: ESMTP parameters of MAIL FROM (e.g. ``("BODY=8BITMIME",)``).
    :param rcpts: the RCPT TO addresses in order.
    :param auth_user: the SASL user name when the client authenticated.
    :param tls: TLS facts (protocol, cipher) as the MTA reported them.
    :param queue_id: the MTA's queue id, or one we made up.
    :param macros: further MTA macros (milter) or environment facts (pipe).
    :param sources: which source gave each field (argument, environment, message), for logs.
    """

    __slots__ = _fields = ("client_ip", "client_name", "helo", "mail_from", "mail_params", "rcpts",
                           "auth_user", "tls", "queue_id", "macros", "sources")
    client_ip: str
    client_name: str
    helo: str
    mail_from: str
    mail_params: tuple[str, ...]
    rcpts: tuple[str, ...]
    auth_user: str
    tls: Mapping[str, str]
    queue_id: str
    macros: Mapping[str, str]
    sources: Mapping[str, str]

    def __init__(self, client_ip: str = "", client_name: str = "", helo: str = "",  # noqa: PLR0917
                 mail_from: str = "", mail_params: tuple[str, ...] = (),
                 rcpts: tuple[str, ...] = (), auth_user: str = "",
                 tls: Mapping[str, str] | None = None, queue_id: str = "",
                 macros: Mapping[str, str] | None = None,
                 sources: Mapping[str, str] | None = None) -> None:
        _set(self, "client_ip", client_ip)
        _set(self, "client_name", client_name)
        _set(self, "helo", helo)
        _set(self, "mail_from", mail_from)
        _set(self, "mail_params", mail_params)
        _set(self, "rcpts", rcpts)
        _set(self, "auth_user", auth_user)
        _set(self, "tls", {} if tls is None else tls)
        _set(self, "queue_id", queue_id)
        _set(self, "macros", {} if macros is None else macros)
        _set(self, "sources", {} if sources is None else sources)

    def replace(self, **changes: object) -> Envelope:
        """Return a copy with the given fields replaced."""
        return replace(self, **changes)

    @property
    def authenticated(self) -> bool:
        """True when the client authenticated (SMTP AUTH or ``--auth-user``)."""
        return bool(self.auth_user)

    @property
    def sender_domain(self) -> str:
        """The domain of MAIL FROM, lower-cased ("" for the null sender)."""
        return domain_of(self.mail_from)


def strip_brackets(addr: str) -> str:
    """Remove surrounding whitespace and one pair of angle brackets from an address."""
    addr = addr.strip()
    if addr.startswith("<") and addr.endswith(">"):
        addr = addr[1:-1].strip()
    return addr


def domain_of(addr: str) -> str:
    """Return the lower-cased domain part of an address, or "" when there is none."""
    addr = strip_brackets(addr)
    at = addr.rfind("@")
    return addr[at + 1 :].lower().rstrip(".") if at >= 0 else ""


def local_part(addr: str) -> str:
    """Return the local part of an address (everything before the last "@")."""
    addr = strip_brackets(addr)
    at = addr.rfind("@")
    return addr[:at] if at >= 0 else addr
