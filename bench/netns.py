"""Run the bench inside a network namespace of its own, with its own resolv.conf.

The C tools (OpenDKIM, OpenDMARC, pyspf-milter's pyspf, dkimpy-milter) resolve through
/etc/resolv.conf. ``ip netns exec NAME`` bind-mounts /etc/netns/NAME/resolv.conf over it for
the processes it starts, so they ask the bench's DNS server on the namespace's 127.0.0.1:53
and nothing can reach any other network. The system's /etc/resolv.conf is never changed;
/etc/netns/NAME is created and removed by the bench.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ENV_FLAG = "ROHRPOST_BENCH_NETNS"


def inside() -> bool:
    """True when this process was started inside the bench's namespace."""
    return bool(os.environ.get(ENV_FLAG))


def run_inside(argv: Sequence[str]) -> int:
    """Create namespace ``rohrpost-bench-PID``, run ``python -m bench ARGV`` in it, clean up."""
    name = f"rohrpost-bench-{os.getpid()}"
    etc = Path("/etc/netns") / name
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
                       check=True)
        env = {**os.environ, ENV_FLAG: name}
        proc = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-m", "bench",
                               *argv], env=env, check=False)
        return proc.returncode
    finally:
        subprocess.run(["ip", "netns", "pids", name], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False)
        shutil.rmtree(etc, ignore_errors=True)
        if etc.parent.is_dir() and not any(etc.parent.iterdir()):
            etc.parent.rmdir()
