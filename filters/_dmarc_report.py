"""DMARC aggregate reports (RFC 7489 7.2, appendix C schema): build, gate, address, mail.

Owns ``build_report`` (rows from the state store to gzip'd XML), ``verify_destination``
(RFC 7489 7.1 external destination verification), ``plan_reports`` (which domain gets which
report at which addresses, and why not) and ``report_message``. The ``rohrpost dmarc report``
command drives it; the ``dmarc`` filter only collects the rows (see ``_dmarc_util``).

Reports go only to ``mailto:`` destinations, only after 7.1 verification when the destination's
organizational domain differs from the policy domain's, and only for policy domains with an
established relationship (aligned passing mail seen) or on the allow list: mailing every rua
a spammer publishes turns the reporter into a spam source.
"""

from __future__ import annotations

import calendar
import gzip
import json
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from rohrpost.dns import DnsError, DnsTempError, Resolver
from rohrpost.envelope import domain_of
from rohrpost.store import Store

from ._dmarc_record import is_dmarc, mailto_address
from ._dmarc_util import AGG_PREFIX, POL_PREFIX, REL_PREFIX, SENT_PREFIX

DKIM_RESULTS = ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror")
SPF_RESULTS = ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror")


@dataclass(frozen=True)
class Reporter:
    """Who we are in reports: ``org_name``, contact ``email``, and our host name."""

    org_name: str
    email: str
    hostname: str


@dataclass
class Plan:
    """One policy domain's report for one day: where it goes, or why it does not."""

    domain: str
    day: str
    rows: list[dict[str, Any]]
    policy: dict[str, Any]
    destinations: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    reason: str = ""  # set when nothing is sent


def day_range(day: str) -> tuple[int, int]:
    """Return the UTC begin and end timestamps of ``YYYYMMDD``."""
    begin = calendar.timegm(time.strptime(day, "%Y%m%d"))
    return begin, begin + 86399


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True)


def _record(feedback: ET.Element, row: dict[str, Any], count: int) -> None:
    rec = _sub(feedback, "record")
    r = _sub(rec, "row")
    _sub(r, "source_ip", row.get("ip") or "0.0.0.0")  # noqa: S104 - unknown client in a pipe
    _sub(r, "count", count)
    ev = _sub(r, "policy_evaluated")
    _sub(ev, "disposition", row.get("disp", "none"))
    _sub(ev, "dkim", row.get("da", "fail"))
    _sub(ev, "spf", row.get("sa", "fail"))
    for kind, comment in row.get("ov", []):
        reason = _sub(ev, "reason")
        _sub(reason, "type", kind)
        _sub(reason, "comment", comment)
    ids = _sub(rec, "identifiers")
    _sub(ids, "header_from", row.get("hf", ""))
    auth = _sub(rec, "auth_results")
    for domain, selector, result in row.get("dkim", []):
        d = _sub(auth, "dkim")
        _sub(d, "domain", domain)
        if selector:
            _sub(d, "selector", selector)
        _sub(d, "result", result if result in DKIM_RESULTS else "permerror")
    spf_domain, spf_result, scope = [*row.get("spf", []), "", "none", "mfrom"][:3]
    s = _sub(auth, "spf")
    _sub(s, "domain", spf_domain)
    _sub(s, "scope", scope)
    _sub(s, "result", spf_result if spf_result in SPF_RESULTS else "none")


def build_report(plan: Plan, reporter: Reporter) -> tuple[str, bytes]:
    """Return the file name (RFC 7489 7.2.1.1) and the gzip'd XML of ``plan``."""
    begin, end = day_range(plan.day)
    report_id = f"{plan.day}.{plan.domain}@{reporter.hostname}"
    feedback = ET.Element("feedback")
    meta = _sub(feedback, "report_metadata")
    _sub(meta, "org_name", reporter.org_name)
    _sub(meta, "email", reporter.email)
    _sub(meta, "report_id", report_id)
    dates = _sub(meta, "date_range")
    _sub(dates, "begin", begin)
    _sub(dates, "end", end)
    pol = _sub(feedback, "policy_published")
    _sub(pol, "domain", plan.domain)
    for tag in ("adkim", "aspf", "p", "sp", "pct"):
        _sub(pol, tag, plan.policy.get(tag, {"adkim": "r", "aspf": "r", "pct": 100}.get(
            tag, "none")))
    counts = Counter(_row_key(r) for r in plan.rows)
    for key, count in sorted(counts.items()):
        _record(feedback, json.loads(key), count)
    xml = b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(feedback, "utf-8")
    name = f"{reporter.hostname}!{plan.domain}!{begin}!{end}.xml.gz"
    return name, gzip.compress(xml, mtime=0)


async def verify_destination(resolver: Resolver, policy_domain: str, address: str,
                             org_of: Callable[[str], str]) -> str:
    """Return "" when ``address`` may receive reports for ``policy_domain``, else why not.

    RFC 7489 7.1: when the destination's organizational domain differs from the policy
    domain's, ``<policy-domain>._report._dmarc.<destination-host>`` must hold ``v=DMARC1``.

    :raises DnsTempError: when the check could not be made (try again later).
    """
    host = domain_of(address)
    if not host:
        return f"{address}: not an address"
    if org_of(host) == org_of(policy_domain):
        return ""
    try:
        answer = await resolver.query(f"{policy_domain}._report._dmarc.{host}", "TXT")
    except DnsTempError:
        raise
    except DnsError as exc:
        return f"{address}: {exc}"
    if any(is_dmarc(r) for r in answer.records):
        return ""
    return f"{address}: {host} does not accept reports for {policy_domain} (RFC 7489 7.1)"


async def plan_reports(store: Store, resolver: Resolver, day: str, allow: Sequence[str],
                       org_of: Callable[[str], str], *, force: bool = False) -> list[Plan]:
    """Collect every policy domain's rows of ``day`` and decide where its report may go."""
    plans = []
    allowed = {a.lower().rstrip(".") for a in allow}
    for key in await store.keys(f"{AGG_PREFIX}{day}:"):
        domain = key.rsplit(":", 1)[1]
        rows = [json.loads(r) for r in await store.list_get(key)]
        raw_policy = await store.get(f"{POL_PREFIX}{day}:{domain}")
        plan = Plan(domain, day, rows, json.loads(raw_policy) if raw_policy else {})
        plans.append(plan)
        if not force and await store.get(f"{SENT_PREFIX}{day}:{domain}") is not None:
            plan.reason = "already sent"
        elif domain not in allowed and await store.get(f"{REL_PREFIX}{domain}") is None:
            plan.reason = "no established relationship and not on the allow list"
        else:
            await _destinations(plan, resolver, org_of)
    return plans


async def _destinations(plan: Plan, resolver: Resolver, org_of: Callable[[str], str]) -> None:
    for uri in plan.policy.get("rua", []):
        address, _limit = mailto_address(uri)
        try:
            why = await verify_destination(resolver, plan.domain, address, org_of)
        except DnsTempError as exc:
            why = f"{address}: DNS error, retry later ({exc})"
        if why:
            plan.skipped.append(why)
        elif address not in plan.destinations:
            plan.destinations.append(address)
    if not plan.destinations:
        plan.reason = "no verified rua mailto: destination"


def report_message(plan: Plan, reporter: Reporter, sender: str) -> EmailMessage:
    """Return the report mail (RFC 7489 7.2.1.1) with the gzip'd XML attached."""
    name, data = build_report(plan, reporter)
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(plan.destinations)
    report_id = f"{plan.day}.{plan.domain}@{reporter.hostname}"
    msg["Subject"] = (f"Report Domain: {plan.domain} Submitter: {reporter.org_name} "
                      f"Report-ID: <{report_id}>")
    msg.set_content(f"DMARC aggregate report for {plan.domain}, {plan.day} (UTC).\n")
    msg.add_attachment(data, maintype="application", subtype="gzip", filename=name)
    return msg
