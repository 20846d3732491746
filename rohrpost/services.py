"""Build the per-process ``Services`` (DNS resolver, state store, clock) from a ``Config``.

Owns ``make_services``. The resolver and store modules are imported inside the factories, so a
pipeline whose filters never touch DNS or state never imports dnspython or redis.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from rohrpost.config import Config
from rohrpost.filter import Services


def make_services(config: Config, clock: Callable[[], float] | None = None) -> Services:
    """Services for one process, created lazily from the configuration."""

    def resolver():  # type: ignore[no-untyped-def]  # noqa: ANN202 - lazy import keeps start-up fast
        from rohrpost.dns import DnsConfig, Resolver

        dns = config.dns
        return Resolver(DnsConfig(servers=tuple(dns.servers), timeout=dns.timeout,
                                  cache_size=dns.cache_size))

    def store():  # type: ignore[no-untyped-def]  # noqa: ANN202
        from rohrpost.store import open_store

        st = config.state
        table = {"backend": st.backend, "url": st.url, "prefix": st.prefix, "timeout": st.timeout,
                 "synchronous": st.synchronous}
        if st.path:
            table["path"] = config.resolve_path(st.path)
        if st.backend == "sqlite":  # memory and redis write nothing under var_dir
            os.makedirs(config.var_dir, mode=0o700, exist_ok=True)
        kwargs = {"clock": clock} if clock is not None else {}
        return open_store(table, base_dir=config.var_dir, **kwargs)

    return Services(resolver_factory=resolver, store_factory=store, clock=clock)
