"""Configuration files of the reference tools and of rohrpost, rendered as text.

Pure functions of their arguments (paths and ports), unit-tested for each tool. Every tool
listens on 127.0.0.1 only, runs in the foreground, logs into the bench's directory, and is
told not to skip loopback clients (smtp-source connects from 127.0.0.1, which most tools
treat as "internal" by default and would not check at all).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

AUTHSERV_ID = "mx.rohrpost.test"
#: an address no client uses: "internal hosts" / "skip" lists must not contain 127.0.0.1
NOBODY_NET = "192.0.2.1"


@dataclass(frozen=True)
class Listen:
    """Where a milter listens: a Unix socket (``path``, the default) or 127.0.0.1:``port``.

    Unix sockets are what Debian's packages configure for OpenDKIM, OpenDMARC, clamav-milter
    and spamass-milter, and they matter here: over loopback TCP every milter conversation
    stalls on Nagle's algorithm against delayed ACKs (Postfix writes several no-reply
    commands in a row), about 85 ms per message whatever the milter, which made every
    single-milter row latency-bound at the same ~190 msg/s (docs/performance.md, finding 19).
    """

    path: Path | None = None
    port: int = 0

    @property
    def milter(self) -> str:
        """The libmilter spelling (``smfi_setconn``), used by every milter here but Rspamd."""
        return f"unix:{self.path}" if self.path else f"inet:{self.port}@127.0.0.1"

    @property
    def postfix(self) -> str:
        """Postfix's ``smtpd_milters`` spelling."""
        return f"unix:{self.path}" if self.path else f"inet:127.0.0.1:{self.port}"

    @property
    def rspamd(self) -> str:
        """Rspamd's ``bind_socket`` spelling (the socket writable by Postfix's smtpd)."""
        return f"{self.path} mode=0666" if self.path else f"127.0.0.1:{self.port}"

    def accepting(self) -> bool:
        """True when something accepts connections there."""
        if self.path is None:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), 1.0):
                return True
            return False
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            sock.connect(str(self.path))
            return True
        return False


def kv_conf(items: Mapping[str, str | int | bool], sep: str = " ") -> str:
    """``Key value`` lines (OpenDKIM/OpenDMARC/clamd style); booleans as ``true``/``false``."""
    lines = []
    for key, value in items.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        lines.append(f"{key}{sep}{text}")
    return "\n".join(lines) + "\n"


def _dkim_mode_items(mode: str, domain: str, selector: str,
                     key: Path) -> dict[str, str | int | bool]:
    """The keys OpenDKIM and dkimpy-milter share: sign loopback mail, or verify everyone's."""
    if "s" in mode:
        return {"Domain": domain, "Selector": selector, "KeyFile": str(key),
                "InternalHosts": "127.0.0.0/8"}
    return {"InternalHosts": NOBODY_NET}


def opendkim_conf(d: Path, listen: Listen, mode: str, *, domain: str, selector: str,
                  key: Path) -> str:
    """opendkim.conf(5) for signing (``mode="s"``) or verifying (``"v"``)."""
    return kv_conf({
        "Socket": listen.milter, "Background": False, "Syslog": False,
        "PidFile": str(d / "opendkim.pid"), "Mode": mode, "AuthservID": AUTHSERV_ID,
        "Canonicalization": "relaxed/relaxed", "SignatureAlgorithm": "rsa-sha256",
        "RequireSafeKeys": False, "Nameservers": "127.0.0.1",
        **_dkim_mode_items(mode, domain, selector, key),
    })


def dkimpy_milter_conf(d: Path, listen: Listen, mode: str, *, domain: str, selector: str,
                       key: Path) -> str:
    """dkimpy-milter.conf(5): OpenDKIM-style keys, run as root in the foreground."""
    return kv_conf({
        "Socket": listen.milter, "Syslog": False,
        "PidFile": str(d / "dkimpy-milter.pid"), "Mode": mode, "AuthservID": AUTHSERV_ID,
        "Canonicalization": "relaxed/relaxed", "UserID": "root",
        **_dkim_mode_items(mode, domain, selector, key),
    })


def opendmarc_conf(d: Path, listen: Listen) -> str:
    """opendmarc.conf(5): every client checked, SPF done itself, report data kept.

    IgnoreHosts names nobody; the history file (what opendmarc-importstats reads) is the
    report data that rohrpost's dmarc filter collects too.
    """
    return kv_conf({
        "Socket": listen.milter, "Background": False, "Syslog": False,
        "PidFile": str(d / "opendmarc.pid"), "AuthservID": AUTHSERV_ID,
        "TrustedAuthservIDs": AUTHSERV_ID, "IgnoreHosts": str(d / "ignore.hosts"),
        "SPFSelfValidate": True, "RejectFailures": False, "UserID": "opendmarc",
        # report data, as rohrpost's dmarc filter collects it (same work on both sides)
        "HistoryFile": str(d / "opendmarc.history"),
        "PublicSuffixList": "/usr/share/publicsuffix/public_suffix_list.dat",
    })


def pyspf_milter_conf(d: Path, listen: Listen) -> str:
    """pyspf-milter's policyd-spf.conf style file: result-only, no skipped addresses."""
    return kv_conf({
        "debugLevel": 0, "TestOnly": 1, "HELO_reject": "Fail", "Mail_From_reject": "Fail",
        "PermError_reject": "False", "TempError_Defer": "False",
        "skip_addresses": f"{NOBODY_NET}/32", "Socket": listen.milter,
        "PidFile": str(d / "pyspf-milter.pid"), "UserID": "pyspf-milter",
        "InternalHosts": NOBODY_NET, "Authserv_Id": AUTHSERV_ID,
    }, sep=" = ")


def clamd_conf(d: Path, port: int, database: Path) -> str:
    """clamd.conf(5): TCP on loopback, foreground, the offline signature directory."""
    return kv_conf({
        "Foreground": True, "TCPSocket": port, "TCPAddr": "127.0.0.1",
        "DatabaseDirectory": str(database), "LogFile": str(d / "clamd.log"),
        "PidFile": str(d / "clamd.pid"), "MaxThreads": 20, "User": "root",
        "StreamMaxLength": "50M",
    })


def clamav_milter_conf(d: Path, listen: Listen, clamd_port: int) -> str:
    """clamav-milter.conf(5): scans through clamd, rejects infected mail, adds its header."""
    return kv_conf({
        "MilterSocket": listen.milter, "Foreground": True,
        "ClamdSocket": f"tcp:127.0.0.1:{clamd_port}", "PidFile": str(d / "clamav-milter.pid"),
        "LogFile": str(d / "clamav-milter.log"), "OnInfected": "Reject",
        "AddHeader": "Replace", "MaxFileSize": "25M", "User": "root",
    })


def spamass_milter_argv(listen: Listen, spamd_port: int, pidfile: Path) -> list[str]:
    """spamass-milter's command line: checks every client, talks to our spamd through spamc."""
    return ["spamass-milter", "-p", listen.milter, "-P", str(pidfile),
            "-i", NOBODY_NET, "--", "-d", "127.0.0.1", "-p", str(spamd_port)]


def spamd_argv(port: int, pidfile: Path, children: int = 2) -> list[str]:
    """Spamd on loopback, local tests only (no network rules), no user configs."""
    return ["spamd", "--listen", f"127.0.0.1:{port}", "-L", "-u", "nobody", "-x",
            "--max-children", str(children), "--min-children", str(children),
            "--pidfile", str(pidfile), "--syslog", "stderr"]


def rspamd_local_files(listen: Listen, *, normal_port: int, controller_port: int, redis_port: int,
                       clamd_port: int, dbdir: Path) -> dict[str, str]:
    """local.d/override.d files (relative path -> text) for Rspamd's milter proxy.

    The proxy scans itself (``self_scan``, one process type, 2 processes for 2 cores), uses
    our DNS server and Redis, checks loopback clients, runs SPF/DKIM/DMARC/ARC and the
    antivirus module on our clamd; network-only modules (RBLs, fuzzy storage) are off.
    """
    return {
        "override.d/worker-proxy.inc": (
            f'bind_socket = "{listen.rspamd}";\nmilter = yes;\ntimeout = 120s;\ncount = 2;\n'
            'upstream "local" {\n  default = yes;\n  self_scan = yes;\n}\n'),
        "override.d/worker-normal.inc": f'bind_socket = "127.0.0.1:{normal_port}";\ncount = 1;\n',
        "override.d/worker-controller.inc": (
            f'bind_socket = "127.0.0.1:{controller_port}";\ncount = 1;\n'),
        "override.d/worker-fuzzy.inc": "count = -1;\n",
        "local.d/options.inc": (
            'dns {\n  nameserver = ["127.0.0.1:53"];\n  timeout = 1s;\n  retransmits = 1;\n}\n'
            "local_addrs = [];\n"
            f'hs_cache_dir = "{dbdir}/";\n'),
        "local.d/redis.conf": f'servers = "127.0.0.1:{redis_port}";\n',
        "local.d/logging.inc": 'type = "console";\nlevel = "error";\n',
        "local.d/antivirus.conf": (
            "clamav {\n  action = \"reject\";\n  symbol = \"CLAM_VIRUS\";\n  type = \"clamav\";\n"
            f'  servers = "127.0.0.1:{clamd_port}";\n  scan_mime_parts = false;\n'
            "  max_size = 26214400;\n}\n"),
        "local.d/milter_headers.conf": (
            'use = ["authentication-results", "x-spamd-result"];\n'
            "skip_local = false;\nskip_authenticated = false;\n"),
        "local.d/rbl.conf": "enabled = false;\n",
        "local.d/fuzzy_check.conf": "enabled = false;\n",
        "local.d/neural.conf": "enabled = false;\n",
        "local.d/asn.conf": "enabled = false;\n",
        "local.d/url_redirector.conf": "enabled = false;\n",
        "local.d/emails.conf": "enabled = false;\n",
        "local.d/dkim_signing.conf": "enabled = false;\n",
        "local.d/arc.conf": ("sign_local = false;\nsign_authenticated = false;\n"
                             "check_local = true;\ncheck_authed = true;\n"),
        "local.d/spf.conf": "check_local = true;\ncheck_authed = true;\n",
        "local.d/dkim.conf": "check_local = true;\ncheck_authed = true;\n",
        "local.d/dmarc.conf": "check_local = true;\ncheck_authed = true;\n",
        "local.d/greylist.conf": "enabled = false;\n",
        "local.d/ratelimit.conf": "enabled = false;\n",
    }


def rspamd_argv(conf_dir: Path, dbdir: Path, rundir: Path, pidfile: Path) -> list[str]:
    """Rspamd in the foreground with the packaged config and ours as LOCAL_CONFDIR."""
    return ["rspamd", "-f", "-c", "/etc/rspamd/rspamd.conf", "-u", "_rspamd", "-g", "_rspamd",
            "-p", str(pidfile), "--var", f"LOCAL_CONFDIR={conf_dir}",
            "--var", f"DBDIR={dbdir}", "--var", f"RUNDIR={rundir}",
            "--var", f"LOGDIR={rundir}"]


def toml_value(value: object) -> str:
    """A TOML literal for str, bool, int, float and lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def rohrpost_pipeline(var_dir: Path, filters: Sequence[tuple[str, Mapping[str, object]]],
                      *, dns_port: int = 53, workers: int = 2) -> str:
    """A pipeline.toml with ``filters`` (name, options) in order, our DNS server, no policy.

    The message gets the headers of the job and no others, as from the reference tools:
    Authentication-Results, X-Spam-* only where spamd scores (spamass-milter adds them), no
    X-Rohrpost-Result status header (none of the references writes one).
    """
    spam = any(name == "spamassassin" for name, _ in filters)
    out = [
        "[pipeline]", f'authserv_id = "{AUTHSERV_ID}"', 'on_error = "tempfail"',
        f"var_dir = {toml_value(str(var_dir))}",
        f'spam_headers = "{"always" if spam else "never"}"', "status_header = false", "",
        "[dns]", f'servers = ["127.0.0.1:{dns_port}"]', "timeout = 2.0", "",
        # DMARC report data: durable against a crash, not fsync'd per message (OpenDMARC's
        # history file is a plain append); docs/performance.md, "Same work"
        "[state]", 'synchronous = "normal"', "",
        "[log]", 'level = "warning"', "",
        "[milter]", f"workers = {workers}", "",
    ]
    for name, options in filters:
        out.append("[[filter]]")
        out.append(f"use = {toml_value(name)}")
        out.extend(f"{k} = {toml_value(v)}" for k, v in options.items())
        out.append("")
    return "\n".join(out)
