"""The ``authres`` filter: what to do with Authentication-Results from upstream.

Owns the RFC 8601 parser for incoming headers and the two things the core does not do. The
core (``rohrpost.policy``) already writes one merged Authentication-Results header with our
authserv-id and deletes incoming ones that claim our authserv-id. This filter adds:

* ``remove_foreign = true``: delete every other incoming Authentication-Results header too,
  except those of the authserv-ids in ``trusted_ids`` (RFC 8601 5: a border MTA should remove
  results it cannot vouch for, so mail clients and Sieve rules never trust forged ones);
* ``auth=pass smtp.auth=USER`` (RFC 8601 2.7.4) for mail submitted with SMTP AUTH (milter
  ``{auth_authen}``, pipe ``--auth-user``), returned as an ``AuthResult`` like every other
  method so the core merges it into its one header (``smtp_auth = false`` leaves it out);
* the fact ``authres.upstream``: the results of the trusted authserv-ids, parsed, for later
  filters when rohrpost runs behind another MTA that already checked SPF/DKIM/DMARC. Each entry
  is ``{"authserv_id", "method", "result", "reason", "props": {ptype.property: value}}``.

It only reads the message and never touches the header the core writes. Its deletions index
the message as received; the core applies them before it counts forged copies of our own
header (``policy.decide`` counts those on the message as the filters' changes leave it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from rohrpost.changes import Change, ChangeHeader
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.policy import authserv_id_of, strip_comments
from rohrpost.result import AuthResult, FilterResult, Symbol

HEADER = "Authentication-Results"
_MAX_RESULTS = 50


@dataclass(frozen=True)
class AuthresOptions:
    """Options of the ``authres`` filter."""

    remove_foreign: bool = field(default=False, metadata={
        "help": "delete incoming Authentication-Results of every authserv-id not trusted"})
    trusted_ids: list[str] = field(default_factory=list, metadata={
        "help": "authserv-ids whose results are kept and published (e.g. the border MTA)"})
    smtp_auth: bool = field(default=True, metadata={
        "help": "add auth=pass smtp.auth=USER for SMTP AUTH submissions (RFC 8601 2.7.4); "
                "the SASL name then travels with the mail"})


_PAIR_RE = re.compile(r'([A-Za-z0-9._/-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]*)')


def parse_authres(value: str) -> tuple[str, list[dict[str, object]]]:
    """Parse an Authentication-Results value into its authserv-id and method results."""
    text = strip_comments(value)
    parts = re.split(r';(?=(?:[^"]*"[^"]*")*[^"]*$)', text)
    authserv = authserv_id_of(value).lower()
    results: list[dict[str, object]] = []
    for part in parts[1:_MAX_RESULTS + 1]:
        pairs = [(k.lower(), v.strip('"')) for k, v in _PAIR_RE.findall(part)]
        if not pairs or pairs[0][0] == "none":
            continue
        method, result = pairs[0]
        props = {k: v for k, v in pairs[1:] if "." in k}
        reason = next((v for k, v in pairs[1:] if k == "reason"), "")
        results.append({"authserv_id": authserv, "method": method.split("/")[0],
                        "result": result.lower(), "reason": reason, "props": props})
    return authserv, results


class AuthresFilter(Filter):
    """SMTP AUTH result; optional removal of untrusted foreign A-R; trusted ones as facts."""

    name: ClassVar[str] = "authres"
    description: ClassVar[str] = ("SMTP AUTH result (auth=pass); foreign Authentication-Results: "
                                  "remove untrusted, publish trusted")
    stage: ClassVar[Stage] = Stage.EOM
    Options: ClassVar[type[AuthresOptions]] = AuthresOptions
    loop_free: ClassVar[bool] = True  # check() never awaits

    def __init__(self, options: AuthresOptions) -> None:
        super().__init__(options)
        self.trusted = {t.lower() for t in options.trusted_ids}
        self.remove_foreign = options.remove_foreign
        self.smtp_auth = options.smtp_auth

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Sort incoming headers into ours (core removes them), trusted and foreign."""
        if mail.message is None:
            return FilterResult()
        ours = ctx.authserv_id.lower()
        upstream: list[dict[str, object]] = []
        delete: list[int] = []
        for position, header in enumerate(mail.message.get_all(HEADER), start=1):
            authserv = authserv_id_of(header.value).lower()
            if authserv == ours:
                continue  # the core removes these
            if authserv in self.trusted:
                upstream.extend(parse_authres(header.value)[1])
            elif self.remove_foreign:
                delete.append(position)
        changes: list[Change] = [ChangeHeader(HEADER, i, None) for i in reversed(delete)]
        symbols = ([Symbol("AUTHRES_FOREIGN_REMOVED", 0.0, f"{len(delete)} removed")]
                   if delete else [])
        user = mail.envelope.auth_user
        auth = ([AuthResult("auth", "pass", props=(("smtp.auth", user),))]
                if self.smtp_auth and user else [])
        return FilterResult(changes=changes, symbols=symbols, auth=auth,
                            facts={"authres.upstream": upstream})


FILTER = AuthresFilter
