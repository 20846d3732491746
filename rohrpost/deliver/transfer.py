"""LMTP and SMTP delivery: one mail transaction with a reply for every recipient.

Owns the client side of the transaction (greeting, LHLO/EHLO, MAIL, RCPT per recipient, DATA)
and the rule for which reply each recipient ends with. LMTP answers DATA once per accepted
recipient (RFC 2033); SMTP answers once for all of them. Any failure without a server reply
(refused connection, timeout, garbage) is a 4xx outcome, so nothing bounces by accident.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rohrpost.deliver.destination import Destination
from rohrpost.deliver.localform import is_8bit, wire_form
from rohrpost.deliver.report import DeliveryReport, RcptOutcome
from rohrpost.deliver.wire import Connection, ProtocolError, ServerReply, dot_stuff
from rohrpost.result import Reply

_QUIT_WAIT = 5.0

def _bad_address(addr: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch in "<>" for ch in addr)


def _helo_name() -> str:
    name = socket.gethostname()
    return name if name and name.isascii() and " " not in name else "localhost"


@dataclass
class Transaction:
    """Replies collected for ``rcpts`` during one transaction (``None`` = no final reply yet)."""

    lmtp: bool
    sender: str
    rcpts: Sequence[str]
    results: list[Reply | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.rcpts)

    def pending(self) -> list[int]:
        """Indexes of recipients that have no final reply yet."""
        return [i for i, r in enumerate(self.results) if r is None]

    def settle(self, reply: Reply, indexes: Sequence[int] | None = None) -> None:
        """Give ``reply`` to the recipients in ``indexes`` (default: all still pending)."""
        for i in self.pending() if indexes is None else indexes:
            self.results[i] = reply

    def outcomes(self) -> tuple[RcptOutcome, ...]:
        """Return the final outcomes; anything still pending becomes 451 4.4.2."""
        fallback = Reply(451, "4.4.2", "delivery not completed")
        return tuple(
            RcptOutcome(rcpt, reply or fallback)
            for rcpt, reply in zip(self.rcpts, self.results, strict=True)
        )


def _expect(got: ServerReply, ok: int, stage: str) -> Reply | None:
    """Return None when ``got`` is the expected code, else the reply recipients should get.

    Unexpected success codes are protocol errors and become 4xx, never 2xx.
    """
    if got.code == ok:
        return None
    if got.code // 100 in (4, 5):
        return got.reply
    return Reply(451, "4.5.0", f"unexpected reply to {stage}: {got.code}")


def _hello(conn: Connection, tx: Transaction) -> frozenset[str] | None:
    """Read the greeting and say LHLO/EHLO (HELO fallback for SMTP); return the extensions."""
    problem = _expect(conn.read_reply(), 220, "connect")
    if problem:
        tx.settle(problem)
        return None
    verb = "LHLO" if tx.lmtp else "EHLO"
    got = conn.command(f"{verb} {_helo_name()}")
    if not tx.lmtp and got.code // 100 == 5:
        got = conn.command(f"HELO {_helo_name()}")
        got = ServerReply(got.code, got.lines[:1])
    problem = _expect(got, 250, verb)
    if problem:
        tx.settle(problem)
        return None
    return got.keywords


def _mail(conn: Connection, tx: Transaction, exts: frozenset[str], raw: bytes) -> bool | None:
    """Send MAIL FROM with BODY/SMTPUTF8 as needed.

    Returns whether UTF-8 is in use, or None when the transaction cannot go on (every recipient
    then has its reply).
    """
    addresses = [tx.sender, *tx.rcpts]
    utf8 = "SMTPUTF8" in exts and not all(a.isascii() for a in addresses)
    if _bad_address(tx.sender):
        tx.settle(Reply(501, "5.1.7", "invalid characters in sender address"))
        return None
    if not tx.sender.isascii() and not utf8:
        tx.settle(Reply(550, "5.6.7", "non-ASCII sender and server lacks SMTPUTF8"))
        return None
    params = []
    if is_8bit(raw) and "8BITMIME" in exts:
        params.append("BODY=8BITMIME")
    if utf8:
        params.append("SMTPUTF8")
    line = " ".join([f"MAIL FROM:<{tx.sender}>", *params])
    problem = _expect(conn.command(line, utf8=utf8), 250, "MAIL FROM")
    if problem:
        tx.settle(problem)
        return None
    return utf8


def _rcpts(conn: Connection, tx: Transaction, utf8: bool) -> list[int]:
    """Send RCPT TO for each recipient; return the indexes the server accepted."""
    accepted = []
    for i, rcpt in enumerate(tx.rcpts):
        if _bad_address(rcpt) or not rcpt:
            tx.settle(Reply(501, "5.1.3", "invalid recipient address"), [i])
            continue
        if not rcpt.isascii() and not utf8:
            tx.settle(Reply(553, "5.6.7", "non-ASCII recipient and server lacks SMTPUTF8"), [i])
            continue
        got = conn.command(f"RCPT TO:<{rcpt}>", utf8=utf8)
        if got.code in (250, 251):
            accepted.append(i)
        else:
            tx.settle(_expect(got, 250, "RCPT TO") or got.reply, [i])
    return accepted


def _data(conn: Connection, tx: Transaction, accepted: list[int], raw: bytes) -> None:
    """Send DATA and the message; read one reply per accepted recipient (LMTP) or one (SMTP)."""
    problem = _expect(conn.command("DATA"), 354, "DATA")
    if problem:
        tx.settle(problem, accepted)
        return
    conn.send(dot_stuff(wire_form(raw)))
    for group in ([[i] for i in accepted] if tx.lmtp else [accepted]):
        got = conn.read_reply()
        tx.settle(_expect(got, 250, "end of data") or got.reply, group)


def run_transaction(conn: Connection, tx: Transaction, raw: bytes) -> None:
    """Run the whole transaction on an open connection.

    Raises OSError on transport failures, leaving recipients without a final reply as ``None``.
    """
    exts = _hello(conn, tx)
    if exts is None:
        return
    utf8 = _mail(conn, tx, exts, raw)
    if utf8 is None:
        return
    accepted = _rcpts(conn, tx, utf8)
    if accepted:
        _data(conn, tx, accepted, raw)
    else:
        conn.command("RSET")


def _connect(dest: Destination, deadline: float) -> Connection:
    if dest.is_unix_socket:
        return Connection.open_unix(dest.path, deadline)
    return Connection.open_tcp(dest.host, dest.port, deadline)


def deliver_network(
    dest: Destination, raw: bytes, sender: str, rcpts: Sequence[str], timeout: float
) -> DeliveryReport:
    """Deliver over LMTP or SMTP to ``dest``; never raises for delivery failures.

    :param timeout: overall seconds for connect, dialogue and data; on expiry every recipient
        without a reply gets 451 4.4.2.
    """
    if not rcpts:
        reply = Reply(451, "4.3.5", f"no recipients for {dest.kind} delivery (configuration)")
        return DeliveryReport((RcptOutcome("", reply),), f"{dest}: no recipients given")
    tx = Transaction(lmtp=dest.kind == "lmtp", sender=sender, rcpts=rcpts)
    deadline = time.monotonic() + timeout
    try:
        conn = _connect(dest, deadline)
    except OSError as exc:
        tx.settle(Reply(451, "4.4.1", f"cannot connect to {dest}: {_reason(exc)}"))
        return DeliveryReport(tx.outcomes(), f"{dest}: connect failed: {_reason(exc)}")
    detail = f"{dest}: transaction complete"
    try:
        run_transaction(conn, tx, raw)
    except OSError as exc:
        conn.close()  # the dialogue is out of step: no QUIT, which could wait for nothing
        tx.settle(Reply(451, "4.4.2", f"connection to {dest} failed: {_reason(exc)}"))
        return DeliveryReport(tx.outcomes(), f"{dest}: transaction broken: {_reason(exc)}")
    conn.deadline = min(conn.deadline, time.monotonic() + _QUIT_WAIT)
    conn.quit()
    return DeliveryReport(tx.outcomes(), detail)


def _reason(exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ProtocolError):
        return str(exc)
    return exc.strerror or type(exc).__name__
