"""Where a piped message's envelope comes from: arguments, environment, or the message itself.

Owns ``envelope_for_pipe``. Precedence follows the conventions mail tools already share:
command-line arguments (Postfix pipe(8) ``${sender}``/``${recipient}``, fetchmail ``%F %T``),
then Postfix local(8)'s environment (SENDER, RECIPIENT, ORIGINAL_RECIPIENT, CLIENT_ADDRESS,
CLIENT_HELO, CLIENT_HOSTNAME, SASL_USERNAME, QUEUE_ID), then the message (``Return-Path:`` or an
mbox ``From `` line; ``Delivered-To:``/``X-Original-To:``). ``Envelope.sources`` records which
source gave each field so the log can say it.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence

from rohrpost.envelope import Envelope, strip_brackets
from rohrpost.message import Message
from rohrpost.record import FrozenRecord

_ADDR_RE = r"<([^<>]*)>"  # compiled on first use (re's cache): only with a Return-Path


class EnvelopeError(ValueError):
    """An envelope value from arguments that cannot be right (bad IP, CR/LF in an address)."""


class EnvelopeArgs(FrozenRecord):
    """Envelope values given on the command line (empty = not given)."""

    _fields = ("sender", "recipients", "client_ip", "helo", "auth_user", "client_name",
               "queue_id")
    sender: str | None
    recipients: Sequence[str]
    client_ip: str
    helo: str
    auth_user: str
    client_name: str
    queue_id: str

    def __init__(self, sender: str | None = None, recipients: Sequence[str] = (),  # noqa: PLR0917
                 client_ip: str = "", helo: str = "", auth_user: str = "",
                 client_name: str = "", queue_id: str = "") -> None:
        _set = object.__setattr__
        _set(self, "sender", sender)
        _set(self, "recipients", recipients)
        _set(self, "client_ip", client_ip)
        _set(self, "helo", helo)
        _set(self, "auth_user", auth_user)
        _set(self, "client_name", client_name)
        _set(self, "queue_id", queue_id)


def _check_text(label: str, value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise EnvelopeError(f"{label} contains a line break or NUL: {value!r}")
    return value


def sender_from_message(message: Message) -> str | None:
    """MAIL FROM as recorded in the message: Return-Path, else the mbox From_ line."""
    rp = message.get_all("Return-Path")
    if rp:
        m = re.search(_ADDR_RE, rp[0].value)
        return m.group(1).strip() if m else strip_brackets(rp[0].value)
    if message.from_line:
        parts = message.from_line.decode("utf-8", "replace").split()
        if len(parts) >= 2:
            return "" if parts[1] == "MAILER-DAEMON" else parts[1]
    return None


def recipient_from_message(message: Message) -> str | None:
    """The recipient as recorded by the delivering MTA: Delivered-To, else X-Original-To."""
    for name in ("Delivered-To", "X-Original-To"):
        found = message.get_all(name)
        if found:
            return strip_brackets(found[0].value)
    return None


def envelope_for_pipe(args: EnvelopeArgs, environ: Mapping[str, str],
                      message: Message | None) -> Envelope:
    """Build the envelope of a piped message by the precedence above.

    :raises EnvelopeError: when an argument is malformed.
    """
    sources: dict[str, str] = {}

    def pick(field_name: str, arg: str | None, env_key: str,
             from_msg: str | None = None) -> str:
        if arg is not None and arg != "":
            sources[field_name] = "argument"
            return _check_text(field_name, arg)
        if environ.get(env_key):
            sources[field_name] = f"environment {env_key}"
            return _check_text(field_name, environ[env_key])
        if from_msg is not None:
            sources[field_name] = "message"
            return from_msg
        return ""

    msg_sender = sender_from_message(message) if message is not None else None
    if args.sender is not None:
        sender = _check_text("sender", strip_brackets(args.sender))
        sources["mail_from"] = "argument"
    else:
        sender = strip_brackets(pick("mail_from", None, "SENDER", msg_sender))
    rcpts = _recipients(args, environ, message, sources)
    client_ip = pick("client_ip", args.client_ip, "CLIENT_ADDRESS")
    if client_ip:
        try:
            ipaddress.ip_address(client_ip.strip("[]"))
        except ValueError:
            raise EnvelopeError(f"client IP is not an IP address: {client_ip!r}") from None
    return Envelope(
        client_ip=client_ip.strip("[]"),
        client_name=pick("client_name", args.client_name, "CLIENT_HOSTNAME"),
        helo=pick("helo", args.helo, "CLIENT_HELO"),
        mail_from=sender,
        rcpts=rcpts,
        auth_user=pick("auth_user", args.auth_user, "SASL_USERNAME"),
        queue_id=pick("queue_id", args.queue_id, "QUEUE_ID") or new_queue_id(),
        sources=sources,
    )


def _recipients(args: EnvelopeArgs, environ: Mapping[str, str], message: Message | None,
                sources: dict[str, str]) -> tuple[str, ...]:
    if args.recipients:
        sources["rcpts"] = "argument"
        return tuple(_check_text("recipient", strip_brackets(r)) for r in args.recipients)
    for key in ("RECIPIENT", "ORIGINAL_RECIPIENT"):
        if environ.get(key):
            sources["rcpts"] = f"environment {key}"
            return (_check_text("recipient", environ[key]),)
    found = recipient_from_message(message) if message is not None else None
    if found:
        sources["rcpts"] = "message"
        return (found,)
    return ()


def new_queue_id() -> str:
    """A queue id for mail that came without one (pipe mode): 12 hex characters."""
    return os.urandom(6).hex().upper()  # as uuid4().hex[:12], without importing uuid
