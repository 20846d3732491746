"""What an external scanner filter (spamassassin, clamav) answers for mail over its size cap.

Owns ``over_size``: such mail is not sent to the scanner; the result says so with a 0-point
symbol and a ``NAME.skipped = size`` fact, so ``rohrpost check`` and the log line show that
the message was not scanned rather than that it was clean. (``[filter.when] max_size`` skips
a filter silently; this cap is the scanner's own and stays visible.)
"""

from __future__ import annotations

from rohrpost.message import Message
from rohrpost.result import FilterResult, Symbol


def over_size(message: Message, max_size: int, symbol: str,
              filter_name: str) -> FilterResult | None:
    """The "not scanned" result when ``message`` exceeds ``max_size``, else None."""
    if message.size <= max_size:
        return None
    reason = f"{message.size} bytes > max_size {max_size}: not scanned"
    return FilterResult(symbols=[Symbol(symbol, 0.0, reason)],
                        facts={f"{filter_name}.skipped": "size"})
