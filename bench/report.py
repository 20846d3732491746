"""The result table: one row per configuration, ratios to the ceiling and the reference."""

from __future__ import annotations

from collections.abc import Sequence

from bench.mta import RunResult
from bench.runner import ConfigResult
from bench.stats import Summary, fmt_num, fmt_ratio, markdown_table, ratio, summarize

HEADER = ("job", "tool", "msg/s 4KB", "x ceiling", "x ref", "CPU ms/msg", "CPU x ref",
          "msg/s MIME", "CPU ms/msg MIME", "peak RSS MB", "PSS MB", "Postfix ms/msg", "check")


def _rates(runs: Sequence[RunResult]) -> Summary:
    return summarize([r.rate for r in runs])


def _cpu(runs: Sequence[RunResult]) -> Summary:
    return summarize([r.filter_ms for r in runs])


def rows(results: Sequence[ConfigResult]) -> list[list[str]]:
    """Table rows; ratios use medians of the same workload."""
    by_key = {r.cfg.key: r for r in results}
    ceiling = by_key.get("ceiling")
    ceil_rate = _rates(ceiling.plain).median if ceiling and ceiling.plain else None
    out = []
    for res in results:
        cfg = res.cfg
        if res.error or not res.plain:
            out.append([cfg.job, cfg.tool, short_error(res.error or "no runs")] + ["-"] * 9
                       + [res.check])
            continue
        rate, cpu = _rates(res.plain), _cpu(res.plain)
        ref = by_key.get(cfg.reference) if cfg.reference else None
        ref_ok = ref is not None and not ref.error and bool(ref.plain)
        ref_rate = _rates(ref.plain).median if ref_ok and ref else None
        ref_cpu = _cpu(ref.plain).median if ref_ok and ref else None
        postfix = summarize([r.postfix_ms for r in res.plain])
        out.append([
            cfg.job, cfg.tool, rate.fmt(), fmt_ratio(ratio(rate.median, ceil_rate)),
            fmt_ratio(ratio(rate.median, ref_rate)), cpu.fmt(2),
            fmt_ratio(ratio(cpu.median, ref_cpu)),
            _rates(res.mime).fmt(), _cpu(res.mime).fmt(2),
            fmt_num(res.rss / 2**20, 0) if res.rss else "-",
            fmt_num(res.pss / 2**20, 0) if res.pss else "-", postfix.fmt(2), res.check])
    return out


def short_error(text: str, limit: int = 70) -> str:
    """An error cut to ``limit`` characters for the table (the full text goes in the notes)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def notes(results: Sequence[ConfigResult]) -> str:
    """Full error texts and per-row notes, below the table."""
    lines = []
    for res in results:
        if res.error and len(" ".join(res.error.split())) > 70:
            lines.append(f"- {res.cfg.job} / {res.cfg.tool}: {' '.join(res.error.split())}")
        if res.cfg.notes:
            lines.append(f"- {res.cfg.job} / {res.cfg.tool}: {res.cfg.notes}")
    return ("\nNotes:\n" + "\n".join(lines) + "\n") if lines else ""


def milter_table(results: Sequence[ConfigResult]) -> str:
    """The Markdown table of the milter configurations, with notes."""
    return markdown_table(HEADER, rows(results)) + notes(results)


LEGEND = """
msg/s: messages per second from smtp-source through Postfix into smtp-sink (median ±half the
range of the runs). x ceiling: against Postfix without milters; x ref: against the reference
tool of the same job (first row of the job). CPU ms/msg: CPU of the filter processes and their
backends (clamd, spamd, Redis) per message = CPU seconds per 1,000 messages. peak RSS: sum of
VmHWM of those processes (shared pages counted in each); PSS: sum of their proportional set
size after the runs (a shared page split among the processes that map it). check: the
delivered message carries the filter's mark.
"""
