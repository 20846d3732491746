#!/usr/bin/env python3
"""What one pipe-mode start costs: ``rohrpost run`` of this checkout beside another one.

    .venv/bin/python -m compileall -q rohrpost filters      # as an installed package has them
    git worktree add /tmp/rp-base main                       # or git archive main | tar -x -C DIR
    .venv/bin/python scripts/pipe_startup.py --base /tmp/rp-base [-n 30] [--callgrind]

Runs each command ``-n`` times, all commands in turn (side by side, so a busy machine slows
every row alike), after one untimed run: ``python3 -c pass``, then for each checkout
``rohrpost --help``, ``rohrpost run`` with the default pipeline.toml and with a DKIM-verify-only
pipeline (a signed 4 KB message, the key answered by tests.support's DNS server on loopback),
through ``bin/rohrpost`` as an MTA starts it. Prints the median wall time (``perf_counter``
around ``subprocess.run``), the median CPU (``RUSAGE_CHILDREN`` deltas) and wall as a multiple
of ``python3 -c pass``; the same stdout is expected from both checkouts. ``--callgrind`` adds
instructions per command (valgrind, deterministic; each checkout's own interpreter started
directly, without the launcher's sh). No root, no daemons, nothing outside a temporary folder.
The machine is shared and noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import base64
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import configs, messages, tools  # noqa: E402
from tests.support.dnsserver import TestDnsServer  # noqa: E402

ENVELOPE = ["-f", messages.SENDER, "-r", messages.RECIPIENT, "--client-ip", "127.0.0.1",
            "--helo", messages.CLIENT_HELO]


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _instructions(argv: list[str], data: bytes, cwd: Path) -> str:
    res = subprocess.run(["valgrind", "--tool=callgrind",  # noqa: S603, S607 - fixed programs
                          "--callgrind-out-file=/dev/null", *argv], input=data,
                         capture_output=True, cwd=cwd, check=False)
    found = re.search(rb"Collected : (\d+)", res.stderr)
    return f"{int(found.group(1)) / 1e6:.1f} M" if found else "?"


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the other checkout")
    parser.add_argument("-n", type=int, default=30, help="timed runs per command")
    parser.add_argument("--callgrind", action="store_true", help="count instructions too")
    opts = parser.parse_args()
    trees = {"base": opts.base.resolve(), "this": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        key = str(work / "key.pem")
        subprocess.run(["openssl", "genrsa", "-out", key, "2048"],  # noqa: S603, S607
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "rsa", "-in", key, "-pubout",  # noqa: S603, S607
                              "-outform", "DER"], check=True, capture_output=True).stdout
        plain = messages.plain_message(4096)
        signed = messages.dkim_presign(plain, "bench", messages.SENDER_DOMAIN,
                                       (work / "key.pem").read_bytes())
        record = f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
        with TestDnsServer({f"{messages.SENDER_DOMAIN}.": [
                (f"bench._domainkey.{messages.SENDER_DOMAIN}.", "TXT", record)]}) as dns:
            shutil.copy(ROOT / "pipeline.toml", work / "pipeline.toml")
            (work / "dkim.toml").write_text(tools.rohrpost_pipeline(
                work / "var", [configs.DKIM_VERIFY], dns_port=dns.port))
            cases: list[tuple[str, list[str], bytes]] = [
                ("python3 -c pass", [sys.executable, "-c", "pass"], b"")]
            for name, tree in trees.items():
                rp = [str(tree / "bin" / "rohrpost")]
                cases += [(f"{name}: rohrpost --help", [*rp, "--help"], b""),
                          (f"{name}: rohrpost run (default pipeline)",
                           [*rp, "run", "-c", "pipeline.toml", *ENVELOPE], plain),
                          (f"{name}: rohrpost run (dkim-verify only)",
                           [*rp, "run", "-c", "dkim.toml", *ENVELOPE], signed)]
            _measure(cases, opts.n, work, opts.callgrind)


def _measure(cases: list[tuple[str, list[str], bytes]], runs: int, work: Path,
             callgrind: bool) -> None:
    wall: dict[str, list[float]] = {name: [] for name, _a, _d in cases}
    cpu: dict[str, list[float]] = {name: [] for name, _a, _d in cases}
    outputs: dict[str, bytes] = {}
    for i in range(runs + 1):
        for name, argv, data in cases:
            c0, t0 = _children_cpu(), time.perf_counter()
            res = subprocess.run(argv, input=data, capture_output=True,  # noqa: S603 - ours
                                 cwd=work, check=False)
            t1, c1 = time.perf_counter(), _children_cpu()
            if res.returncode != 0:
                sys.exit(f"{name}: exit {res.returncode}: {res.stderr.decode()[-500:]}")
            if i == 0:
                outputs[name] = res.stdout
            else:
                wall[name].append(1000 * (t1 - t0))
                cpu[name].append(1000 * (c1 - c0))
    unit = statistics.median(wall[cases[0][0]])
    print(f"{'command':42} {'wall ms':>8} {'CPU ms':>7} {'x pass':>7}"
          + (f" {'instructions':>13}" if callgrind else ""))
    for name, argv, data in cases:
        row = (f"{name:42} {statistics.median(wall[name]):8.1f} "
               f"{statistics.median(cpu[name]):7.1f} {statistics.median(wall[name]) / unit:6.2f}x")
        if callgrind:
            direct = argv if argv[0] == sys.executable else [sys.executable, *argv]
            row += f" {_instructions(direct, data, work):>13}"
        print(row)
    for kind in ("--help", "(default pipeline)", "(dkim-verify only)"):
        base = next(v for k, v in outputs.items() if k.startswith("base") and kind in k)
        this = next(v for k, v in outputs.items() if k.startswith("this") and kind in k)
        print(f"same output {kind}: {base == this}")


if __name__ == "__main__":
    main()
