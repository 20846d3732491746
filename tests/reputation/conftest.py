"""Fixtures for the reputation filters (dnsbl, uribl, greylist, ratelimit).

``async def`` tests run through ``asyncio.run`` on a fresh loop each (as in tests/store), so
redis.asyncio clients and dnspython sockets never outlive their loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from rohrpost.dns import DnsConfig, Resolver
from rohrpost.envelope import Envelope
from rohrpost.filter import Context, Filter, Mail, Services
from rohrpost.message import Message
from rohrpost.options import build_options
from rohrpost.registry import load_filter_class
from rohrpost.result import FilterResult
from rohrpost.store import Store
from rohrpost.store.memory import MemoryStore
from tests.support.clock import FakeClock
from tests.support.dnsserver import TestDnsServer


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """Run coroutine test functions on a fresh event loop."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True



@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_filter(name: str, **options: Any) -> Filter:
    cls = load_filter_class(name)
    return cls(build_options(cls.Options, options))


def make_services(*, server: TestDnsServer | None = None, clock: Callable[[], float] | None = None,
                  store: Store | None = None, dns_timeout: float = 1.0) -> Services:
    def resolver() -> Resolver:
        assert server is not None, "this test has no DNS server"
        return Resolver(DnsConfig(servers=(server.address,), timeout=dns_timeout))

    def make_store() -> Store:
        return store if store is not None else MemoryStore(clock=clock or (lambda: 0.0))

    return Services(resolver_factory=resolver, store_factory=make_store, clock=clock)


def make_context(services: Services, trusted: Sequence[str] = ()) -> Context:
    log = logging.LoggerAdapter(logging.getLogger("rohrpost.test"), {"queue_id": "Q1"})
    settings: Mapping[str, Any] = {"trusted_networks": list(trusted)}
    return Context(services, log, "mx.example.net", "mx.example.net", settings)


async def run_check(flt: Filter, ctx: Context, envelope: Envelope, *,
                    message: Message | None = None, rcpt: str = "",
                    prior: Sequence[tuple[str, FilterResult]] = ()) -> FilterResult:
    return await flt.check(ctx, Mail(envelope, message, prior, rcpt))
