"""One measurement: smtp-source -> throwaway Postfix (+ milters) -> smtp-sink.

Throughput is messages delivered to smtp-sink divided by the time from the first connection
of smtp-source to the last message in the sink; the filters' CPU and the Postfix CPU are
/proc deltas of their process trees over the same interval.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench import messages, procstat
from tests.support.daemons import DaemonError, PostfixInstance, SmtpSink, daemon_dir

SESSIONS = 20
STALL_SECONDS = 30.0


@dataclass(frozen=True)
class RunResult:
    """One run of one workload."""

    messages: int
    seconds: float
    filter_cpu: float
    postfix_cpu: float
    error: str = ""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else 0.0

    @property
    def filter_ms(self) -> float:
        """Filter CPU milliseconds per message (= CPU seconds per 1,000 messages)."""
        return 1000 * self.filter_cpu / self.messages if self.messages else 0.0

    @property
    def postfix_ms(self) -> float:
        """Postfix CPU milliseconds per message."""
        return 1000 * self.postfix_cpu / self.messages if self.messages else 0.0


def split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal non-negative integers (sum preserved)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


class Mta:
    """One Postfix instance relaying to smtp-sink; :meth:`use` switches the milters (reload).

    Postfix is started once for the whole bench (a start and stop per configuration cost
    several seconds each); after a reload the warm-up run flushes smtpd processes that still
    had the previous configuration.
    """

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.postfix = PostfixInstance(
            daemon_dir("pf"), relay_port=sink.port, milters=[],
            extra_main={
                "default_process_limit": "200",
                "smtpd_client_connection_count_limit": "0",
                "default_destination_concurrency_limit": "20",
                "milter_command_timeout": "60s",
                "milter_content_timeout": "300s",
            })

    def __enter__(self) -> Mta:
        self.postfix.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.postfix.stop()
        shutil.rmtree(self.postfix.dir, ignore_errors=True)

    def use(self, milters: list[str]) -> None:
        """Set ``smtpd_milters`` (``unix:PATH`` or ``inet:HOST:PORT``) and reload Postfix."""
        self.postfix.milters = list(milters)
        self.postfix.reload()
        time.sleep(0.5)

    def master_pid(self) -> int:
        """Postfix master's pid (its tree is Postfix's CPU)."""
        pid = self.postfix.master_pid()
        if pid is None:
            raise DaemonError("Postfix master pid not found")
        return pid

    def _clear_sink(self) -> None:
        for entry in os.scandir(self.sink.dir):
            os.unlink(entry.path)

    def _count(self) -> int:
        return sum(1 for _ in os.scandir(self.sink.dir))

    def sample(self) -> bytes:
        """One delivered message (the first in the sink), for the sanity check."""
        files = sorted(os.scandir(self.sink.dir), key=lambda e: e.name)
        return Path(files[0].path).read_bytes() if files else b""

    def run(self, files: list[Path], count: int, filter_sessions: list[int]) -> RunResult:
        """Send ``count`` messages spread over ``files`` with 20 sessions; wait for delivery."""
        self._clear_sink()
        master = self.master_pid()
        f0 = procstat.tree_usage(sessions=filter_sessions).cpu
        p0 = procstat.tree_usage(roots=[master]).cpu
        t0 = time.monotonic()
        procs = []
        for file, n, s in zip(files, split(count, len(files)),
                              split(SESSIONS, len(files)), strict=True):
            if n == 0:
                continue
            procs.append(subprocess.Popen(
                ["smtp-source", "-s", str(max(1, s)), "-m", str(n), "-f", messages.SENDER,
                 "-t", messages.RECIPIENT, "-M", messages.CLIENT_HELO, "-F", str(file),
                 f"127.0.0.1:{self.postfix.port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        error = ""
        last, last_change = -1, time.monotonic()
        while True:
            n = self._count()
            now = time.monotonic()
            if n >= count:
                break
            if n != last:
                last, last_change = n, now
            elif now - last_change > STALL_SECONDS:
                error = f"stalled at {n}/{count} delivered; {self._log_hint()}"
                break
            time.sleep(0.02)
        t1 = time.monotonic()
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode and not error:
                error = f"smtp-source exit {proc.returncode}: {err.decode(errors='replace')[:200]}"
        f1 = procstat.tree_usage(sessions=filter_sessions).cpu
        p1 = procstat.tree_usage(roots=[master]).cpu
        return RunResult(messages=min(self._count(), count), seconds=t1 - t0,
                         filter_cpu=f1 - f0, postfix_cpu=p1 - p0, error=error)

    def _log_hint(self) -> str:
        lines = [ln for ln in self.postfix.log_text().splitlines()
                 if "milter" in ln or "reject" in ln or "warning" in ln or "fatal" in ln]
        return (" / ".join(lines[-2:]) or "no milter lines in maillog")[:400]
