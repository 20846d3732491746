"""serve with the real ``rules`` filter (contract rules) and the Prometheus endpoint."""

import smtplib
import urllib.request

import pytest
from serve_support import free_port, lmtp_transaction, message

from tests.support.contract import RULES_CONTRACT

CONTRACT = """
[pipeline]
var_dir = "var"
authserv_id = "mx.test"
""" + RULES_CONTRACT + """
[[filter.rule]]
name = "XFORWARDED_CLIENT"
client_ip = ["192.0.2.0/24"]
add_header = { name = "X-Seen-Client", value = "documentation net" }
"""



def test_rules_reject_buy_now_at_data(serve, catcher):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", config=CONTRACT, use_bin=True)
    with smtplib.SMTP("127.0.0.1", srv.port) as client, pytest.raises(smtplib.SMTPDataError) as err:
        client.sendmail("a@example.org", ["b@example.net"], message(subject="Buy NOW cheap"))
    assert (err.value.smtp_code, err.value.smtp_error) == (550, b"5.7.1 Blocked by local policy")
    assert handler.received == []


def test_rules_score_and_header_then_quarantine(serve, catcher, tmp_path):
    handler, port = catcher()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", config=CONTRACT, use_bin=True)
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.sendmail("a@example.org", ["b@example.net"],
                        message(extra=b"List-Id: <news.example.org>\r\n"))
        client.sendmail("x@partner.example", ["b@example.net"], message())
    [(_s, _r, raw)] = handler.received
    assert b"X-Newsletter: yes" in raw and b"NEWSLETTER(2.5)" in raw
    assert len([p for p in (tmp_path / "var" / "quarantine").iterdir()
                if p.suffix == ".json"]) == 1


def test_rules_see_the_xforwarded_client(serve, maildir):
    srv = serve("--lmtp", "--deliver", f"maildir:{maildir}", config=CONTRACT, use_bin=True)
    _r, data = lmtp_transaction(srv.port, "a@example.org", ["b@example.net"], message(),
                                xforward="ADDR=192.0.2.44")
    _r, data2 = lmtp_transaction(srv.port, "a@example.org", ["b@example.net"], message())
    assert data[0][0] == data2[0][0] == 250
    with_header = [p for p in (maildir / "new").iterdir()
                   if b"X-Seen-Client: documentation net" in p.read_bytes()]
    assert len(with_header) == 1


def test_metrics_endpoint_counts_messages_and_connections(serve, catcher):
    _handler, port = catcher()
    mport = free_port()
    srv = serve("--deliver", f"smtp:127.0.0.1:{port}", "--metrics", f"127.0.0.1:{mport}")
    with smtplib.SMTP("127.0.0.1", srv.port) as client:
        client.sendmail("a@example.org", ["b@example.net"], message())
        with pytest.raises(smtplib.SMTPDataError):
            client.sendmail("a@example.org", ["b@example.net"], message(subject="buy now"))
        text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=10).read()
    assert b'rohrpost_messages_total{action="accept"} 1' in text
    assert b'rohrpost_messages_total{action="reject"} 1' in text
    assert b'rohrpost_filter_seconds_count{filter="serve-probe"} 2' in text
    assert b"rohrpost_connections_active 1" in text
