"""contrib/pipeline-auth.toml replaces policyd-spf, OpenDKIM, OpenDMARC and OpenARC, and the
migration tables of docs/authentication.md name only options that exist.

The example's key paths are placeholders (/etc/rohrpost/keys): ``config check`` of the file as
shipped fails on exactly those, and passes on a copy with generated keys
(``tests/e2e_auth/contrib.py``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from rohrpost.filters._dkim_keys import KeySpec

from rohrpost.config import SECTIONS, When
from rohrpost.options import option_fields
from rohrpost.registry import available, load_filter_class
from tests.e2e_auth.contrib import CONTRIB, ROOT, contrib_with_keys
from tests.support.dnsserver import TestDnsServer

BIN = ROOT / "bin" / "rohrpost"
ENV = {**os.environ, "ROHRPOST_NO_VENV": "1", "PYTHONPATH": str(ROOT)}
DOCS = ROOT / "docs" / "authentication.md"
ORDER = ["spf", "dkim-verify", "arc-verify", "dmarc", "dkim-sign", "arc-seal", "authres"]
AUTH_FILTERS = ORDER


def rohrpost(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BIN), *args], capture_output=True, text=True,
                          env=ENV, timeout=60, check=False)


def test_contrib_has_all_four_replacements_in_order() -> None:
    conf = tomllib.loads(CONTRIB.read_text())
    filters = conf["filter"]
    assert [f["use"] for f in filters] == ORDER  # SPF, DKIM verify+sign, DMARC, ARC verify+seal
    sign = filters[ORDER.index("dkim-sign")]
    assert sorted(k["key"].rsplit(".", 2)[-2] for k in sign["key"]) == ["ed2026", "rsa2026"]
    seal = filters[ORDER.index("arc-seal")]
    assert seal["when"]["recipient_domains"]  # seals what we forward
    dmarc = filters[ORDER.index("dmarc")]
    assert dmarc["reject_action"] == "reject"


def test_contrib_config_check_fails_only_on_placeholder_keys_and_passes_with_keys(
        tmp_path: Path) -> None:
    shipped = rohrpost("config", "check", "-c", str(CONTRIB))
    assert shipped.returncode == 78
    assert "cannot read key file /etc/rohrpost/keys/" in shipped.stderr + shipped.stdout
    copy, _records = contrib_with_keys(tmp_path)
    done = rohrpost("config", "check", "-c", str(copy))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OK ({len(ORDER)} filters: {', '.join(ORDER)})" in done.stdout


def test_contrib_keys_match_published_records(tmp_path: Path,
                                              dns_server: TestDnsServer) -> None:
    """``rohrpost dkim check`` on the example (DKIM and ARC keys) against a loopback zone."""
    text = CONTRIB.read_text()
    assert '# servers = ["127.0.0.1:5353"]' in text
    text = text.replace('# servers = ["127.0.0.1:5353"]', f'servers = ["{dns_server.address}"]')
    copy, records = contrib_with_keys(tmp_path, text)
    for name, value in records.items():
        dns_server.add(name, "TXT", value)
    assert sorted(records) == ["arc2026._domainkey.example.org", "ed2026._domainkey.example.org",
                               "rsa2026._domainkey.example.org"]
    done = rohrpost("dkim", "check", "--domain", "example.org", "-c", str(copy))
    assert done.returncode == 0, done.stdout + done.stderr
    dns_server.remove("ed2026._domainkey.example.org")
    missing = rohrpost("dkim", "check", "--domain", "example.org", "-c", str(copy))
    assert missing.returncode == 1 and "ed2026" in missing.stdout + missing.stderr


# -- the migration tables -------------------------------------------------------------------


def migration_rows() -> list[tuple[str, str]]:
    """(theirs, ours) of every table row under the two migration headings."""
    text = DOCS.read_text()
    parts = [text[text.index("\n## Migration\n"):text.index("\n## Known gaps")],
             text[text.index("\n### Migration from OpenDKIM and OpenARC\n"):]]
    rows = []
    for part in parts:
        for line in part.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if line.startswith("|") and len(cells) == 2 and not set(cells[1]) <= set("-: "):
                rows.append((cells[0], cells[1]))
    return [r for r in rows if r != ("policyd-spf", "rohrpost") and r[1] != "rohrpost"]


def test_migration_covers_the_four_daemons() -> None:
    theirs = " ".join(t for t, _o in migration_rows())
    for option in ("Mail_From_reject", "HELO_reject", "skip_addresses",  # policyd-spf
                   "RejectFailures", "IgnoreAuthenticatedClients", "IgnoreHosts",  # OpenDMARC
                   "PublicSuffixList", "HistoryFile",
                   "KeyTable", "SigningTable", "InternalHosts", "OversignHeaders",  # OpenDKIM
                   "SignatureAlgorithm", "MinimumKeyBits", "opendkim-genkey",
                   "OpenARC `Mode sv`", "OpenARC `SignHeaders`"):  # OpenARC
        assert option in theirs, option


def _fields(cls: type) -> set[str]:
    return {f.name for f in option_fields(cls)}


def test_migration_tables_name_only_real_options() -> None:
    options = {name: _fields(load_filter_class(name).Options) for name in AUTH_FILTERS}
    filter_keys = set().union(*options.values()) | _fields(KeySpec) | _fields(When)
    sections = {name: _fields(cls) for name, cls in SECTIONS.items()}
    sections["filter.when"] = _fields(When)
    sections["dmarc"] = {"org_name", "report_from", "smtp", "report_allow", "psl_file"}
    names = set(available())
    checked = 0
    for theirs, ours in migration_rows():
        for token in re.findall(r"`([^`]+)`", ours):
            if token in names:  # a filter: spf, dkim-sign, ...
                pass
            elif m := re.fullmatch(r"\[([a-z.]+)\]\s+([a-z_]+)( = .*)?", token):
                assert m.group(2) in sections[m.group(1)], (theirs, token)
            elif m := re.fullmatch(r"([a-z_]+)( = .*)?", token):
                assert m.group(1) in filter_keys, (theirs, token)
            elif re.fullmatch(r"[a-z]+(-[a-z]+)+", token):
                raise AssertionError(f"no filter {token!r} ({theirs})")
            else:
                continue
            checked += 1
    assert checked >= 40  # the tables were found and read
