"""``rohrpost.pipeline.in_networks`` with the parsed networks kept, for ``spf`` and ``dmarc``.

Owns ``in_networks``: the same answer as the pipeline's function (an address that does not
parse is in no network; a network that does not parse is skipped), but the CIDR strings of a
setting are parsed once per distinct list instead of on every message (two ``ip_network`` calls
for the default trusted networks were 10 us per filter and message; docs/performance.md,
finding 22).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

__all__ = ["in_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=64)
def _networks(specs: tuple[str, ...]) -> tuple[Network, ...]:
    nets = []
    for net in specs:
        try:
            nets.append(ipaddress.ip_network(net, strict=False))
        except ValueError:
            continue
    return tuple(nets)


def in_networks(ip: str, networks: Sequence[str]) -> bool:
    """True when ``ip`` lies in one of ``networks`` (CIDR strings); False for no/bad IP."""
    try:
        addr = ipaddress.ip_address(ip.strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return False
    return any(addr in net for net in _networks(tuple(networks)))
