"""dkim-verify's results feed the greylist's DKIM exemption (the docs/spam.md recipe)."""

from __future__ import annotations

from typing import Any

from rohrpost.envelope import Envelope
from tests.dkim.dkimhelp import MESSAGE, NOW, make_services, run
from tests.support.dnsserver import TestDnsServer

RECIPE = '''
[pipeline]
authserv_id = "mx.example.net"
[[filter]]
use = "dkim-verify"
[[filter]]
use = "greylist"
name = "greylist-dkim"
stage = "eom"
dkim_pass_domains = ["example.org"]
[filter.when]
sender_domains = ["example.org", ".example.org"]
'''


def test_dkim_pass_exempts_signed_mail_from_eom_greylisting(signing: dict[str, Any],
                                                           dns_server: TestDnsServer) -> None:
    signed = run(str(signing["toml"]), MESSAGE, make_services(dns_server, lambda: NOW),
                 Envelope(auth_user="bob")).message.raw
    incoming = Envelope(client_ip="198.51.100.7", mail_from="bob@example.org",
                        rcpts=("alice@example.net",))
    done = run(RECIPE, signed, make_services(dns_server, lambda: NOW), incoming)
    assert done.outcome.action.value == "accept"
    facts = {k: v for r in done.outcome.runs for k, v in r.result.facts.items()}
    assert facts["greylist.reason"] == "DKIM pass"
    # the same message unsigned is greylisted
    plain = run(RECIPE, MESSAGE, make_services(dns_server, lambda: NOW), incoming)
    assert plain.outcome.action.value == "tempfail"
