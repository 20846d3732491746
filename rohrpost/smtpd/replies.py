"""The replies of ``rohrpost serve``, and how a delivery report becomes the answer to DATA.

Owns the fixed replies and ``smtp_data_reply`` / ``lmtp_data_replies``. SMTP answers DATA
once for the whole message, so a delivery report with several recipients must be folded into
one reply:

* every recipient 2xx: the next hop's own 2xx (its "queued as" text helps tracing);
* any recipient 4xx: ``451 4.3.0`` for the whole message. The sending MTA retries every
  recipient, so those already delivered get a duplicate; losing the deferred ones is worse;
* no 2xx, only 5xx: the first 5xx, so the sending MTA bounces;
* some 2xx and some 5xx, no 4xx: ``554 5.5.0`` naming how many failed. One reply cannot say
  "delivered to some, failed for others"; a 250 would lose the failed recipients without a
  bounce, so the sending MTA bounces the message (the notice also lists the delivered ones).

LMTP answers once per accepted recipient (RFC 2033), so each recipient gets its own outcome.
Nothing here performs I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rohrpost.result import Reply

if TYPE_CHECKING:
    from rohrpost.deliver import DeliveryReport

log = logging.getLogger("rohrpost.smtpd")

INTERNAL_ERROR = Reply(451, "4.3.0", "Temporary local problem, please try again later")
DEFERRED = Reply(451, "4.3.0", "Temporarily unable to deliver, please try again later")
SHUTTING_DOWN = "421 4.3.2 Service shutting down, closing transmission channel"
TOO_MANY_SESSIONS = "421 4.3.2 Too many concurrent sessions, please try again later"
TOO_MANY_RCPTS = "452 4.5.3 Error: too many recipients"
MAIL_OK = "250 2.1.0 Ok"
RCPT_OK = "250 2.1.5 Ok"
RSET_OK = "250 2.0.0 Ok"
XFORWARD_OK = "250 2.0.0 Ok"
XFORWARD_DENIED = "550 5.7.0 Error: insufficient authorization"
XFORWARD_IN_TRANSACTION = "503 5.5.1 Error: MAIL transaction in progress"
DISCARDED = Reply(250, "2.0.0", "Ok: discarded")
REMOVED_BY_FILTER = Reply(250, "2.0.0", "Ok: recipient removed by filter")


def _klass(reply: Reply) -> int:
    return reply.code // 100


def smtp_data_reply(report: DeliveryReport) -> Reply:
    """Fold ``report`` into the one reply to DATA (rules in the module docstring)."""
    replies = [o.reply for o in report.outcomes]
    if report.ok:
        return replies[0]
    if not replies or any(_klass(r) == 4 for r in replies):
        return DEFERRED
    failed = [r for r in replies if _klass(r) == 5]
    if len(failed) == len(replies):
        return failed[0]
    return Reply(554, "5.5.0", f"Delivery failed for {len(failed)} of {len(replies)} "
                               f"recipients: {failed[0]}")


def lmtp_data_replies(rcpts: Sequence[str], delivered_to: Sequence[str],
                      report: DeliveryReport) -> list[Reply]:
    """One reply per accepted recipient ``rcpts`` (in order) from ``report``.

    :param rcpts: the recipients accepted at RCPT, in order: one reply each.
    :param delivered_to: the recipients actually delivered to, after filter changes.

    A recipient a filter removed gets 250 (the filter decided, like milter's delrcpt). A
    recipient a filter added has no reply of its own: if its delivery is deferred, every
    recipient that would have got 2xx gets ``451 4.3.0`` instead (a duplicate is better than a
    loss); a permanent failure for it can only be logged.
    """
    by_rcpt: dict[str, Reply] = {}
    for outcome in report.outcomes:
        by_rcpt.setdefault(outcome.rcpt.lower(), outcome.reply)
    shared = report.outcomes[0].reply if len(report.outcomes) == 1 else None
    if shared is not None and report.outcomes[0].rcpt == "":
        by_rcpt = {r.lower(): shared for r in delivered_to}
    wanted = {r.lower() for r in rcpts}
    deferred_extra = False
    for rcpt, reply in by_rcpt.items():
        if rcpt in wanted:
            continue
        if _klass(reply) == 4:
            deferred_extra = True
        elif _klass(reply) == 5:
            log.warning("recipient <%s> added by a filter failed permanently: %s", rcpt, reply)
    kept = {r.lower() for r in delivered_to}
    out: list[Reply] = []
    for rcpt in rcpts:
        key = rcpt.lower()
        if key not in kept:
            out.append(REMOVED_BY_FILTER)
            continue
        reply = by_rcpt.get(key, DEFERRED)
        out.append(DEFERRED if deferred_extra and _klass(reply) == 2 else reply)
    return out


def join(replies: Sequence[Reply | str]) -> str:
    """Render replies as aiosmtpd pushes them: one line each, CRLF between (LMTP after DATA)."""
    return "\r\n".join(str(r) for r in replies)
