"""Sorting delivery for the pipe commands (``run --deliver``, ``deliver -c``).

Owns ``load_sorting`` and ``deliver_sorted_code``: the glue between a command, the
``[deliver]`` table and ``rohrpost.deliver.sorting``. Problems that are not a delivery verdict
(a bad table, an unreachable state store) exit 75 so that the MTA keeps the mail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rohrpost.cli.common import fail, report_exit
from rohrpost.config import Config, ConfigError
from rohrpost.envelope import Envelope
from rohrpost.sysexits import EX_TEMPFAIL

if TYPE_CHECKING:
    from rohrpost.deliver.sorting import DeliverSection


def load_sorting(config: Config) -> DeliverSection:
    """The validated ``[deliver]`` table, or exit 75 with the located error."""
    from rohrpost.deliver.sorting import load_deliver_section

    try:
        return load_deliver_section(config)
    except ConfigError as exc:
        fail(EX_TEMPFAIL, "4.3.5", f"configuration error: {exc}")


async def deliver_sorted_code(config: Config, section: DeliverSection, spec: str, raw: bytes,
                              envelope: Envelope, *, spam: bool | None) -> int:
    """Deliver ``raw`` sorted into ``spec``; print failures; return the sysexits code."""
    from rohrpost.deliver import DestinationError, parse_destination
    from rohrpost.deliver.sorting import deliver_sorted
    from rohrpost.services import make_services
    from rohrpost.store import StoreError

    try:
        dest = parse_destination(spec)
    except DestinationError as exc:
        fail(EX_TEMPFAIL, "4.3.5", f"bad destination: {exc}")
    services = make_services(config)
    try:
        store = services.store if section.dedup else None
        result = await deliver_sorted(section, dest, raw, envelope, spam=spam, store=store)
    except StoreError as exc:
        fail(EX_TEMPFAIL, "4.3.0", f"state store unavailable for duplicate suppression: {exc}")
    finally:
        await services.aclose()
    return report_exit(result.report)
