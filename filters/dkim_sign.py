"""``dkim-sign``: sign outgoing mail with every matching key (RSA and Ed25519 side by side).

Owns the signing filter: which mail is signed (authenticated submission or a trusted client
network), which keys sign it (the key table in ``_dkim_keys``: From domain, or the envelope
sender as fallback), which header fields are signed and oversigned, and the DKIM-Signature
header changes (inserted on top). Keys are read and parsed once, when the filter is built.

The signature covers the message as rohrpost will emit it: changes of the filters that ran
before are applied first (``rohrpost.apply``), and the value is written with white space only
where RFC 6376 allows folding, so the core's refolding cannot break it (relaxed/relaxed).
Filters that change signed header fields or the body must run before ``dkim-sign``.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass, field

from rohrpost.apply import apply_changes
from rohrpost.changes import Change, InsertHeader
from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.message import Message
from rohrpost.options import OptionError
from rohrpost.pipeline import in_networks
from rohrpost.result import FilterResult, Symbol

from ._dkim_keys import KeySpec, LoadedKey, keys_for, load_keys

#: RFC 6376 5.4.1 recommended set, plus the MIME fields (dkimpy's ``DKIM.SHOULD``).
SIGN_HEADERS = [
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc", "mime-version",
    "content-type", "content-transfer-encoding", "content-id", "content-description",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
    "in-reply-to", "references", "list-id", "list-help", "list-unsubscribe", "list-subscribe",
    "list-post", "list-owner", "list-archive",
]
#: Listed once more than present (also when absent): adding one breaks the signature.
OVERSIGN_HEADERS = [
    "from", "reply-to", "subject", "date", "to", "cc", "message-id", "mime-version",
    "content-type", "content-transfer-encoding", "in-reply-to", "references",
]
NEVER_SIGN = {"return-path", "received", "comments", "keywords", "bcc", "resent-bcc",
              "dkim-signature", "authentication-results"}


@dataclass(frozen=True)
class DkimSignOptions:
    """Options of ``dkim-sign``.

    :param key: the key table (``[[filter.key]]``).
    :param trusted_networks: client networks whose mail is signed without SMTP AUTH;
        default: ``[pipeline] trusted_networks``.
    :param sign_headers: header fields signed when present.
    :param oversign_headers: header fields signed once more than present.
    :param expire: seconds after which signatures expire (``x=``); 0: no ``x=``.
    :param envelope_fallback: when no key fits the From address, try the MAIL FROM address.
    """

    key: list[KeySpec] = field(default_factory=list)
    trusted_networks: list[str] | None = None
    sign_headers: list[str] = field(default_factory=lambda: list(SIGN_HEADERS))
    oversign_headers: list[str] = field(default_factory=lambda: list(OVERSIGN_HEADERS))
    expire: int = 0
    envelope_fallback: bool = True


def header_list(message: Message, sign: list[str], oversign: list[str]) -> list[str]:
    """Return the h= list: each field as often as present, oversigned ones once more."""
    names: list[str] = []
    wanted = [n.lower() for n in sign] + [n.lower() for n in oversign if n.lower() not in sign]
    over = {n.lower() for n in oversign}
    for name in dict.fromkeys(wanted):
        count = len(message.get_all(name)) + (1 if name in over else 0)
        names += [name] * count
    return names


def sender_address(message: Message) -> str | None:
    """Return the one From address, or None when there is not exactly one."""
    froms = message.get_all("From")
    if len(froms) != 1:
        return None
    addrs = [a for _n, a in email.utils.getaddresses([froms[0].value]) if a]
    return addrs[0] if len(addrs) == 1 else None


def prior_changes(mail: Mail) -> list[Change]:
    """Return the earlier filters' changes in order (what the output will contain)."""
    return [c for _name, result in mail.prior for c in result.changes]


class DkimSign(Filter):
    """Sign authenticated or trusted-network mail with every key the key table allows."""

    name = "dkim-sign"
    description = "DKIM-sign authenticated/trusted mail (key table, RSA + Ed25519)."
    stage = Stage.EOM
    Options = DkimSignOptions

    def __init__(self, options: DkimSignOptions) -> None:
        super().__init__(options)
        if not options.key:
            raise OptionError("key", "dkim-sign needs at least one [[filter.key]]")
        bad = NEVER_SIGN.intersection(h.lower() for h in options.sign_headers)
        if bad or "from" not in [h.lower() for h in options.sign_headers]:
            raise OptionError("sign_headers", "must include from and none of "
                              + ", ".join(sorted(NEVER_SIGN)))
        if options.expire < 0:
            raise OptionError("expire", "must be >= 0")
        self.keys: list[LoadedKey] = load_keys(options.key)

    def wants(self, ctx: Context, mail: Mail) -> bool:
        """Sign only SMTP-authenticated mail or mail from a trusted network."""
        if mail.envelope.authenticated:
            return True
        nets = self.options.trusted_networks
        if nets is None:
            nets = list(ctx.settings.get("trusted_networks", []))
        return bool(mail.envelope.client_ip) and in_networks(mail.envelope.client_ip, nets)

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Pick the keys, sign in a worker thread, return DKIM-Signature insertions."""
        if mail.message is None or not self.wants(ctx, mail):
            return FilterResult()
        message, _env = apply_changes(mail.message, mail.envelope, prior_changes(mail))
        user = mail.envelope.auth_user
        address = sender_address(message)
        if address is None:
            return self._skip("not exactly one From address")
        keys = keys_for(self.keys, address, user)
        if not keys and self.options.envelope_fallback:
            keys = keys_for(self.keys, mail.envelope.mail_from, user)
        if not keys:
            return self._skip(f"no key for {address}" + (f" (user {user})" if user else ""))
        now = int(ctx.now())
        try:
            values = await ctx.run_blocking(self._sign, message, keys, now)
        except ValueError as exc:
            return self._skip(str(exc))
        changes = [InsertHeader(0, "DKIM-Signature", v) for v in reversed(values)]
        signed = [{"domain": k.spec.domain, "selector": k.spec.selector,
                   "algorithm": k.key.algorithm} for k in keys]
        names = ", ".join(f"{k.spec.domain}:{k.spec.selector}" for k in keys)
        return FilterResult(symbols=[Symbol("DKIM_SIGNED", 0.0, names)], changes=changes,
                            facts={"dkim.signed": signed})

    def _sign(self, message: Message, keys: list[LoadedKey], now: int) -> list[str]:
        from . import _dkim_adapter as adapter

        opts: DkimSignOptions = self.options
        parsed = adapter.parse_message(message.without_from_line())
        headers = header_list(message, opts.sign_headers, opts.oversign_headers)
        expire = now + opts.expire if opts.expire else None
        return [adapter.sign_dkim(parsed, domain=k.spec.domain, selector=k.spec.selector,
                                  key=k.key, headers=headers, timestamp=now, expire=expire)
                for k in keys]

    @staticmethod
    def _skip(reason: str) -> FilterResult:
        return FilterResult(symbols=[Symbol("DKIM_SIGN_SKIPPED", 0.0, reason)])


FILTER = DkimSign
