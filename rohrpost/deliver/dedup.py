"""Duplicate suppression keys: Message-ID and body hash (procmail's ``formail -D`` habit).

Owns ``message_fingerprint``: a stable key for "the same message" that survives the headers
added on the way (Received, Delivered-To, X-Spam-*, our status header). It hashes the
normalised Message-ID and the body with line endings unified and trailing white space removed,
so one message fetched twice, or arriving over two routes, gives the same key. Storage of the
keys belongs to the callers (``rohrpost.deliver.sorting`` per destination, ``rohrpost.fetch``
per account); this module performs no I/O.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from rohrpost.message import Message

DedupKey = Literal["message-id+body", "message-id", "body"]
_WS = re.compile(rb"[ \t]+(?=\r?\n)")


def normalised_message_id(message: Message) -> str:
    """The first Message-ID, lower-cased, without white space; ``""`` when absent."""
    value = message.get("Message-ID") or message.get("Message-Id")
    return "".join(value.split()).lower()


def body_hash(message: Message) -> str:
    """SHA-256 of the body with CRLF unified to LF and trailing blanks and lines removed."""
    body = message.body.replace(b"\r\n", b"\n")
    body = _WS.sub(b"", body).rstrip(b"\n")
    return hashlib.sha256(body).hexdigest()


def message_fingerprint(message: Message, key: DedupKey = "message-id+body") -> str:
    """A hex key that identifies the message for duplicate suppression.

    ``message-id+body`` (default) needs both to match; ``message-id`` is exactly formail -D
    (falls back to the body hash when there is no Message-ID); ``body`` ignores headers.
    """
    mid = normalised_message_id(message)
    if key == "body" or not mid:
        material = "body:" + body_hash(message)
    elif key == "message-id":
        material = "mid:" + mid
    else:
        material = "mid+body:" + mid + ":" + body_hash(message)
    return hashlib.sha256(material.encode("utf-8", "replace")).hexdigest()[:40]
