"""The configurations the bench measures: one small declarative entry each.

A configuration names its milters in ``smtpd_milters`` order (keys of :data:`MILTERS`), the
shared backends whose CPU counts as part of the filter (clamd, spamd, Redis), the workload
(plain or DKIM-signed messages), the configuration it is compared with, and strings that must
appear in a delivered message (proof that the filter did its job). rohrpost configurations
list the pipeline filters instead; a missing filter makes the row "not available".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bench import messages, tools

Workload = Literal["plain", "signed"]
FilterSpec = tuple[str, Mapping[str, object]]


@dataclass(frozen=True)
class BenchConfig:
    """One row of the table."""

    key: str
    job: str
    tool: str
    milters: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    workload: Workload = "plain"
    reference: str | None = None
    expect: tuple[str, ...] = ()
    rohrpost: tuple[FilterSpec, ...] = ()
    scale: float = 1.0  # fraction of the message count (spam scanning is ~50x slower)
    notes: str = ""

    @property
    def is_rohrpost(self) -> bool:
        """True for rows served by one ``rohrpost milter``."""
        return bool(self.rohrpost)

    def filter_names(self) -> tuple[str, ...]:
        """Rohrpost filters this configuration needs."""
        return tuple(name for name, _ in self.rohrpost)


def dkim_sign_filter(key: Path) -> FilterSpec:
    """Rohrpost ``dkim-sign`` with the bench key, signing mail from loopback."""
    return ("dkim-sign", {
        "trusted_networks": ["127.0.0.0/8"],
        "key": [{"domain": messages.SENDER_DOMAIN, "selector": "bench", "key": str(key)}]})


SPF: FilterSpec = ("spf", {"skip_trusted_networks": False, "skip_authenticated": False})
DKIM_VERIFY: FilterSpec = ("dkim-verify", {})
ARC_VERIFY: FilterSpec = ("arc-verify", {})
DMARC: FilterSpec = ("dmarc", {"skip_trusted_networks": False})  # the bench client is 127.0.0.1
SPAM_FILTER: FilterSpec = ("spamassassin", {"port": 0})  # port filled in by the runner
CLAMAV: FilterSpec = ("clamav", {"socket": ""})           # socket filled in by the runner
KEY_PLACEHOLDER = Path("@KEY@")

_AUTH = ("dkim=pass", "dmarc=pass", "spf=pass")


def all_configs() -> list[BenchConfig]:
    """Every configuration, in the order of the table."""
    c = BenchConfig
    return [
        c("ceiling", "no filter (ceiling)", "Postfix alone"),
        c("sign-opendkim", "DKIM sign", "OpenDKIM", ("opendkim-sign",),
          expect=("DKIM-Signature:",)),
        c("sign-dkimpy", "DKIM sign", "dkimpy-milter", ("dkimpy-sign",),
          reference="sign-opendkim", expect=("DKIM-Signature:",)),
        c("sign-rohrpost", "DKIM sign", "rohrpost", ("rohrpost",), reference="sign-opendkim",
          expect=("DKIM-Signature:",), rohrpost=(dkim_sign_filter(KEY_PLACEHOLDER),)),
        c("verify-opendkim", "DKIM verify", "OpenDKIM", ("opendkim-verify",),
          workload="signed", expect=("dkim=pass",)),
        c("verify-dkimpy", "DKIM verify", "dkimpy-milter", ("dkimpy-verify",),
          workload="signed", reference="verify-opendkim", expect=("dkim=pass",)),
        c("verify-rohrpost", "DKIM verify", "rohrpost", ("rohrpost",), workload="signed",
          reference="verify-opendkim", expect=("dkim=pass",), rohrpost=(DKIM_VERIFY,)),
        c("dmarc-opendmarc", "DMARC", "OpenDMARC", ("opendmarc",), expect=("dmarc=pass",),
          notes="SPF checked by OpenDMARC itself (SPFSelfValidate)"),
        c("dmarc-rohrpost", "DMARC", "rohrpost spf+dmarc", ("rohrpost",),
          reference="dmarc-opendmarc", expect=("dmarc=pass",), rohrpost=(SPF, DMARC)),
        c("spf-pyspf", "SPF", "pyspf-milter", ("pyspf",), expect=("spf=pass",)),
        c("spf-rohrpost", "SPF", "rohrpost", ("rohrpost",), reference="spf-pyspf",
          expect=("spf=pass",), rohrpost=(SPF,)),
        c("virus-clamav-milter", "virus (clamd)", "clamav-milter", ("clamav-milter",),
          backends=("clamd",), expect=("X-Virus-Scanned",)),
        c("virus-rohrpost", "virus (clamd)", "rohrpost", ("rohrpost",), backends=("clamd",),
          reference="virus-clamav-milter", rohrpost=(CLAMAV,)),
        c("spam-spamass-milter", "spam (spamd)", "spamass-milter", ("spamass-milter",),
          backends=("spamd",), expect=("X-Spam-",), scale=0.04),
        c("spam-rohrpost", "spam (spamd)", "rohrpost", ("rohrpost",), backends=("spamd",),
          reference="spam-spamass-milter", expect=("X-Spam-",), rohrpost=(SPAM_FILTER,),
          scale=0.04),
        c("chain-c", "chain", "OpenDKIM+OpenDMARC+pyspf+clamav-milter",
          ("opendkim-verify", "pyspf", "opendmarc", "clamav-milter"), backends=("clamd",),
          workload="signed", expect=(*_AUTH, "X-Virus-Scanned")),
        c("chain-rohrpost", "chain", "rohrpost spf+dkim+arc+dmarc+clamav", ("rohrpost",),
          backends=("clamd",), workload="signed", reference="chain-c", expect=_AUTH,
          rohrpost=(SPF, DKIM_VERIFY, ARC_VERIFY, DMARC, CLAMAV)),
        c("chain-rspamd", "chain", "Rspamd milter proxy", ("rspamd",),
          backends=("clamd", "redis"), workload="signed", reference="chain-c",
          expect=("dkim=pass",), notes="SPF, DKIM, DMARC, ARC, antivirus modules; RBLs off"),
        c("chainspam-c", "chain + spam", "C chain + spamass-milter",
          ("opendkim-verify", "pyspf", "opendmarc", "clamav-milter", "spamass-milter"),
          backends=("clamd", "spamd"), workload="signed", expect=(*_AUTH, "X-Spam-"),
          scale=0.04),
        c("chainspam-rohrpost", "chain + spam", "rohrpost chain + spamassassin", ("rohrpost",),
          backends=("clamd", "spamd"), workload="signed", reference="chainspam-c",
          expect=(*_AUTH, "X-Spam-"),
          rohrpost=(SPF, DKIM_VERIFY, ARC_VERIFY, DMARC, CLAMAV, SPAM_FILTER), scale=0.04),
    ]


def resolve_filters(cfg: BenchConfig, key: Path, clamd_port: int | None,
                    spamd_port: int | None) -> list[tuple[str, dict[str, object]]]:
    """The rohrpost filter list of ``cfg`` with the bench's key and backend ports filled in."""
    out: list[tuple[str, dict[str, object]]] = []
    for name, opts in cfg.rohrpost:
        options = dict(opts)
        if name == "dkim-sign":
            options = dict(dkim_sign_filter(key)[1])
        elif name == "clamav":
            options["socket"] = f"tcp:127.0.0.1:{clamd_port}"
        elif name == "spamassassin":
            options["port"] = spamd_port or 783
        out.append((name, options))
    return out


def render_rohrpost(cfg: BenchConfig, var_dir: Path, key: Path, *, clamd_port: int | None,
                    spamd_port: int | None, dns_port: int = 53, workers: int = 2) -> str:
    """pipeline.toml for a rohrpost configuration."""
    return tools.rohrpost_pipeline(var_dir, resolve_filters(cfg, key, clamd_port, spamd_port),
                                   dns_port=dns_port, workers=workers)


def select(configs: list[BenchConfig], only: str | None) -> list[BenchConfig]:
    """Configurations whose key starts with one of the comma-separated prefixes in ``only``.

    The ceiling and each selected row's reference are always kept (ratios need them).
    """
    if not only:
        return configs
    prefixes = [p.strip() for p in only.split(",") if p.strip()]
    wanted = {c.key for c in configs if any(c.key.startswith(p) for p in prefixes)}
    wanted |= {c.reference for c in configs if c.key in wanted and c.reference}
    wanted.add("ceiling")
    return [c for c in configs if c.key in wanted]


