"""Delivery agents: the end of every rohrpost pipeline (``rohrpost deliver DEST``).

Owns the public delivery API: ``parse_destination`` turns ``maildir:``, ``mbox:``, ``lmtp:``,
``smtp:`` and ``pipe:`` specs into a ``Destination``, and ``deliver`` hands a message to it and
returns a ``DeliveryReport`` with one reply per recipient. ``deliver`` never raises for delivery
failures: every failure is a 4xx or 5xx outcome, and unexpected errors are 4xx so that nothing
bounces by accident. Each agent lives in its own module; this one only dispatches.
Uses the standard library only.
"""

from __future__ import annotations

import logging

from rohrpost.deliver.destination import Destination, DestinationError, parse_destination
from rohrpost.deliver.maildir import deliver_maildir
from rohrpost.deliver.mbox import deliver_mbox
from rohrpost.deliver.pipe import run_pipe
from rohrpost.deliver.report import (
    DeliveryReport,
    RcptOutcome,
    internal_error,
    same_for_all,
)
from rohrpost.deliver.transfer import deliver_network
from rohrpost.envelope import Envelope
from rohrpost.result import Reply

__all__ = [
    "DeliveryReport",
    "Destination",
    "DestinationError",
    "RcptOutcome",
    "deliver",
    "deliver_maildir",
    "deliver_mbox",
    "parse_destination",
]

_log = logging.getLogger(__name__)


def _sender(envelope: Envelope) -> str | None:
    """Return the sender for ``Return-Path``; None when unknown (empty, no source)."""
    if envelope.mail_from or "mail_from" in envelope.sources:
        return envelope.mail_from
    return None


def _deliver_local(dest: Destination, raw: bytes, envelope: Envelope, timeout: float,
                   add_headers: bool) -> Reply:
    """Deliver one copy to a maildir, mbox or command."""
    if dest.kind == "maildir":
        return deliver_maildir(dest.path, raw, dest.folder, sender=_sender(envelope),
                               rcpts=envelope.rcpts, add_headers=add_headers)
    if dest.kind == "mbox":
        return deliver_mbox(dest.path, raw, sender=_sender(envelope), rcpts=envelope.rcpts,
                            add_headers=add_headers, timeout=timeout)
    if dest.kind == "pipe":
        return run_pipe(dest.argv, raw, envelope, timeout=timeout)
    raise ValueError(f"not a local destination kind: {dest.kind!r}")


def deliver(
    dest: Destination,
    raw: bytes,
    envelope: Envelope,
    *,
    timeout: float = 60.0,
    add_headers: bool = True,
) -> DeliveryReport:
    """Deliver ``raw`` to ``dest`` for the envelope's recipients; never raises for failures.

    maildir, mbox and pipe deliver one copy and give every recipient (or the single recipient
    ``""`` when there is none) the same reply; a maildir/mbox copy gets ``Return-Path`` and one
    ``Delivered-To`` per recipient on top unless ``add_headers`` is false. lmtp and smtp give
    each recipient the server's own reply.

    :param timeout: overall seconds for the delivery (lock waits, network, the command).
    """
    try:
        if dest.kind in ("lmtp", "smtp"):
            report = deliver_network(dest, raw, envelope.mail_from, envelope.rcpts, timeout)
        else:
            reply = _deliver_local(dest, raw, envelope, timeout, add_headers)
            report = same_for_all(envelope.rcpts, reply, f"{dest}: {reply}")
    except Exception:  # noqa: BLE001 - any bug must become a tempfail, never a bounce
        _log.exception("delivery to %s failed unexpectedly", dest)
        reply = internal_error(f"delivering to {dest.kind}")
        return same_for_all(envelope.rcpts, reply, f"{dest}: internal error (see log)")
    _log.debug("delivery to %s: %s", dest, report.summary)
    return report
