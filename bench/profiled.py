"""cProfile one pipeline over N copies of a message in one process (``--profile``).

Usage: ``python -m bench.profiled PIPELINE.toml MESSAGE COUNT OUT.prof OUT.txt``. The
pipeline is built once and the message processed COUNT times on one asyncio loop, as the
milter's workers do, so start-up cost is excluded and the filters' own cost shows.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_WORKER = cProfile.Profile()


def _worker_start() -> None:
    _WORKER.enable()  # filters run blocking work (RSA, hashing) in the loop's executor


def _worker_stop() -> None:
    _WORKER.disable()


async def _loop(config_path: str, raw: bytes, count: int, prof: cProfile.Profile) -> None:
    from bench import messages
    from rohrpost.config import load_config
    from rohrpost.envsource import EnvelopeArgs, envelope_for_pipe
    from rohrpost.message import Message
    from rohrpost.pipeline import Pipeline
    from rohrpost.runner import process
    from rohrpost.services import make_services

    config = load_config(config_path)
    pipeline = Pipeline.build(config)
    services = make_services(config)
    args = EnvelopeArgs(sender=messages.SENDER, recipients=(messages.RECIPIENT,),
                        client_ip="127.0.0.1", helo=messages.CLIENT_HELO, auth_user="")
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1, initializer=_worker_start))
    try:
        prof.enable()
        for _ in range(count):
            message = Message(raw)
            await process(pipeline, services, envelope_for_pipe(args, os.environ, message),
                          message)
        prof.disable()
        await loop.run_in_executor(None, _worker_stop)
    finally:
        await pipeline.aclose()
        await services.aclose()


def main(argv: list[str]) -> int:
    """Profile and write the binary stats and the top 40 by own time."""
    config_path, msg, count, out_prof, out_txt = argv
    raw = Path(msg).read_bytes().replace(b"\n", b"\r\n")
    prof = cProfile.Profile()
    asyncio.run(_loop(config_path, raw, int(count), prof))
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.add(_WORKER)
    stats.dump_stats(out_prof)
    buf.write("main thread (asyncio loop) and the executor thread, merged\n")
    stats.sort_stats("tottime").print_stats(40)
    Path(out_txt).write_text(buf.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
