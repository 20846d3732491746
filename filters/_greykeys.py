"""Key material for greylisting and rate limits: sender normalization, client networks.

Owns ``normalize_sender`` (lower case; BATV ``prvs=``/``msprvs1=`` tags and SRS0/SRS1 rewriting
undone; digit runs in the local part folded to ``#`` so VERP and per-message bounce addresses of
mailing lists map to one sender) and ``client_network`` (the /24 or /64 a client belongs to;
big senders retry from another address of the same pool). Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

from rohrpost.envelope import strip_brackets

_BATV_RE = re.compile(r"^(?:prvs|msprvs\d*|btv1)=[^=@]*=(?P<local>[^@]+)$", re.I)
_SRS0_RE = re.compile(r"^srs0[=+-][^=]*=[^=]*=(?P<domain>[^=]+)=(?P<local>.+)$", re.I)
_SRS1_RE = re.compile(r"^srs1[=+-].*?==[^=]*=[^=]*=(?P<domain>[^=]+)=(?P<local>.+)$", re.I)
_DIGITS_RE = re.compile(r"\d+")


def normalize_sender(addr: str, *, fold_digits: bool = True) -> str:
    """Return the sender as greylisting compares it; ``""`` (null sender) is ``"<>"``."""
    addr = strip_brackets(addr).lower()
    if not addr:
        return "<>"
    local, at, domain = addr.rpartition("@")
    if not at:
        local, domain = addr, ""
    for pattern in (_SRS1_RE, _SRS0_RE):
        match = pattern.match(local)
        if match:
            local, domain = match.group("local"), match.group("domain")
            break
    match = _BATV_RE.match(local)
    if match:
        local = match.group("local")
    if fold_digits:
        local = _DIGITS_RE.sub("#", local)
    return f"{local}@{domain}" if domain else local


def client_network(ip: str, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    """``192.0.2.0/24`` for ``192.0.2.7``; ``2001:db8::/64`` for IPv6; ``""`` for no IP."""
    try:
        addr = ipaddress.ip_address(ip.strip().strip("[]").removeprefix("IPv6:"))
    except ValueError:
        return ""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def digest(*parts: str) -> str:
    """Return a short, fixed-length key part for arbitrary (hostile) strings."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "replace")).hexdigest()[:32]
