"""The whole spam corpus (4122 messages) through the whole pipeline, in-process, real daemons.

One pipeline.toml with headers, received, size, rules, spamassassin, attachments, clamav (the
session clamd: every message is streamed to it), uribl and dnsbl (the loopback TestDnsServer:
a few listed domains and client addresses, everything else NXDOMAIN), ratelimit and greylist
(state in rohrpost's MemoryStore: ``[state] backend = "memory"``), ``[actions] add_header = 5, reject = 15``.

SpamAssassin runs on a SAMPLE of 40 messages only (every 103rd; ~200 ms of spamd CPU each):
those get a client address in 203.0.113.0/24 and the spamassassin filter has
``when.client_networks = ["203.0.113.0/24"]``. Every other filter sees every message.

``rohrpost.runner.process`` runs each message (all SMTP stages, decide, apply changes), 32 at
a time (asyncio.gather behind a semaphore) on one event loop, like one milter worker under
load. Greylisting runs at end of message (``stage = "eom"``, last) so that a greylisted
message has still been through every other filter; with a 1 s delay and 40 triplets the run
covers first sight, early retry, pass and auto-whitelist. Asserted: every message gets an
outcome, no filter raised (``runs[i].error == ""``), each message went through the filters in
order up to the one that gave a final verdict, and the DNS lists, clamd and spamd really
answered. pytest-timeout bounds the run.
"""

from __future__ import annotations

import asyncio
import tarfile
import time
from collections import Counter
from dataclasses import dataclass

import pytest

from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.filter import Services
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline, applies
from rohrpost.result import Action
from rohrpost.runner import Processed, process
from rohrpost.services import make_services
from rohrpost.store.memory import MemoryStore
from tests.spam.helpers import CORPUS, mail_with
from tests.support.daemons import EICAR, ClamdInstance, SpamdInstance
from tests.support.dnsserver import TestDnsServer

pytestmark = pytest.mark.integration

CONCURRENCY = 32
SA_EVERY = 103  # 4122 // 103 + 1 = 41 candidates, the first 40 are the sample
SA_SAMPLE = 40
SA_NET = "203.0.113"
CLIENTS = [f"198.51.100.{i}" for i in range(1, 31)]
LISTED_CLIENTS = {"198.51.100.2": "127.0.0.2", "198.51.100.3": "127.0.0.4"}
# domains of 2002-era spam in the corpus (insurance and mailer services)
LISTED_DOMAINS = {"insuranceiq.com": "127.0.0.2", "iiq.us": "127.0.0.2",
                  "accucast.com": "127.0.0.4"}
SENDERS = [f"sender{i}@corpus.example" for i in range(20)]
RCPTS = ["bob@example.net", "carol@example.net"]


def config_text(dns: str, spamd_port: int, clamd_socket: str) -> str:
    return f"""
[pipeline]
hostname = "mx.example.net"
authserv_id = "mx.example.net"
timeout = 60

[dns]
servers = ["{dns}"]
timeout = 2.0

[state]
backend = "memory"

[[filter]]
use = "headers"

[[filter]]
use = "received"

[[filter]]
use = "size"
max_size = 10000000

[[filter]]
use = "rules"
[[filter.rule]]
name = "LOCAL_MONEY_SUBJECT"
header = "Subject"
regex = "(?i)(\\\\$\\\\$\\\\$|free|money|cash)"
score = 1.5
[[filter.rule]]
name = "LOCAL_CLICK_HERE"
body = "(?i)click\\\\s+here"
score = 1.0
[[filter.rule]]
name = "LOCAL_NO_MESSAGE_ID"
header = "Message-ID"
exists = false
score = 0.5
[[filter.rule]]
name = "LOCAL_LISTED_CLIENT"
client_ip = ["198.51.100.2/32", "198.51.100.3/32"]
score = 0.1

[[filter]]
use = "spamassassin"
port = {spamd_port}
[filter.when]
client_networks = ["{SA_NET}.0/24"]

[[filter]]
use = "attachments"

[[filter]]
use = "clamav"
socket = "{clamd_socket}"

[[filter]]
use = "uribl"
[[filter.list]]
zone = "multi.uribl.test"
bits = {{ "2" = {{ symbol = "URIBL_BLACK", score = 4.0 }}, "4" = {{ symbol = "URIBL_GREY", score = 1.0 }} }}

[[filter]]
use = "dnsbl"
skip_private = false       # the test clients are in the documentation networks
[[filter.list]]
zone = "zen.test"
codes = {{ "127.0.0.2" = {{ symbol = "RBL_SBL", score = 4.0 }}, "127.0.0.4" = {{ symbol = "RBL_XBL", score = 3.0 }} }}

[[filter]]
use = "ratelimit"
[[filter.bucket]]
key = "client_ip"
limit = 100
window = 3600
action = "score"
score = 1.0

[[filter]]
use = "greylist"
stage = "eom"
delay = 1
awl_count = 3

[actions]
add_header = 5.0
reject = 15.0
"""


@dataclass
class Item:
    index: int
    name: str
    raw: bytes
    envelope: Envelope


def corpus() -> list[tuple[str, bytes]]:
    with tarfile.open(CORPUS) as tar:
        return [(m.name, tar.extractfile(m).read())  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()]


def envelope_for(index: int, sampled: bool) -> Envelope:
    client = f"{SA_NET}.{index % 250 + 1}" if sampled else CLIENTS[index % len(CLIENTS)]
    return Envelope(client_ip=client, helo=f"mail{index % 7}.corpus.example",
                    mail_from=SENDERS[index % len(SENDERS)], rcpts=(RCPTS[index % 2],),
                    queue_id=f"C{index:05d}")


def items() -> list[Item]:
    messages = corpus()
    assert len(messages) == 4122
    sampled = [i for i in range(len(messages)) if i % SA_EVERY == 0][:SA_SAMPLE]
    out = [Item(i, name, raw, envelope_for(i, i in sampled))
           for i, (name, raw) in enumerate(messages)]
    # live controls: clamd must find EICAR, the attachments filter must see the .exe
    for j, (name, payload) in enumerate((("eicar.txt", EICAR), ("setup.exe", b"x"))):
        out.append(Item(len(out), f"control/{name}", mail_with((name, "text/plain", payload)),
                        envelope_for(len(out) + j, False)))
    return out


async def run_all(pipeline: Pipeline, services: Services,
                  work: list[Item]) -> list[Processed | BaseException]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: Item) -> Processed:
        async with gate:
            return await process(pipeline, services, item.envelope, Message(item.raw))

    try:
        return await asyncio.gather(*(one(item) for item in work), return_exceptions=True)
    finally:
        await pipeline.aclose()
        await services.aclose()


def expected_order(pipeline: Pipeline, item: Item) -> list[str]:
    """Names of the filters that apply to ``item``, in the order a Session runs them."""
    message = Message(item.raw)
    steps = [s for s in pipeline.steps if applies(s.spec.when, item.envelope, message)]
    return [s.name for s in sorted(steps, key=lambda s: int(s.stage))]


@pytest.mark.timeout(120)
def test_spam_corpus_through_the_whole_pipeline(dns_server: TestDnsServer, spamd: SpamdInstance,
                                                clamd: ClamdInstance) -> None:
    for ip, answer in LISTED_CLIENTS.items():
        dns_server.add(".".join(reversed(ip.split("."))) + ".zen.test", "A", answer)
    for domain, answer in LISTED_DOMAINS.items():
        dns_server.add(f"{domain}.multi.uribl.test", "A", answer)
    config = parse_config(config_text(dns_server.address, spamd.port, clamd.tcp), "corpus.toml")
    pipeline = Pipeline.build(config)
    services = make_services(config)  # as `rohrpost run`/milter build them: DNS, memory store
    work = items()

    start = time.monotonic()
    done = asyncio.run(run_all(pipeline, services, work))
    seconds = time.monotonic() - start
    print(f"\n{len(work)} messages in {seconds:.1f} s ({len(work) / seconds:.0f}/s), "
          f"concurrency {CONCURRENCY}")

    crashed = [(w.name, repr(d)) for w, d in zip(work, done, strict=True)
               if isinstance(d, BaseException)]
    assert crashed == []
    results = [d for d in done if isinstance(d, Processed)]
    errors = [(w.name, r.name, r.error) for w, d in zip(work, results, strict=True)
              for r in d.outcome.runs if r.error]
    assert errors == []

    # every message went through the filters in order, up to a final verdict or to the end
    short = []
    for item, d in zip(work, results, strict=True):
        names = [r.name for r in d.outcome.runs]
        order = expected_order(pipeline, item)
        stopped = bool(d.outcome.runs) and d.outcome.runs[-1].result.verdict is not None
        if names != order and not (stopped and names == order[:len(names)]):
            short.append((item.name, names, order))
    assert short == []

    actions = Counter(d.outcome.action for d in results)
    symbols = Counter(s.name for d in results for s in d.outcome.symbols)
    ran = Counter(r.name for d in results for r in d.outcome.runs)
    print("actions:", dict(actions))
    print("filters run:", dict(ran))
    assert isinstance(services.store, MemoryStore)
    wall: Counter[str] = Counter()
    for d in results:
        for r in d.outcome.runs:
            wall[r.name] += r.ms
    print("mean ms per filter (wall, 32 in flight):",
          {k: round(v / ran[k], 1) for k, v in wall.most_common()})
    print("symbols:", dict(symbols.most_common(25)))
    assert set(actions) <= {Action.ACCEPT, Action.REJECT, Action.TEMPFAIL}

    *corpus_done, eicar, exe = results
    assert str(eicar.outcome.verdict.reply) == \
        "554 5.7.1 Virus found: Eicar-Test-Signature.UNOFFICIAL"
    assert exe.outcome.verdict.by == "attachments"
    # clamd scanned every message that got that far; spamd exactly the sample
    assert ran["clamav"] > 4000
    sampled = [d for d in corpus_done if d.envelope.client_ip.startswith(SA_NET + ".")]
    assert len(sampled) == SA_SAMPLE
    assert ran["spamassassin"] == sum(
        1 for d in sampled if "spamassassin" in [r.name for r in d.outcome.runs])
    assert ran["spamassassin"] >= SA_SAMPLE - 2  # at most an early verdict or two
    assert any(s.name.startswith("SA_") for d in sampled for s in d.outcome.symbols)
    # the DNS lists answered: listed clients and domains found, nothing else
    assert symbols["RBL_SBL"] > 0 and symbols["RBL_XBL"] > 0
    assert symbols["URIBL_BLACK"] > 10
    for d in corpus_done:
        for s in d.outcome.symbols:
            if s.name.startswith("URIBL_"):
                assert any(dom in s.reason for dom in LISTED_DOMAINS), s
            if s.name.startswith("RBL_"):
                assert d.envelope.client_ip in LISTED_CLIENTS, (d.envelope.client_ip, s)
    # greylisting and rate limits were exercised, not bypassed
    assert actions[Action.TEMPFAIL] > 0 and symbols["RATELIMIT_CLIENT_IP"] > 0
    assert ran["greylist"] > actions[Action.TEMPFAIL]
