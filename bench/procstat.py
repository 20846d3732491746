"""CPU time and peak RSS of process trees, read from /proc.

The CPU of a tree is the sum over its live processes of utime + stime + cutime + cstime:
a process that exited and was reaped inside the tree is counted once, in its parent's
cutime/cstime, so the difference of two snapshots is exact for daemons that reap their
children (every daemon the bench starts runs in the foreground, in its own session).
Peak RSS is the sum of VmHWM over the live processes (shared pages are counted in each);
PSS (``Pss`` of /proc/PID/smaps_rollup, current, not peak) divides each shared page among the
processes that map it, so the sum over pre-forked workers counts the interpreter once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat the bench uses (times in seconds)."""

    pid: int
    comm: str
    ppid: int
    session: int
    utime: float
    stime: float
    cutime: float
    cstime: float

    @property
    def cpu(self) -> float:
        """Own plus reaped children's CPU seconds."""
        return self.utime + self.stime + self.cutime + self.cstime


def parse_stat(text: str) -> ProcStat:
    """Parse one /proc/PID/stat line (the command may contain spaces and parentheses)."""
    head, _, rest = text.rpartition(")")
    pid_text, _, comm = head.partition(" (")
    fields = rest.split()
    # fields[0] is state (field 3); ppid is field 4, session 6, utime..cstime 14..17
    return ProcStat(
        pid=int(pid_text), comm=comm, ppid=int(fields[1]), session=int(fields[3]),
        utime=int(fields[11]) / CLK_TCK, stime=int(fields[12]) / CLK_TCK,
        cutime=int(fields[13]) / CLK_TCK, cstime=int(fields[14]) / CLK_TCK,
    )


def read_stat(pid: int) -> ProcStat | None:
    """/proc/PID/stat of a live process, or None if it is gone."""
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def parse_vmhwm(status_text: str) -> int:
    """Peak resident set size in bytes from a /proc/PID/status text (0 if absent)."""
    for line in status_text.splitlines():
        if line.startswith("VmHWM:"):
            parts = line.split()
            return int(parts[1]) * 1024  # always reported in kB
    return 0


def vmhwm(pid: int) -> int:
    """Peak RSS of a live process in bytes (0 when gone or a kernel thread)."""
    try:
        return parse_vmhwm((PROC / str(pid) / "status").read_text())
    except OSError:
        return 0


def parse_pss(rollup_text: str) -> int:
    """Proportional set size in bytes from a /proc/PID/smaps_rollup text (0 if absent)."""
    for line in rollup_text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024  # always reported in kB
    return 0


def pss(pid: int) -> int:
    """Current PSS of a live process in bytes (0 when gone or unreadable)."""
    try:
        return parse_pss((PROC / str(pid) / "smaps_rollup").read_text())
    except OSError:
        return 0


def all_stats() -> list[ProcStat]:
    """A snapshot of every live process."""
    out = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (st := read_stat(int(entry.name))) is not None:
            out.append(st)
    return out


def select_tree(stats: Iterable[ProcStat], roots: Iterable[int] = (),
                sessions: Iterable[int] = ()) -> list[ProcStat]:
    """Processes in one of ``sessions`` or descended from (or equal to) one of ``roots``."""
    stats = list(stats)
    by_pid = {s.pid: s for s in stats}
    roots, sessions = set(roots), set(sessions)
    chosen = []
    for st in stats:
        cur: ProcStat | None = st
        for _ in range(64):  # bounded walk up the parent chain
            if cur is None:
                break
            if cur.pid in roots or cur.session in sessions:
                chosen.append(st)
                break
            cur = by_pid.get(cur.ppid)
    return chosen


@dataclass(frozen=True)
class TreeUsage:
    """CPU seconds, summed peak RSS and summed current PSS of a set of processes."""

    cpu: float
    rss: int
    pids: tuple[int, ...]
    pss: int = 0


def tree_usage(roots: Iterable[int] = (), sessions: Iterable[int] = ()) -> TreeUsage:
    """Current CPU (including reaped children), summed VmHWM and summed PSS of a tree."""
    chosen = select_tree(all_stats(), roots, sessions)
    return TreeUsage(cpu=sum(s.cpu for s in chosen),
                     rss=sum(vmhwm(s.pid) for s in chosen),
                     pids=tuple(sorted(s.pid for s in chosen)),
                     pss=sum(pss(s.pid) for s in chosen))
