"""``rohrpost fetch --daemon``: run accounts forever, by interval with jitter or IMAP IDLE.

Owns ``run_accounts`` (one pass over some accounts) and ``run_daemon`` (one thread per
account, each with its own event loop, pipeline and services; SIGTERM/SIGINT set one stop
event that every loop checks between messages and at least once a second while waiting, so the
daemon ends cleanly after the message in hand). With ``idle = true`` and a server that
announces IDLE, a second connection idles on the account's first folder and a new message
starts a run within a second or two; other folders are fetched on every run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from rohrpost.config import Config
from rohrpost.deliver.sorting import DeliverSection
from rohrpost.fetch.accounts import Account, FetchError
from rohrpost.fetch.job import FetchJob, FetchStats, Progress, jittered, open_mailbox
from rohrpost.store import StoreError

if TYPE_CHECKING:
    from rohrpost.fetch.imap import ImapMailbox

log = logging.getLogger("rohrpost.fetch")
Report = Callable[[Account, FetchStats | None, BaseException | None], None]


async def run_accounts(config: Config, accounts: Sequence[Account], sorting: DeliverSection,
                       *, ca_file: str, report: Report, progress: Progress | None = None,
                       stop: threading.Event | None = None) -> bool:
    """Fetch each account once; ``report`` gets stats or an error text. True if all ran."""
    from rohrpost.pipeline import Pipeline
    from rohrpost.services import make_services

    services = make_services(config)
    pipeline = Pipeline.build(config)
    ok = True
    try:
        for acct in accounts:
            job = FetchJob(config, acct, pipeline, services, sorting, ca_file=ca_file,
                           progress=progress, stop=stop)
            try:
                report(acct, await job.run(), None)
            except (FetchError, StoreError, OSError) as exc:
                ok = False
                report(acct, job.stats, exc)
    finally:
        await pipeline.aclose()
        await services.aclose()
    return ok


async def account_loop(config: Config, acct: Account, sorting: DeliverSection, *,
                       ca_file: str, report: Report, stop: threading.Event) -> None:
    """Fetch ``acct`` until ``stop``: run, then IDLE or sleep ``interval`` ± ``jitter``."""
    idler: ImapMailbox | None = None
    use_idle = acct.protocol == "imap" and acct.idle
    failures = 0
    try:
        while not stop.is_set():
            wait = jittered(acct.interval, acct.jitter, random.random)
            try:
                if use_idle and idler is None:
                    idler = _open_idler(acct, ca_file)
                    use_idle = idler is not None
                ok = await run_accounts(config, [acct], sorting, ca_file=ca_file, report=report,
                                        stop=stop)
                failures = 0 if ok else failures + 1
                if idler is not None and failures == 0:
                    idler.idle(acct.folders[0], wait, stop)
                    continue
            except (FetchError, OSError) as exc:
                failures += 1
                report(acct, None, exc)
                if idler is not None:
                    idler.close()
                    idler = None
            if failures:
                wait = min(wait, 30.0 * 2 ** min(failures, 6))
            stop.wait(wait)
    finally:
        if idler is not None:
            idler.close()


def _open_idler(acct: Account, ca_file: str) -> ImapMailbox | None:
    from rohrpost.fetch.imap import ImapMailbox

    box = open_mailbox(acct, ca_file)
    if not isinstance(box, ImapMailbox) or not box.can_idle:
        log.info("%s: server has no IDLE; polling every %gs", acct.name, acct.interval)
        box.close()
        return None
    box.select(acct.folders[0])
    return box


def run_daemon(config: Config, accounts: Sequence[Account], sorting: DeliverSection, *,
               ca_file: str, report: Report, stop: threading.Event | None = None) -> None:
    """Run every account in its own thread until SIGTERM/SIGINT (or ``stop``) ends them."""
    stop = stop or threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("signal %d: finishing the current message, then exiting", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def thread_main(acct: Account) -> None:
        try:
            asyncio.run(account_loop(config, acct, sorting, ca_file=ca_file, report=report,
                                     stop=stop))
        except Exception:
            log.exception("%s: fetch loop crashed", acct.name)
            stop.set()

    threads = [threading.Thread(target=thread_main, args=(a,), name=f"fetch-{a.name}")
               for a in accounts]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.5)
