"""Shared helpers for the filter tests: contexts, mails, and whole-pipeline runs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from rohrpost import runner
from rohrpost.config import parse_config
from rohrpost.envelope import Envelope
from rohrpost.filter import Context, Filter, Mail, Services
from rohrpost.message import Message
from rohrpost.options import build_options
from rohrpost.pipeline import Pipeline
from rohrpost.registry import load_filter_class
from rohrpost.result import FilterResult
from rohrpost.services import make_services

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC

PIPELINE_HEAD = """
[pipeline]
hostname = "mx.example.net"
authserv_id = "mx.example.net"
"""


def context(hostname: str = "mx.example.net", trusted: list[str] | None = None) -> Context:
    services = Services(clock=lambda: NOW)
    log = logging.LoggerAdapter(logging.getLogger("test"), {"queue_id": "Q1"})
    nets = ["127.0.0.0/8", "::1/128"] if trusted is None else trusted
    return Context(services, log, hostname, hostname, {"trusted_networks": nets})


def message(*headers: str, body: str = "Hello.\n") -> Message:
    return Message(("\n".join(headers) + "\n\n" + body).encode())


def make_filter(name: str, **options: Any) -> Filter:
    cls = load_filter_class(name)
    return cls(build_options(cls.Options, options))


def run_filter(flt: Filter, msg: Message, envelope: Envelope | None = None,
               ctx: Context | None = None) -> FilterResult:
    mail = Mail(envelope or Envelope(mail_from="a@example.org", rcpts=("b@example.net",)), msg)
    return asyncio.run(flt.check(ctx or context(), mail))


def run_pipeline(toml_text: str, msg: Message | bytes, envelope: Envelope | None = None,
                 path: str = "pipeline.toml") -> runner.Processed:
    cfg = parse_config(PIPELINE_HEAD + toml_text, path)
    pipeline = Pipeline.build(cfg)
    if isinstance(msg, bytes):
        msg = Message(msg)
    env = envelope or Envelope(mail_from="a@example.org", rcpts=("b@example.net",),
                               client_ip="192.0.2.1", helo="client.example.org")
    return asyncio.run(runner.process(pipeline, make_services(cfg, clock=lambda: NOW), env, msg))


def header_names(msg: Message) -> list[str]:
    return [h.name for h in msg.headers]
