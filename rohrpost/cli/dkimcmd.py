"""``rohrpost dkim keygen`` and ``rohrpost dkim check``: make DKIM keys, check what DNS publishes.

Owns the ``dkim`` command group. ``keygen`` writes a private key (mode 0600, ``D.S.pem``) and
prints the TXT record to publish; RSA keys come from ``openssl genpkey`` (as dkimpy's own
``dknewkey`` does), Ed25519 keys from PyNaCl. ``check`` looks the record up through the
configured resolver (``[dns]``) and compares it with every configured key of the domain
(``dkim-sign`` and ``arc-seal`` entries). Key parsing is ``_dkim_adapter``'s; it is imported
through importlib because mypy does not see ``rohrpost.filters`` (mapped from ``filters/``).
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
from typing import Any

import click

from rohrpost.cli.common import config_option, load_or_exit

EXIT_MISMATCH = 1


def _adapter() -> Any:
    return importlib.import_module("rohrpost.filters._dkim_adapter")


def txt_zone_line(selector: str, domain: str, record: str) -> str:
    """Return a zone-file line with the record split into 255-character strings."""
    chunks = [record[i : i + 255] for i in range(0, len(record), 255)]
    quoted = " ".join(f'"{c}"' for c in chunks)
    return f"{selector}._domainkey.{domain}. IN TXT ( {quoted} )"


def _rsa_pem(bits: int) -> bytes:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise click.ClickException("RSA keys need the openssl command (Debian: openssl)")
    done = subprocess.run(  # noqa: S603 - fixed argument list, no shell
        [openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
        capture_output=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(f"openssl failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


@click.group("dkim")
def dkim_group() -> None:
    """DKIM keys: generate them, check their DNS records."""


@dkim_group.command("keygen")
@click.option("--domain", "-d", required=True, help="signing domain (d=)")
@click.option("--selector", "-s", required=True, help="selector (s=)")
@click.option("--type", "key_type", type=click.Choice(["rsa", "ed25519"]), default="rsa",
              show_default=True)
@click.option("--bits", type=click.IntRange(1024, 8192), default=2048, show_default=True,
              help="RSA key size (RFC 8301: at least 1024, 2048 recommended)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=".",
              show_default=True, help="folder for DOMAIN.SELECTOR.pem")
@click.option("--force", is_flag=True, help="overwrite an existing key file")
def keygen(*, domain: str, selector: str, key_type: str, bits: int, out_dir: str,
           force: bool) -> int:
    """Write a new private key (0600) and print the DNS TXT record to publish."""
    try:  # both go into the file name: "../x" must not write outside --out
        importlib.import_module("rohrpost.filters._dkim_keys").check_names(domain, selector)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    adapter = _adapter()
    pem = _rsa_pem(bits) if key_type == "rsa" else adapter.generate_ed25519()
    key = adapter.load_private_key(pem)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{domain}.{selector}.pem")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} exists (use --force to overwrite)") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(pem)
    click.echo(f"; private key written to {path} (mode 0600)", err=True)
    click.echo(txt_zone_line(selector, domain, adapter.key_record(key)))
    return 0


def configured_keys(config: Any, domain: str, selector: str | None) -> list[tuple[str, str]]:
    """(selector, key path) of every ``dkim-sign``/``arc-seal`` key of ``domain``."""
    found: list[tuple[str, str]] = []
    for spec in config.filters:
        opts = spec.options
        entries = opts.get("key", []) if spec.use == "dkim-sign" else (
            [opts] if spec.use == "arc-seal" else [])
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            if str(entry.get("domain", "")).lower().rstrip(".") != domain:
                continue
            if selector is None or entry.get("selector") == selector:
                found.append((str(entry.get("selector")), config.resolve_path(str(entry["key"]))))
    return found


@dkim_group.command("check")
@click.option("--domain", "-d", required=True, help="signing domain to check")
@click.option("--selector", "-s", default=None, help="only this selector")
@config_option
def check(domain: str, selector: str | None, config_path: str | None) -> int:
    """Check that DNS publishes each configured key of DOMAIN; exit 0 all match, 1 not."""
    from rohrpost.dns import DnsConfig, DnsError, Resolver

    adapter = _adapter()
    config = load_or_exit(config_path, mta_facing=False)
    domain = domain.lower().rstrip(".")
    keys = configured_keys(config, domain, selector)
    if not keys:
        click.echo(f"no configured key for {domain}" + (f" selector {selector}" if selector
                                                         else ""), err=True)
        return EXIT_MISMATCH
    resolver = Resolver(DnsConfig(servers=tuple(config.dns.servers), timeout=config.dns.timeout))
    bad = 0
    for sel, path in keys:
        name = f"{sel}._domainkey.{domain}"
        try:
            with open(path, "rb") as fh:
                key = adapter.load_private_key(fh.read())
            records = resolver.query_sync(name, "TXT").records
        except (OSError, ValueError, DnsError) as exc:
            click.echo(f"{name}: ERROR {exc}")
            bad += 1
            continue
        results = [adapter.record_matches(key, r) for r in records]
        if any(ok for ok, _why in results):
            click.echo(f"{name}: OK ({key.kind}, {key.bits} bits) matches {path}")
            continue
        bad += 1
        why = "; ".join(w for _ok, w in results) or "no TXT record published"
        click.echo(f"{name}: MISMATCH for {path}: {why}")
        click.echo(f"  publish: {txt_zone_line(sel, domain, adapter.key_record(key))}")
    return EXIT_MISMATCH if bad else 0
