"""Log handlers, chosen in one place: stderr (text or JSON lines) or syslog (mail facility).

Owns ``setup_logging`` and ``release_held``. Records may carry ``queue_id`` (filters log
through an adapter that sets it); the formatter fills "-" when absent. The pipe commands hold
their stderr lines until the status line is out: Postfix pipe(8) reads the enhanced status
code from the start of the command's output and quotes that output in bounces.
"""

from __future__ import annotations

import logging
import os


class _Defaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "queue_id"):
            record.queue_id = "-"
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        return json.dumps({"time": self.formatTime(record), "level": record.levelname.lower(),
                           "logger": record.name, "queue_id": getattr(record, "queue_id", "-"),
                           "message": record.getMessage()})


_HOLD_CAPACITY = 1000


class _HeldHandler(logging.Handler):
    """Keep records in memory and pass them to ``target`` on ``flush`` (and when closed).

    Like ``logging.handlers.MemoryHandler`` but without importing ``logging.handlers`` (which
    pulls in socket, pickle and queue: pipe-mode start-up cost). Past ``capacity`` records it
    flushes early rather than grow without bound.
    """

    def __init__(self, capacity: int, target: logging.Handler) -> None:
        super().__init__()
        self.capacity = capacity
        self.target = target
        self.buffer: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record (flush when full)."""
        self.buffer.append(record)
        if len(self.buffer) >= self.capacity:
            self.flush()

    def flush(self) -> None:
        """Hand every kept record to the target."""
        with self.lock if self.lock is not None else _NoLock():
            records, self.buffer = self.buffer, []
        for record in records:
            self.target.handle(record)
        self.target.flush()

    def close(self) -> None:
        """Flush, then close (logging.shutdown at exit calls this)."""
        self.flush()
        super().close()


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def setup_logging(level: str = "info", target: str = "stderr", fmt: str = "text",
                  *, hold: bool = False) -> None:
    """Configure the ``rohrpost`` logger once per process (CLI entry points call this).

    ``hold``: keep stderr lines in memory until :func:`release_held` (or exit), so that the
    status line a pipe command prints comes first.
    """
    logger = logging.getLogger("rohrpost")
    logger.setLevel(os.environ.get("ROHRPOST_LOG_LEVEL", level).upper())
    for old in list(logger.handlers):
        logger.removeHandler(old)
    handler: logging.Handler
    if target == "syslog" and os.path.exists("/dev/log"):
        from logging.handlers import SysLogHandler  # socket, pickle, queue: only for syslog

        handler = SysLogHandler("/dev/log", facility=SysLogHandler.LOG_MAIL)
        handler.setFormatter(logging.Formatter("rohrpost[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler()
        if fmt == "json":
            handler.setFormatter(_JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter(
                "%(asctime)s rohrpost[%(process)d] %(levelname)s %(message)s"))
    handler.addFilter(_Defaults())
    if hold and isinstance(handler, logging.StreamHandler):
        held = _HeldHandler(_HOLD_CAPACITY, handler)
        held.addFilter(_Defaults())
        handler = held
    logger.addHandler(handler)
    logger.propagate = False


def release_held() -> None:
    """Write the log lines held by ``setup_logging(hold=True)`` (no-op otherwise)."""
    for handler in logging.getLogger("rohrpost").handlers:
        if isinstance(handler, _HeldHandler):
            handler.flush()
