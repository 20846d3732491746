"""Median, spread and ratios of repeated runs, and the fixed-width table the bench prints.

Pure functions only: unit-tested by tests/bench/test_bench_helpers.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    """Median of several runs and their spread (max - min) relative to the median."""

    median: float
    spread: float  # (max - min) / median, 0.0 for one run
    runs: int

    def fmt(self, digits: int = 1) -> str:
        """``123.4 ±5%`` (``±`` is half the relative range), or ``-`` when there is no data."""
        if self.runs == 0:
            return "-"
        text = f"{self.median:.{digits}f}"
        if self.runs > 1:
            text += f" ±{self.spread * 50:.0f}%"
        return text


def summarize(values: Sequence[float]) -> Summary:
    """Summary of ``values``: median, relative range, number of runs (empty: all zero)."""
    if not values:
        return Summary(0.0, 0.0, 0)
    med = float(statistics.median(values))
    spread = (max(values) - min(values)) / med if med else 0.0
    return Summary(med, spread, len(values))


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or None when either is missing or the reference is zero."""
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def fmt_ratio(value: float | None) -> str:
    """``0.87x`` or ``-``."""
    return "-" if value is None else f"{value:.2f}x"


def fmt_num(value: float | None, digits: int = 1) -> str:
    """A number with ``digits`` decimals, or ``-`` for None."""
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with columns padded to equal width (readable as plain text too).

    Rows shorter than the header are padded with empty cells; ``|`` in cells is escaped.
    """
    width = len(header)
    cells = [[c.replace("|", "\\|") for c in header]]
    for row in rows:
        if len(row) > width:
            raise ValueError(f"row has {len(row)} cells, header {width}: {row!r}")
        cells.append([c.replace("|", "\\|") for c in row] + [""] * (width - len(row)))
    widths = [max(len(r[i]) for r in cells) for i in range(width)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"
