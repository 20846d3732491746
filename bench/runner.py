"""Run every configuration: start its milters, a Postfix, warm up, measure the runs.

Nothing is faked: a configuration that cannot run gets its reason (missing rohrpost filter,
a daemon that did not start, a stalled run) instead of numbers.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import configs, messages, milters
from bench.mta import Mta, RunResult
from bench.procstat import tree_usage
from bench.services import World
from tests.support.daemons import DaemonError

MIME_SIZES = (20_000, 40_000, 60_000, 80_000, 100_000)


@dataclass(frozen=True)
class Options:
    """How much work each configuration gets."""

    messages: int = 2500     # 4 KB messages per run
    mime_messages: int = 300  # 20-100 KB MIME messages per run
    runs: int = 3
    warmup: int = 40
    transport: str = "unix"   # milter sockets: "unix" or "inet" (loopback TCP)


@dataclass
class ConfigResult:
    """Runs of one configuration, or why it did not run."""

    cfg: configs.BenchConfig
    plain: list[RunResult] = field(default_factory=list)
    mime: list[RunResult] = field(default_factory=list)
    rss: int = 0
    pss: int = 0
    check: str = ""
    error: str = ""


@dataclass
class Workloads:
    """Message files on disk: plain/signed 4 KB and plain/signed MIME sets."""

    plain: list[Path]
    signed: list[Path]
    mime: list[Path]
    signed_mime: list[Path]

    def pick(self, workload: str, mime: bool) -> list[Path]:
        """The files of one workload."""
        if workload == "signed":
            return self.signed_mime if mime else self.signed
        return self.mime if mime else self.plain


def write_workloads(world: World) -> Workloads:
    """Generate the message files (DKIM-signed copies with the bench key)."""
    d = world.subdir("messages")
    pem = world.key.read_bytes()

    def save(name: str, data: bytes) -> Path:
        path = d / name
        path.write_bytes(data)
        return path

    plain = messages.plain_message(4096)
    mimes = [messages.mime_message(size, seed) for seed, size in enumerate(MIME_SIZES)]

    def sign(data: bytes) -> bytes:
        return messages.dkim_presign(data, "bench", messages.SENDER_DOMAIN, pem)

    return Workloads(
        plain=[save("plain.eml", plain)],
        signed=[save("signed.eml", sign(plain))],
        mime=[save(f"mime-{i}.eml", m) for i, m in enumerate(mimes)],
        signed_mime=[save(f"signed-mime-{i}.eml", sign(m)) for i, m in enumerate(mimes)],
    )


def check_sample(cfg: configs.BenchConfig, sample: bytes) -> str:
    """``ok`` when every expected string is in the delivered message, else what is missing."""
    if not cfg.expect:
        return "ok (no marker)" if sample else "no message"
    text = sample.decode("latin-1").lower()
    missing = [e for e in cfg.expect if e.lower() not in text]
    return "ok" if not missing else "MISSING " + ", ".join(missing)


def log(msg: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"bench: {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def run_config(world: World, mta: Mta, work: Workloads, cfg: configs.BenchConfig,
               opts: Options) -> ConfigResult:
    """Measure one configuration (all runs)."""
    result = ConfigResult(cfg)
    if cfg.is_rohrpost and (missing := milters.rohrpost_missing(cfg)):
        result.error = "not available (" + ", ".join(m + " missing" for m in missing) + ")"
        return result
    try:
        daemons = milters.start_milters(world, cfg, opts.transport)
    except (DaemonError, OSError) as exc:
        result.error = f"could not start: {exc}"[:300]
        return result
    sessions = [d.session for d in daemons] + [world.backend_session(b) for b in cfg.backends]
    plain_n = max(30, int(opts.messages * cfg.scale))
    mime_n = max(10, int(opts.mime_messages * cfg.scale))
    try:
        mta.use([d.listen.postfix for d in daemons])
        warm = mta.run(work.pick(cfg.workload, False), opts.warmup, sessions)
        if warm.error:
            result.error = f"warm-up failed: {warm.error}"[:300]
            return result
        for i in range(opts.runs):
            for mime, bucket, n in ((False, result.plain, plain_n),
                                    (True, result.mime, mime_n)):
                run = mta.run(work.pick(cfg.workload, mime), n, sessions)
                log(f"{cfg.key} run {i + 1} {'mime' if mime else '4KB'}: {run.messages} "
                    f"msgs {run.rate:.1f}/s filter {run.filter_ms:.2f} ms/msg "
                    f"postfix {run.postfix_ms:.2f} ms/msg {run.error}")
                if run.error:
                    result.error = run.error[:300]
                    return result
                bucket.append(run)
                if not mime:
                    result.check = check_sample(cfg, mta.sample())
        usage = tree_usage(sessions=sessions)
        result.rss, result.pss = usage.rss, usage.pss
    except (DaemonError, OSError) as exc:
        result.error = f"failed: {exc}"[:300]
    finally:
        for daemon in daemons:
            daemon.stop()
    return result
