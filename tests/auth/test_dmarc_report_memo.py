"""The dmarc filter's report writes: one store write per message once the day's policy and the
relationship mark are stored (``ReportMemo``, docs/performance.md finding 18), and the same
report data as writing all three every time."""

from __future__ import annotations

import asyncio
from typing import Any

from rohrpost.filters._dmarc_report import plan_reports
from rohrpost.filters._dmarc_util import REL_REFRESH
from rohrpost.filters.dmarc import DmarcFilter, DmarcOptions

from rohrpost.envelope import Envelope
from rohrpost.store.memory import MemoryStore
from tests.auth.helpers import FIXED_NOW, make_context, make_resolver, make_services, run_filter
from tests.auth.test_dmarc_reports import DAY, ORG, spf_pass
from tests.support.dnsserver import TestDnsServer


class CountingStore(MemoryStore):
    """A memory store that records every write (method and key)."""

    def __init__(self, clock: Any) -> None:
        super().__init__(clock=clock)
        self.writes: list[tuple[str, str]] = []

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.writes.append(("set", key))
        await super().set(key, value, ttl)

    async def list_append(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self.writes.append(("list_append", key))
        await super().list_append(key, value, ttl)


def _feed(flt: DmarcFilter, server: TestDnsServer, store: MemoryStore, now: list[float],
          from_: str, passing: bool = True) -> None:
    services = make_services(make_resolver(server.address), store=store, clock=lambda: now[0])
    ctx = make_context(services)
    raw = f"From: {from_}\nSubject: x\n\nbody\n".encode()
    prior = spf_pass(from_.split("@")[1]) if passing else ()
    run_filter(flt, ctx, Envelope(client_ip="192.0.2.5"), raw, prior)


def test_one_write_per_message_after_the_first(dmarc_dns: TestDnsServer) -> None:
    now = [FIXED_NOW]
    store = CountingStore(clock=lambda: now[0])
    flt = DmarcFilter(DmarcOptions())
    _feed(flt, dmarc_dns, store, now, "a@report.test")
    assert [w[0] for w in store.writes] == ["list_append", "set", "set"]
    store.writes.clear()
    for _ in range(3):
        now[0] += 10
        _feed(flt, dmarc_dns, store, now, "a@report.test")
    assert store.writes == [("list_append", f"dmarc:agg:{DAY}:report.test")] * 3
    store.writes.clear()
    now[0] += REL_REFRESH  # the relationship mark is renewed, the policy is not rewritten
    _feed(flt, dmarc_dns, store, now, "a@report.test")
    assert store.writes == [("list_append", f"dmarc:agg:{DAY}:report.test"),
                            ("set", "dmarc:rel:report.test")]
    store.writes.clear()
    now[0] += 86400  # a new day: its policy key is written again
    _feed(flt, dmarc_dns, store, now, "a@report.test")
    assert [w[0] for w in store.writes] == ["list_append", "set", "set"]


def test_a_new_store_is_written_in_full(dmarc_dns: TestDnsServer) -> None:
    now = [FIXED_NOW]
    flt = DmarcFilter(DmarcOptions())
    _feed(flt, dmarc_dns, CountingStore(clock=lambda: now[0]), now, "a@report.test")
    other = CountingStore(clock=lambda: now[0])
    _feed(flt, dmarc_dns, other, now, "a@report.test")
    assert [w[0] for w in other.writes] == ["list_append", "set", "set"]


def test_same_report_data_as_writing_everything(dmarc_dns: TestDnsServer) -> None:
    now = [FIXED_NOW]
    memo_store, plain_store = MemoryStore(clock=lambda: now[0]), MemoryStore(clock=lambda: now[0])
    flt = DmarcFilter(DmarcOptions())
    for i, (sender, passing) in enumerate([("a@report.test", True), ("b@report.test", False),
                                           ("c@report.test", True), ("x@stranger.test", False)]):
        now[0] = FIXED_NOW + i
        _feed(flt, dmarc_dns, memo_store, now, sender, passing)
        _feed(DmarcFilter(DmarcOptions()), dmarc_dns, plain_store, now, sender, passing)
    resolver = make_resolver(dmarc_dns.address)

    def plans(store: MemoryStore) -> list[tuple[str, list[Any], dict[str, Any], list[str], str]]:
        return [(p.domain, p.rows, p.policy, p.destinations, p.reason)
                for p in asyncio.run(plan_reports(store, resolver, DAY, [], ORG))]

    assert plans(memo_store) == plans(plain_store)
    assert len(plans(memo_store)) == 2
