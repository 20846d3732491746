"""``rohrpost dkim keygen`` and ``rohrpost dkim check`` (against the loopback DNS server)."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from rohrpost.filters import _dkim_adapter as adapter

from rohrpost.cli import main
from tests.support.dnsserver import TestDnsServer


def keygen(tmp_path: Path, *args: str) -> tuple[Path, str]:
    result = CliRunner().invoke(main, ["dkim", "keygen", "--out", str(tmp_path), *args],
                                standalone_mode=False)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    domain = args[args.index("--domain") + 1]
    selector = args[args.index("--selector") + 1]
    return tmp_path / f"{domain}.{selector}.pem", result.stdout


def record_of(zone_line: str) -> str:
    return "".join(re.findall(r'"([^"]*)"', zone_line))


@pytest.mark.parametrize(("kind", "extra"), [("rsa", ["--bits", "2048"]), ("ed25519", [])])
def test_keygen_writes_0600_and_a_parsable_record(tmp_path: Path, kind: str,
                                                  extra: list[str]) -> None:
    path, out = keygen(tmp_path, "--domain", "example.org", "--selector", "s1",
                       "--type", kind, *extra)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out.startswith("s1._domainkey.example.org. IN TXT (")
    assert all(len(s) <= 255 for s in re.findall(r'"([^"]*)"', out))
    key = adapter.load_private_key(path.read_bytes())
    assert key.kind == kind and (key.bits == 2048 or kind == "ed25519")
    assert adapter.record_matches(key, record_of(out)) == (True, "public key differs")
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    keygen(tmp_path, "--domain", "e.org", "--selector", "s", "--type", "ed25519")
    result = CliRunner().invoke(main, ["dkim", "keygen", "--domain", "e.org", "--selector", "s",
                                       "--type", "ed25519", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "exists" in result.output


def _check(tmp_path: Path, server: TestDnsServer, key: Path) -> tuple[int, str]:
    conf = tmp_path / "pipeline.toml"
    conf.write_text(f'[dns]\nservers = ["{server.address}"]\ntimeout = 2.0\n'
                    '[[filter]]\nuse = "dkim-sign"\n[[filter.key]]\n'
                    f'domain = "example.org"\nselector = "s1"\nkey = "{key}"\n')
    result = CliRunner().invoke(main, ["dkim", "check", "--domain", "example.org",
                                       "-c", str(conf)])
    return result.exit_code, result.output


def test_check_match_mismatch_missing(tmp_path: Path, dns_server: TestDnsServer) -> None:
    path, out = keygen(tmp_path, "--domain", "example.org", "--selector", "s1",
                       "--type", "ed25519")
    code, text = _check(tmp_path, dns_server, path)
    assert code == 1 and "MISMATCH" in text and "no TXT record" in text       # missing
    other = adapter.load_private_key(adapter.generate_ed25519())
    dns_server.add("s1._domainkey.example.org", "TXT", adapter.key_record(other))
    code, text = _check(tmp_path, dns_server, path)
    assert code == 1 and "public key differs" in text                         # mismatch
    dns_server.remove("s1._domainkey.example.org")
    dns_server.add("s1._domainkey.example.org", "TXT", record_of(out))
    code, text = _check(tmp_path, dns_server, path)
    assert code == 0 and "OK" in text, text                                   # match


def test_check_without_configured_key(tmp_path: Path) -> None:
    conf = tmp_path / "pipeline.toml"
    conf.write_text("")
    result = CliRunner().invoke(main, ["dkim", "check", "--domain", "example.org",
                                       "-c", str(conf)])
    assert result.exit_code == 1 and "no configured key" in result.output


@pytest.mark.parametrize(("domain", "selector"), [
    ("../evil", "s"), ("example.org", "../../x"), ("example.org/x", "s"), ("", "s"),
    ("exa mple.org", "s"), ("example.org", "a;b"), ("example.org", ""), ("-bad.org", "s"),
])
def test_keygen_refuses_names_that_are_not_dns_names(tmp_path: Path, domain: str,
                                                     selector: str) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["dkim", "keygen", "--domain", domain, "--selector",
                                       selector, "--type", "ed25519", "--out", str(out)])
    assert result.exit_code != 0
    assert "not a valid" in result.output
    assert not list(tmp_path.rglob("*.pem"))  # nothing written, inside --out or beside it


def test_keygen_accepts_ordinary_names(tmp_path: Path) -> None:
    path, out = keygen(tmp_path, "--domain", "Mail-1.example.co.uk", "--selector",
                       "2026-05.rsa", "--type", "ed25519")
    assert path.is_file() and out.startswith("2026-05.rsa._domainkey.Mail-1.example.co.uk. ")
