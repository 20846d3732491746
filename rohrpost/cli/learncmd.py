"""``rohrpost learn``: teach spamd's Bayes with TELL, from message files and Maildirs.

Owns the learn command: collecting message files (a file, a Maildir's cur/ and new/, or the
plain files of a folder), sending each to spamd as ``TELL`` with ``Message-class: spam|ham`` and
``Set: local``, a progress bar on stderr for large folders, and the summary counts. spamd must
run with ``--allow-tell``. The SPAMC client lives with the spamassassin filter
(``rohrpost.filters._spamc``) and is imported through the filter registry's package, so this
module holds no protocol code. Exit status: 0 when nothing failed, 75 (EX_TEMPFAIL) when spamd
failed on some message, 66 (EX_NOINPUT) when only files could not be read.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import click

from rohrpost.cli.common import config_option, load_or_exit
from rohrpost.options import OptionError, build_options
from rohrpost.sysexits import EX_CONFIG, EX_NOINPUT, EX_OK, EX_TEMPFAIL

PROGRESS_MIN = 20  # show a progress bar from this many messages on


class _TellResult(Protocol):
    @property
    def changed(self) -> bool: ...


class _Client(Protocol):
    async def tell(self, message: bytes, message_class: str, *, remove: bool = False
                   ) -> _TellResult: ...


@dataclass
class Counts:
    """What happened to the messages of one run."""

    learned: int = 0
    known: int = 0
    skipped: int = 0
    failed_spamd: int = 0
    failed_read: int = 0

    @property
    def failed(self) -> int:
        """Messages that were not learned because of an error."""
        return self.failed_spamd + self.failed_read


def message_files(path: str) -> Iterator[str]:
    """Yield the message files under ``path``.

    That is the file itself, a Maildir's cur/ and new/, or the regular non-hidden files of a
    plain folder (sorted, not recursive).
    """
    if not os.path.isdir(path):
        yield path
        return
    subdirs = [os.path.join(path, d) for d in ("cur", "new")]
    folders = [d for d in subdirs if os.path.isdir(d)] or [path]
    for folder in folders:
        for name in sorted(os.listdir(folder)):
            full = os.path.join(folder, name)
            if not name.startswith(".") and os.path.isfile(full):
                yield full


def _client(config_path: str | None, host: str | None, port: int | None, socket: str | None,
            user: str | None) -> tuple[_Client, type[Exception]]:
    """Build a SPAMC client from the first spamassassin [[filter]] (if any) and the flags."""
    spamc = importlib.import_module("rohrpost.filters._spamc")
    sa = importlib.import_module("rohrpost.filters.spamassassin")
    sockets = importlib.import_module("rohrpost.filters._sockets")
    table: dict[str, Any] = {}
    if config_path is not None or os.environ.get("ROHRPOST_CONFIG"):
        config = load_or_exit(config_path, mta_facing=False)
        spec = next((s for s in config.filters if s.use == "spamassassin"), None)
        table = dict(spec.options) if spec is not None else {}
    flags = {"host": host, "port": port, "socket": socket, "user": user}
    table.update({k: v for k, v in flags.items() if v is not None})
    if socket is None and (host is not None or port is not None):
        table.pop("socket", None)  # flags name a TCP spamd: the config's socket must not win
    try:
        opts = build_options(sa.FILTER.Options, table, "spamassassin")
        address = (sockets.SocketAddress.parse(opts.socket, spamc.DEFAULT_PORT) if opts.socket
                   else sockets.SocketAddress(host=opts.host, port=opts.port))
        client = spamc.SpamcClient(address, user=opts.user,
                                   connect_timeout=opts.connect_timeout,
                                   timeout=opts.read_timeout)
    except (OptionError, ValueError) as exc:
        click.echo(f"rohrpost learn: {exc}", err=True)
        sys.exit(EX_CONFIG)
    return client, spamc.SpamdError


async def _learn_all(client: _Client, error: type[Exception], files: list[str], *,
                     message_class: str, max_size: int, jobs: int,
                     advance: Callable[[], None]) -> Counts:
    counts = Counts()
    limit = asyncio.Semaphore(jobs)

    async def one(path: str) -> None:
        async with limit:
            try:
                with open(path, "rb") as fh:
                    data = fh.read(max_size + 1)
            except OSError as exc:
                click.echo(f"rohrpost learn: {path}: {exc.strerror}", err=True)
                counts.failed_read += 1
                return
            finally:
                advance()
            if len(data) > max_size:
                counts.skipped += 1
                return
            if data.startswith(b"From "):  # mbox From_ line is not part of the message
                data = data.split(b"\n", 1)[1] if b"\n" in data else b""
            try:
                result = await client.tell(data, message_class)
            except error as exc:
                click.echo(f"rohrpost learn: {path}: {exc}", err=True)
                counts.failed_spamd += 1
                return
            if result.changed:
                counts.learned += 1
            else:
                counts.known += 1

    await asyncio.gather(*(one(p) for p in files))
    return counts


@click.command("learn")
@click.option("--spam", "as_spam", is_flag=True, help="the messages are spam")
@click.option("--ham", "as_ham", is_flag=True, help="the messages are ham (not spam)")
@config_option
@click.option("--host", default=None, help="spamd host (default: from the config, 127.0.0.1)")
@click.option("--port", type=int, default=None, help="spamd port (default: config, 783)")
@click.option("--socket", default=None, help="spamd socket, 'unix:/path' or 'tcp:HOST:PORT'")
@click.option("--user", default=None, help="User: for spamd (whose Bayes database)")
@click.option("--max-size", type=int, default=512000, show_default=True,
              help="skip larger messages (bytes)")
@click.option("--jobs", "-j", type=click.IntRange(1, 32), default=2, show_default=True,
              help="messages in flight at once (spamd's --max-children bounds it)")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
def learn_cmd(*, as_spam: bool, as_ham: bool, config_path: str | None, host: str | None,
              port: int | None, socket: str | None, user: str | None, max_size: int,
              jobs: int, paths: tuple[str, ...]) -> int:
    """Teach spamd's Bayes that the messages in PATHS (files or Maildirs) are spam or ham."""
    if as_spam == as_ham:
        raise click.UsageError("give exactly one of --spam or --ham")
    client, error = _client(config_path, host, port, socket, user)
    files = [f for p in paths for f in message_files(p)]
    message_class = "spam" if as_spam else "ham"
    if len(files) >= PROGRESS_MIN:
        with click.progressbar(length=len(files), label=f"learning {message_class}",
                               file=sys.stderr) as bar:
            counts = asyncio.run(_learn_all(client, error, files, message_class=message_class,
                                            max_size=max_size, jobs=jobs,
                                            advance=lambda: bar.update(1)))
    else:
        counts = asyncio.run(_learn_all(client, error, files, message_class=message_class,
                                        max_size=max_size, jobs=jobs, advance=lambda: None))
    click.echo(f"{message_class}: {len(files)} messages, {counts.learned} learned, "
               f"{counts.known} already known, {counts.skipped} skipped (size), "
               f"{counts.failed} failed")
    if counts.failed_spamd:
        return EX_TEMPFAIL
    return EX_NOINPUT if counts.failed_read else EX_OK
