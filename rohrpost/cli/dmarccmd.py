"""``rohrpost dmarc report``: send the DMARC aggregate reports collected by the filter.

Owns the ``dmarc`` command group. The work (gating, RFC 7489 7.1 verification, XML) lives in
``rohrpost.filters._dmarc_report``; this module reads options and the ``[dmarc]`` section,
opens the store and resolver from pipeline.toml, prints the plan, and sends by SMTP.

``[dmarc]`` keys (all optional): ``org_name``, ``report_from``, ``smtp`` (``HOST:PORT``),
``report_allow`` (policy domains that get reports without an established relationship),
``psl_file``.
"""

from __future__ import annotations

import asyncio
import functools
import smtplib
import time
from typing import Any

import click

from rohrpost.cli.common import config_option, load_or_exit


@click.group("dmarc")
def dmarc_group() -> None:
    """DMARC aggregate reports."""


def _setting(config: Any, key: str, default: Any) -> Any:
    section = config.raw.get("dmarc", {})
    return section.get(key, default) if isinstance(section, dict) else default


@dmarc_group.command("report")
@config_option
@click.option("--day", metavar="YYYYMMDD", default=None, help="UTC day (default: yesterday)")
@click.option("--smtp", "smtp_addr", metavar="HOST:PORT", default=None,
              help="SMTP relay for the reports ([dmarc] smtp)")
@click.option("--from", "sender", metavar="ADDR", default=None,
              help="sender of the reports ([dmarc] report_from)")
@click.option("--org-name", default=None, help="our organization name in the reports")
@click.option("--allow", multiple=True, metavar="DOMAIN",
              help="send to this policy domain even without an established relationship")
@click.option("--force", is_flag=True, help="send again even if already sent")
@click.option("--dry-run", is_flag=True, help="print what would be sent; send nothing")
def report_cmd(  # noqa: PLR0917 - click passes every option as an argument
    config_path: str | None, day: str | None, smtp_addr: str | None, sender: str | None,
    org_name: str | None, allow: tuple[str, ...], force: bool, dry_run: bool,
) -> int:
    """Build and send the aggregate reports (RFC 7489 7.2) of one day."""
    config = load_or_exit(config_path, mta_facing=False)
    day = day or time.strftime("%Y%m%d", time.gmtime(time.time() - 86400))
    try:
        time.strptime(day, "%Y%m%d")
    except ValueError:
        raise click.UsageError(f"--day must be YYYYMMDD, not {day!r}") from None
    sender = sender or _setting(config, "report_from", "")
    smtp_addr = smtp_addr or _setting(config, "smtp", "")
    if not dry_run and not (sender and smtp_addr):
        raise click.UsageError("--from and --smtp (or [dmarc] report_from/smtp) are needed")
    allowed = [*allow, *_setting(config, "report_allow", [])]
    org = org_name or _setting(config, "org_name", config.hostname)
    return asyncio.run(_report(config, day, allowed, org=org, sender=sender or "",
                               smtp_addr=smtp_addr or "", force=force, dry_run=dry_run))


async def _report(config: Any, day: str, allowed: list[str], *, org: str, sender: str,
                  smtp_addr: str, force: bool, dry_run: bool) -> int:
    # imported here: the filters package and dnspython load only when reports are made
    from rohrpost.filters._dmarc_report import (
        Reporter,
        plan_reports,
        report_message,
    )
    from rohrpost.filters._dmarc_util import SENT_PREFIX
    from rohrpost.filters._psl import DEFAULT_PATH, PublicSuffixList
    from rohrpost.filters.dmarc import organizational_domain
    from rohrpost.services import make_services

    psl = PublicSuffixList.load(_setting(config, "psl_file", DEFAULT_PATH))
    services = make_services(config)
    reporter = Reporter(org, sender or f"postmaster@{config.hostname}", config.hostname)
    status = 0
    try:
        plans = await plan_reports(services.store, services.resolver, day, allowed,
                                   functools.partial(organizational_domain, psl),
                                   force=force)
        for plan in plans:
            for why in plan.skipped:
                click.echo(f"skip-destination {plan.domain} {why}")
            if plan.reason:
                click.echo(f"skip {plan.domain} {day}: {plan.reason} ({len(plan.rows)} rows)")
                continue
            to = ",".join(plan.destinations)
            if dry_run:
                click.echo(f"would-send {plan.domain} {day} rows={len(plan.rows)} to={to}")
                continue
            try:
                _send(smtp_addr, report_message(plan, reporter, sender), plan.destinations,
                      sender)
            except (OSError, smtplib.SMTPException) as exc:
                click.echo(f"error {plan.domain} {day}: {exc}", err=True)
                status = 75
                continue
            await services.store.set(f"{SENT_PREFIX}{day}:{plan.domain}", b"1", ttl=30 * 86400)
            click.echo(f"sent {plan.domain} {day} rows={len(plan.rows)} to={to}")
    finally:
        await services.aclose()
    return status


def _send(smtp_addr: str, message: Any, recipients: list[str], sender: str) -> None:
    host, port = (smtp_addr.rsplit(":", 1) if smtp_addr.count(":") == 1 or "]:" in smtp_addr
                  else (smtp_addr, "25"))
    with smtplib.SMTP(host.strip("[]") or "127.0.0.1", int(port), timeout=30) as smtp:
        smtp.send_message(message, from_addr=sender, to_addrs=recipients)
