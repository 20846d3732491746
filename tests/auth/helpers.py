"""Shared helpers of the authentication tests: contexts, resolvers, one-filter runs.

Owns ``make_context``, ``make_resolver`` and ``run_filter``: a real ``Resolver`` pointed at a
loopback ``TestDnsServer``, a memory state store, and a fixed clock, so a filter runs exactly as
in the pipeline without asking the internet's DNS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from rohrpost.dns import DnsConfig, Resolver
from rohrpost.envelope import Envelope
from rohrpost.filter import Context, Filter, Mail, Services
from rohrpost.message import Message
from rohrpost.result import FilterResult
from rohrpost.store.memory import MemoryStore

FIXED_NOW = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


def make_resolver(address: str, timeout: float = 1.0) -> Resolver:
    return Resolver(DnsConfig(servers=(address,), timeout=timeout))


def make_services(resolver: Resolver | None, store: Any = None,
                  clock: Callable[[], float] | None = None) -> Services:
    store = store if store is not None else MemoryStore(clock=clock or (lambda: FIXED_NOW))
    return Services(resolver_factory=(lambda: resolver) if resolver is not None else None,
                    store_factory=lambda: store, clock=clock or (lambda: FIXED_NOW))


def make_context(services: Services, trusted: tuple[str, ...] = ("127.0.0.0/8",),
                 authserv_id: str = "mx.test") -> Context:
    log = logging.LoggerAdapter(logging.getLogger("tests.auth"), {"queue_id": "-"})
    return Context(services, log, authserv_id, "mx.test", {"trusted_networks": list(trusted)})


def run_filter(flt: Filter, ctx: Context, envelope: Envelope, message: bytes | None = None,
               prior: tuple[tuple[str, FilterResult], ...] = ()) -> FilterResult:
    mail = Mail(envelope, Message(message) if message is not None else None, prior)
    return asyncio.run(flt.check(ctx, mail))
