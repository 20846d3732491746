"""``clamav``: scan the whole message with ClamAV's clamd (INSTREAM) and act on a virus.

Owns the filter's options and the mapping of a scan result to a verdict and symbols. The wire
protocol is ``filters._clamd``'s. clamd gets the message exactly as received and unpacks MIME
(base64, quoted-printable, uuencode, nested message/rfc822) and archives itself. A failure
(clamd down, timeout, error reply) raises, so the pipeline's ``on_error`` applies (tempfail
by default); a virus is never missed silently. Only a stream over clamd's StreamMaxLength may be
skipped, and only when ``on_limit = "skip"`` says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.options import OptionError
from rohrpost.result import NOTHING, Action, FilterResult, Symbol, Verdict

from ._clamd import DEFAULT_PORT, ClamdClient, ClamdLimitError
from ._scanlimit import over_size
from ._sockets import SocketAddress

SYMBOL = "CLAM_VIRUS"
SKIPPED_SIZE = "CLAM_SKIPPED_SIZE"
SKIPPED_LIMIT = "CLAM_SKIPPED_LIMIT"
_UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._:/+-]")
_ACTIONS = {"reject": Action.REJECT, "quarantine": Action.QUARANTINE,
            "discard": Action.DISCARD}


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class ClamAVOptions:
    """Options of the ``clamav`` filter."""

    socket: str = field(default="tcp:127.0.0.1:3310", metadata=_h(
        "'tcp:HOST:PORT' or 'unix:/run/clamav/clamd.ctl'"))
    action: Literal["reject", "quarantine", "discard"] = field(
        default="reject", metadata=_h("what a virus means"))
    reject_message: str = field(default="554 5.7.1 Virus found: {virus}", metadata=_h(
        "reply for action=reject; {virus} is the sanitized signature name"))
    score: float = field(default=0.0, metadata=_h("score of the CLAM_VIRUS symbol"))
    max_size: int = field(default=25 * 1024 * 1024, metadata=_h(
        "bytes; larger messages are not sent (symbol CLAM_SKIPPED_SIZE, score 0)"))
    on_limit: Literal["error", "skip"] = field(default="error", metadata=_h(
        "clamd's 'INSTREAM size limit exceeded': error (pipeline on_error) or skip (symbol)"))
    connect_timeout: float = field(default=5.0, metadata=_h("seconds to connect to clamd"))
    read_timeout: float = field(default=120.0, metadata=_h(
        "seconds for a whole scan; the pipeline's timeout = usually cuts first"))
    chunk_size: int = field(default=64 * 1024, metadata=_h("bytes per INSTREAM chunk"))

    def __post_init__(self) -> None:
        if self.max_size <= 0 or self.chunk_size <= 0:
            raise ValueError("max_size and chunk_size must be positive")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if self.action == "reject":
            try:
                Verdict.of(Action.REJECT, self.reject_message.replace("{virus}", "X"))
            except ValueError as exc:
                raise ValueError(f"reject_message: {exc}") from None


def sanitize_virus_name(name: str) -> str:
    """Make a signature name safe for SMTP replies and headers: ASCII, bounded."""
    return _UNSAFE_NAME_RE.sub("_", name)[:100] or "unknown"


class ClamAV(Filter):
    """Scan the message with clamd; a virus gives the configured action."""

    name = "clamav"
    description = "ClamAV's clamd over a unix or TCP socket (INSTREAM): viruses to an action."
    stage = Stage.EOM
    Options = ClamAVOptions

    def __init__(self, options: ClamAVOptions) -> None:
        super().__init__(options)
        try:
            address = SocketAddress.parse(options.socket, DEFAULT_PORT)
        except ValueError as exc:
            raise OptionError("socket", str(exc)) from None
        self.client = ClamdClient(address, connect_timeout=options.connect_timeout,
                                  timeout=options.read_timeout, chunk_size=options.chunk_size)
        self.opts = options

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Stream the message to clamd and map the answer to a verdict."""
        message = mail.message
        if message is None:
            return NOTHING
        if (skipped := over_size(message, self.opts.max_size, SKIPPED_SIZE, "clamav")) is not None:
            return skipped
        try:
            result = await self.client.instream(message.without_from_line())
        except ClamdLimitError as exc:
            if self.opts.on_limit == "error":
                raise
            return FilterResult(symbols=[Symbol(SKIPPED_LIMIT, 0.0, str(exc))],
                                facts={"clamav.skipped": "limit"})
        if result.virus is None:
            return FilterResult(facts={"clamav.clean": True, "clamav.virus": None})
        virus = sanitize_virus_name(result.virus)
        ctx.log.info("clamav: virus %s found", virus)
        action = _ACTIONS[self.opts.action]
        reply = self.opts.reject_message.replace("{virus}", virus) if action is Action.REJECT \
            else ""
        verdict = Verdict.of(action, reply, f"virus {virus}", self.name)
        return FilterResult(verdict=verdict,
                            symbols=[Symbol(SYMBOL, self.opts.score, f"virus {virus}")],
                            facts={"clamav.clean": False, "clamav.virus": virus})


FILTER = ClamAV
