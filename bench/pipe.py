"""Pipe mode: what one message costs when a process is started for it (procmail, pipe(8)).

Each command runs ``repeat`` times on the same message; wall time per invocation and CPU from
``resource.getrusage(RUSAGE_CHILDREN)`` deltas (the client process), plus the CPU of the
server it talks to (spamd, clamd) from /proc. Also ``--profile``: cProfile of the slowest
rohrpost configuration's pipeline, in-process over many messages (see :mod:`bench.profiled`).
"""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import configs, messages, milters, procstat, tools
from bench.services import World
from bench.stats import fmt_num, markdown_table, summarize

REPO = milters.REPO
ENVELOPE = ["-f", messages.SENDER, "-r", messages.RECIPIENT, "--client-ip", "127.0.0.1",
            "--helo", messages.CLIENT_HELO]


@dataclass
class PipeCase:
    """One command measured in pipe mode."""

    name: str
    argv: list[str]
    stdin: Path | None
    server: str = ""  # backend whose CPU is added ("spamd", "clamd")
    needs: tuple[str, ...] = ()  # rohrpost filters it needs


@dataclass
class PipeResult:
    """Per-invocation wall and CPU milliseconds of one case, or why it did not run."""

    case: PipeCase
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    server_ms: float | None = None
    error: str = ""


def _rusage_children() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(case: PipeCase, repeat: int, server_session: int | None = None) -> PipeResult:
    """Run ``case`` ``repeat`` times (after one untimed warm-up run)."""
    result = PipeResult(case)
    data = case.stdin.read_bytes() if case.stdin else b""
    server0 = 0.0
    for i in range(repeat + 1):
        if i == 1 and server_session is not None:
            server0 = procstat.tree_usage(sessions=[server_session]).cpu
        c0, t0 = _rusage_children(), time.perf_counter()
        proc = subprocess.run(case.argv, input=data, capture_output=True, check=False,
                              cwd=REPO)
        t1, c1 = time.perf_counter(), _rusage_children()
        if proc.returncode not in (0, 1):  # spamc -c / clamdscan give 1 for "found"
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            result.error = f"exit {proc.returncode}: {' '.join(err[-2:])[:200]}"
            return result
        if i > 0:
            result.wall_ms.append(1000 * (t1 - t0))
            result.cpu_ms.append(1000 * (c1 - c0))
    if server_session is not None:
        used = procstat.tree_usage(sessions=[server_session]).cpu - server0
        result.server_ms = 1000 * used / repeat
    return result


def cases(world: World, work: Path, signed: Path, dkim_toml: Path,
          default_toml: Path) -> list[PipeCase]:
    """The commands compared, all on the same 4 KB message (DKIM ones on its signed copy)."""
    rp = milters.rohrpost_argv()
    clamd_conf = world.dir / "clamd" / "clamd.conf"
    return [
        PipeCase("python3 -c pass", [sys.executable, "-c", "pass"], None),
        PipeCase("rohrpost --help (cold start)", [*rp, "--help"], None),
        PipeCase("rohrpost run (default pipeline.toml)",
                 [*rp, "run", "-c", str(default_toml), *ENVELOPE], work),
        PipeCase("rohrpost run (DKIM-verify-only pipeline)",
                 [*rp, "run", "-c", str(dkim_toml), *ENVELOPE], signed,
                 needs=("dkim-verify",)),
        PipeCase("rohrpost filter dkim-verify",
                 [*rp, "filter", "dkim-verify", "-c", str(dkim_toml), *ENVELOPE], signed,
                 needs=("dkim-verify",)),
        PipeCase("dkimpy dkimverify script", [str(Path(sys.executable).parent / "dkimverify")],
                 signed),
        PipeCase("spamc (spamd)", ["spamc", "-d", "127.0.0.1", "-p",
                                   str(world.backend_port("spamd")), "-c"], work,
                 server="spamd"),
        PipeCase("clamdscan --stream (clamd)",
                 ["clamdscan", f"--config-file={clamd_conf}", "--stream", "--no-summary", "-"],
                 work, server="clamd"),
    ]


def compile_bytecode() -> None:
    """Write rohrpost's .pyc files first, as an installed package has them.

    With ``PYTHONDONTWRITEBYTECODE`` set (as in this machine's environment) a checkout never
    gets them and every invocation compiles ~30 modules again: ~20 ms per start here that no
    installed rohrpost pays.
    """
    import compileall

    for folder in ("rohrpost", "filters"):
        compileall.compile_dir(str(REPO / folder), quiet=1)


def measure_all(world: World, work: object, repeat: int) -> list[PipeResult]:
    """Measure every pipe case; missing tools and filters become errors, not numbers."""
    from bench.runner import Workloads, log

    assert isinstance(work, Workloads)
    d = world.subdir("pipe")
    default_toml = d / "pipeline.toml"
    default_toml.write_text((REPO / "pipeline.toml").read_text())
    dkim_toml = d / "dkim.toml"
    dkim_toml.write_text(tools.rohrpost_pipeline(d / "var", [configs.DKIM_VERIFY]))
    from rohrpost import registry

    have = set(registry.available())
    compile_bytecode()
    out = []
    for case in cases(world, work.plain[0], work.signed[0], dkim_toml, default_toml):
        missing = [n for n in case.needs if n not in have]
        if missing:
            out.append(PipeResult(case, error="not available (filter "
                                  + ", ".join(missing) + " missing)"))
            continue
        if shutil.which(case.argv[0]) is None and not Path(case.argv[0]).exists():
            out.append(PipeResult(case, error=f"{case.argv[0]} not installed"))
            continue
        session = world.backend_session(case.server) if case.server else None
        res = measure(case, repeat, session)
        log(f"pipe {case.name}: wall {summarize(res.wall_ms).fmt()} ms "
            f"cpu {summarize(res.cpu_ms).fmt()} ms {res.error}")
        out.append(res)
    return out


def table(results: Sequence[PipeResult]) -> str:
    """Markdown table of the pipe-mode results."""
    header = ("command", "wall ms/msg", "CPU ms/msg (process)", "server CPU ms/msg",
              "x python3 -c pass (wall)")
    base = next((summarize(r.wall_ms).median for r in results
                 if r.case.name.startswith("python3") and r.wall_ms), None)
    rows = []
    for r in results:
        if r.error:
            rows.append([r.case.name, r.error, "-", "-", "-"])
            continue
        wall = summarize(r.wall_ms)
        rows.append([r.case.name, wall.fmt(), summarize(r.cpu_ms).fmt(),
                     fmt_num(r.server_ms), f"{wall.median / base:.1f}x" if base else "-"])
    return markdown_table(header, rows) + (
        "\nwall: median ±half range of the invocations; CPU: getrusage(RUSAGE_CHILDREN) per "
        "invocation; server CPU: spamd/clamd process tree (/proc) per message.\n")


def profile_slowest(world: World, work: object, results: Sequence[object],
                    outdir: Path) -> str:
    """CProfile the rohrpost configuration with the highest CPU per message, in-process."""
    from bench.runner import ConfigResult, Workloads

    assert isinstance(work, Workloads)
    done = [r for r in results if isinstance(r, ConfigResult) and r.cfg.is_rohrpost
            and r.plain and not r.error]
    if not done:
        return "Profile: no rohrpost configuration ran, nothing to profile."
    by_key = {r.cfg.key: r for r in results if isinstance(r, ConfigResult)}

    def behind(res: ConfigResult) -> float:
        """CPU per message relative to the reference tool (how far rohrpost is behind)."""
        cpu = summarize([x.filter_ms for x in res.plain]).median
        ref = by_key.get(res.cfg.reference or "")
        ref_cpu = summarize([x.filter_ms for x in ref.plain]).median if ref and ref.plain else 0
        return cpu / ref_cpu if ref_cpu else 0.0

    slowest = max(done, key=behind)
    cfg = slowest.cfg
    d = world.subdir("profile")
    toml = d / "pipeline.toml"
    clamd = world.backend_port("clamd") if "clamd" in cfg.backends else None
    spamd = world.backend_port("spamd") if "spamd" in cfg.backends else None
    toml.write_text(configs.render_rohrpost(cfg, d / "var", world.key, clamd_port=clamd,
                                            spamd_port=spamd))
    stamp = time.strftime("%Y-%m-%d")
    prof = outdir / f"{stamp}-profile-{cfg.key}.prof"
    text = outdir / f"{stamp}-profile-{cfg.key}.txt"
    count = 200 if "spamd" not in cfg.backends else 20
    proc = subprocess.run([sys.executable, "-m", "bench.profiled", str(toml),
                           str(work.pick(cfg.workload, False)[0]), str(count), str(prof),
                           str(text)], capture_output=True, text=True, check=False, cwd=REPO)
    if proc.returncode:
        return f"Profile of {cfg.key} failed: {proc.stderr.strip()[-300:]}"
    return f"Profile of {cfg.key} ({count} messages in-process): {prof.name}, {text.name}"
