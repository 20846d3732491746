"""Command line of the bench: run the configurations and pipe-mode costs, print and save."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import configs, netns, pipe, report, runner
from bench.mta import Mta
from bench.services import World
from tests.support.daemons import SmtpSink

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Options; ``--quick`` is what ``make bench QUICK=1`` passes."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer messages and runs (< 3 min)")
    p.add_argument("--only", help="comma-separated key prefixes (ceiling and references kept)")
    p.add_argument("--runs", type=int, help="runs per configuration (default 3, quick 2)")
    p.add_argument("--messages", type=int,
                   help="4 KB messages per run (2500, quick 150; 5000 takes ~25 min here)")
    p.add_argument("--mime-messages", type=int, help="MIME messages per run (300, quick 30)")
    p.add_argument("--transport", choices=("unix", "inet"), default="unix",
                   help="milter sockets: unix (default, as Debian configures them) or inet "
                        "(loopback TCP: every milter adds ~85 ms of Nagle/delayed-ACK latency)")
    p.add_argument("--rohrpost-workers", type=int, default=1, metavar="N",
                   help="rohrpost milter worker processes (default 1, rohrpost's default)")
    p.add_argument("--no-pipe", action="store_true", help="skip the pipe-mode measurements")
    p.add_argument("--no-milter", action="store_true", help="skip the Postfix measurements")
    p.add_argument("--no-profile", dest="profile", action="store_false",
                   help="skip the cProfile of the rohrpost configuration furthest behind its "
                        "reference (written beside the results by default)")
    p.add_argument("--profile", action="store_true", default=True,
                   help=argparse.SUPPRESS)  # the default; kept for older command lines
    p.add_argument("--no-netns", action="store_true",
                   help="do not create a network namespace (DNS of C tools then unresolved)")
    p.add_argument("--keep", action="store_true", help="keep the work directory under /tmp")
    p.add_argument("--output", type=Path, help="results file (default bench/results/DATE.md)")
    return p.parse_args(argv)


def options(args: argparse.Namespace) -> runner.Options:
    """Message counts and runs from the arguments."""
    quick = args.quick
    return runner.Options(
        # full: 3 runs x 2,500 = 7,500 messages per configuration in about 15 minutes here;
        # 3 runs of 5,000 would take ~25 (docs/decisions.md, "Bench size")
        messages=args.messages or (150 if quick else 2500),
        mime_messages=args.mime_messages or (30 if quick else 300),
        runs=args.runs or (2 if quick else 3),
        warmup=10 if quick else 40, transport=args.transport)


def header(args: argparse.Namespace, opts: runner.Options, started: float) -> str:
    """What was run, where, how much."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()
    return (f"# rohrpost bench {now}\n\n"
            f"- mode: {'quick' if args.quick else 'full'}; {opts.runs} runs per configuration; "
            f"{opts.messages} x 4 KB and {opts.mime_messages} x 20-100 KB MIME messages per run "
            "(spam rows: 4 %); 20 smtp-source sessions, one message per connection; "
            f"milters on {'Unix sockets' if opts.transport == 'unix' else 'loopback TCP'}; "
            f"rohrpost milter with {args.rohrpost_workers} worker(s)\n"
            f"- machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
            f"Linux {platform.release()}, Python {platform.python_version()}; "
            f"load average at start {load[0]:.2f}\n"
            f"- wall time of the bench: {time.monotonic() - started:.0f} s\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        print("bench: needs root (Postfix's master, network namespace)", file=sys.stderr)
        return 1
    if not netns.inside() and not args.no_netns:
        return netns.run_inside(sys.argv[1:] if argv is None else list(argv))
    started = time.monotonic()
    opts = options(args)
    world = World(dns_port=53, rohrpost_workers=args.rohrpost_workers)
    results: list[runner.ConfigResult] = []
    pipe_rows: list[pipe.PipeResult] = []
    try:
        world.make_key()
        world.start_dns()
        work = runner.write_workloads(world)
        if not args.no_milter:
            with SmtpSink(world.subdir("sink")) as sink, Mta(sink) as mta:
                for cfg in configs.select(configs.all_configs(), args.only):
                    runner.log(f"configuration {cfg.key}")
                    results.append(runner.run_config(world, mta, work, cfg, opts))
        if not args.no_pipe:
            pipe_rows = pipe.measure_all(world, work, 10 if args.quick else 30)
        profile_note = ""
        if args.profile:
            profile_note = pipe.profile_slowest(world, work, results, RESULTS)
    finally:
        world.stop()
        if not args.keep:
            shutil.rmtree(world.dir, ignore_errors=True)
    text = header(args, opts, started)
    if results:
        text += "\n## Through Postfix (milters)\n\n" + report.milter_table(results)
        text += report.LEGEND
    if pipe_rows:
        text += "\n## Pipe mode (one process per message)\n\n" + pipe.table(pipe_rows)
    if profile_note:
        text += "\n" + profile_note + "\n"
    out = args.output or RESULTS / (datetime.date.today().isoformat() +
                                    ("-quick" if args.quick else "") + ".md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    kept = f"; work directory {world.dir}" if args.keep else ""
    print(f"bench: written to {out}{kept}", file=sys.stderr)
    return 0
