"""Run messages through a real pipeline built from TOML text (no mocks, no CLI)."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.filter import Services
from rohrpost.message import Message
from rohrpost.pipeline import Pipeline
from rohrpost.runner import Processed, process
from rohrpost.store.memory import MemoryStore

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = (ROOT / ".." / "shared" / "testdata").resolve()  # never copied into the repository
SAMPLES = TESTDATA / "spamassassin-samples"
CORPUS = TESTDATA / "spam-corpus" / "corpus-dev.tar.gz"
ENVELOPE = Envelope(client_ip="192.0.2.10", helo="mail.example.net",
                    mail_from="alice@example.net", rcpts=("bob@example.org",),
                    queue_id="TESTQ1")


def pipeline_for(toml: str) -> Pipeline:
    """A pipeline from TOML text (``[pipeline] authserv_id`` set so no hostname lookup)."""
    if "[pipeline]" not in toml:
        toml = '[pipeline]\nauthserv_id = "mx.example.org"\nhostname = "mx.example.org"\n' + toml
    return Pipeline.build(parse_config(toml, ""))


async def run_many(pipeline: Pipeline, raws: list[bytes],
                   envelope: Envelope = ENVELOPE) -> list[Processed]:
    """Process each message in turn with one pipeline and in-memory state."""
    services = Services(store_factory=MemoryStore)
    try:
        return [await process(pipeline, services, envelope, Message(raw)) for raw in raws]
    finally:
        await pipeline.aclose()
        await services.aclose()


def run(toml: str | Pipeline, raw: bytes, envelope: Envelope = ENVELOPE) -> Processed:
    """Process one message through the pipeline described by ``toml``."""
    pipeline = toml if isinstance(toml, Pipeline) else pipeline_for(toml)
    return asyncio.run(run_many(pipeline, [raw], envelope))[0]


def symbols(done: Processed) -> dict[str, float]:
    """Symbol name to score of an outcome."""
    return {s.name: s.score for s in done.outcome.symbols}


def mail_with(*attachments: tuple[str, str, bytes], text: str = "See attached.\n") -> bytes:
    """A multipart message with ``(filename, content_type, payload)`` attachments (base64)."""
    msg = EmailMessage()
    msg["From"] = "alice@example.net"
    msg["To"] = "bob@example.org"
    msg["Subject"] = "attachment test"
    msg["Message-ID"] = "<att-test@example.net>"
    msg.set_content(text)
    for name, ctype, payload in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()
