"""``arc-seal``: add an ARC set when rohrpost forwards mail (RFC 8617 5.1).

Owns the sealing filter. Which mail is sealed is decided by the pipeline's conditions
(``[filter.when]``, e.g. ``recipient_domains`` of the aliases and lists that forward); the
seal records this pipeline's own Authentication-Results, which the core writes only after the
last filter, so the value is built here from the earlier filters' results with
``rohrpost.policy.authentication_results`` and put on a temporary copy of the message for
dkimpy. The chain status ``cv=`` comes from the ``arc=`` result of ``arc-verify``, which must
run before; without it a message that already has ARC sets is not sealed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rohrpost.apply import apply_changes
from rohrpost.changes import Change, InsertHeader
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.message import Message
from rohrpost.options import OptionError
from rohrpost.policy import authentication_results, authserv_id_of
from rohrpost.result import AuthResult, FilterResult, Symbol

from ._dkim_keys import KeySpec, LoadedKey, load_keys


@dataclass(frozen=True)
class ArcSealOptions:
    """Options of ``arc-seal``.

    :param domain: the sealing domain (``d=`` of ARC-Seal and ARC-Message-Signature).
    :param selector: the selector; the public key is at ``S._domainkey.D``.
    :param key: path of the RSA private key (PEM); RFC 8617 knows only rsa-sha256.
    :param sign_headers: header fields the ARC-Message-Signature covers; empty: dkimpy's
        RFC 6376 recommended set with From oversigned.
    """

    domain: str
    selector: str
    key: str
    sign_headers: list[str] = field(default_factory=list)


class ArcSeal(Filter):
    """Seal forwarded mail with ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results."""

    name = "arc-seal"
    description = "ARC-seal forwarded mail with this pipeline's authentication results."
    stage = Stage.EOM
    Options = ArcSealOptions

    def __init__(self, options: ArcSealOptions) -> None:
        super().__init__(options)
        self.key: LoadedKey = load_keys([KeySpec(options.domain, options.selector, options.key)])[0]
        if self.key.key.kind != "rsa":
            raise OptionError("key", "ARC sealing needs an RSA key (RFC 8617: rsa-sha256)")

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Build our A-R, seal a temporary copy, return the three headers to insert on top."""
        if mail.message is None:
            return FilterResult()
        changes = [c for _n, r in mail.prior for c in r.changes]
        message, _env = apply_changes(mail.message, mail.envelope, changes)
        auth = [a for _n, r in mail.prior for a in r.auth]
        arc = [a.result for a in auth if a.method == "arc"]
        if not arc and message.get_all("ARC-Seal"):
            return _skip("no arc= result from arc-verify for a message with ARC sets")
        if arc and arc[-1] not in ("pass", "fail", "none"):
            return _skip(f"chain status arc={arc[-1]} cannot be sealed")
        if not arc:
            auth.append(AuthResult("arc", "none"))
        raw = with_our_results(message, ctx.authserv_id, authentication_results(
            ctx.authserv_id, auth))
        opts: ArcSealOptions = self.options
        try:
            headers = await ctx.run_blocking(self._seal, raw, ctx.authserv_id, int(ctx.now()))
        except ValueError as exc:
            return _skip(str(exc))
        if not headers:
            return _skip("dkimpy ended the chain (no sealable status)")
        out: list[Change] = [InsertHeader(i, n, v) for i, (n, v) in enumerate(headers)]
        return FilterResult(symbols=[Symbol("ARC_SEALED", 0.0, f"{opts.domain}:{opts.selector}")],
                            changes=out)

    def _seal(self, raw: bytes, srv_id: str, now: int) -> list[tuple[str, str]]:
        from . import _dkim_adapter as adapter

        opts: ArcSealOptions = self.options
        return adapter.arc_seal(raw, domain=opts.domain, selector=opts.selector,
                                key=self.key.key, srv_id=srv_id, timestamp=now,
                                headers=opts.sign_headers or None)


def with_our_results(message: Message, authserv_id: str, value: str) -> bytes:
    """Return the message bytes with our A-R on top and forged copies claiming our id removed."""
    eol = b"\r\n" if message.crlf else b"\n"
    ours = authserv_id.lower()
    kept = [h.raw for h in message.headers if not (
        h.name.lower() == "authentication-results"
        and authserv_id_of(h.value).lower() == ours)]
    top = b"Authentication-Results: " + value.replace("\n", "\r\n").encode() + b"\r\n"
    top = top.replace(b"\r\n", eol)
    return top + b"".join(kept) + eol + message.body


def _skip(reason: str) -> FilterResult:
    return FilterResult(symbols=[Symbol("ARC_SEAL_SKIPPED", 0.0, reason)])


FILTER = ArcSeal
