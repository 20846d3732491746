"""The authheaders DMARC vectors (testdata/dmarc-authheaders) through the ``dmarc`` filter.

DKIM inputs are given as the ``dkim.results`` fact that ``dkim-verify`` publishes; DNS is the
fake zone of SOURCE.md served by a loopback server (``conftest.DMARC_ZONE``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rohrpost.filters.dmarc import DmarcFilter, DmarcOptions

from rohrpost.envelope import Envelope
from rohrpost.result import Action, FilterResult
from tests.auth.helpers import make_context, make_resolver, make_services, run_filter
from tests.support.dnsserver import TestDnsServer

DATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "dmarc-authheaders"


def dkim(*sigs: tuple[str, str]) -> tuple[tuple[str, FilterResult], ...]:
    results = [{"domain": d, "selector": "test", "result": r, "algorithm": "rsa-sha256"}
               for d, r in sigs]
    return (("dkim-verify", FilterResult(facts={"dkim.results": results})),)


CASES = [
    # message, DKIM input, expected dmarc result, expected policy, expected action
    ("test.message_signed", dkim(("example.com", "pass")), "pass", "reject", None),
    ("testcomma.message", dkim(("example.com", "pass")), "pass", "reject", None),
    ("test.bad.message", (), "permerror", "none", None),
    ("test.nofrom.message", (), "permerror", "none", None),
    ("test.message_multi", dkim(("example.com", "fail"), ("example.org", "pass")),
     "fail", "reject", Action.REJECT),
    ("test.message_multi2", dkim(("example.com", "fail"), ("example.org", "pass")),
     "fail", "reject", Action.REJECT),
    ("test.message_sub", dkim(("sub.example.net", "fail")), "fail", "reject", Action.REJECT),
    ("test.message_np1", dkim(("sub.example.biz", "fail")), "fail", "reject", Action.REJECT),
    ("test.message_np2", dkim(("sub2.example.biz", "fail")), "fail", "quarantine",
     Action.QUARANTINE),
    ("test_nop.message", dkim(("nop.example.org", "fail")), "none", "none", None),
    ("test.gov.message", (), "fail", "reject", Action.REJECT),
]


@pytest.mark.parametrize(("name", "prior", "result", "policy", "action"), CASES,
                         ids=[c[0] for c in CASES])
def test_authheaders_vector(dmarc_dns: TestDnsServer, name: str,
                            prior: tuple[tuple[str, FilterResult], ...], result: str,
                            policy: str, action: Action | None) -> None:
    ctx = make_context(make_services(make_resolver(dmarc_dns.address)))
    flt = DmarcFilter(DmarcOptions())
    raw = (DATA / name).read_bytes()
    out = run_filter(flt, ctx, Envelope(client_ip="192.0.2.9"), raw, prior)
    assert out.facts["dmarc.result"] == result
    assert out.facts["dmarc.policy"] == policy
    assert (out.verdict.action if out.verdict else None) == action
    (auth,) = out.auth
    assert auth.method == "dmarc"
    assert auth.result == result
    if action is Action.REJECT:
        assert out.verdict is not None
        assert (out.verdict.reply.code, out.verdict.reply.enhanced) == (550, "5.7.1")
