"""Messages the bench sends: plain 4 KB text mail and realistic 20-100 KB MIME mail.

Everything is deterministic (seeded) so runs compare like with like. Files are written with
LF line ends because smtp-source ``-F`` appends CRLF to every line; DKIM signatures are made
over the CRLF form (what Postfix passes on).
"""

from __future__ import annotations

import base64
import io
import random
import zipfile
from datetime import UTC, datetime
from email.utils import format_datetime

SENDER = "alice@example.org"
RECIPIENT = "bob@example.net"
SENDER_DOMAIN = "example.org"
CLIENT_HELO = "client.example.org"
_DATE = format_datetime(datetime(2026, 1, 5, 9, 30, tzinfo=UTC))
_WORDS = (
    "mail", "filter", "postfix", "milter", "message", "header", "body", "signature", "domain",
    "policy", "report", "quarterly", "budget", "meeting", "schedule", "project", "invoice",
    "attached", "please", "review", "thanks", "regards", "team", "update", "draft", "final",
    "version", "change", "request", "delivery", "server",
)


def _text(rng: random.Random, size: int, width: int = 72) -> str:
    """Lines of pseudo-English of about ``size`` bytes (LF line ends)."""
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(_WORDS) for _ in range(11))[:width]
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def _headers(subject: str, msgid: str, extra: str = "") -> str:
    return (f"From: Alice Example <{SENDER}>\n"
            f"To: Bob Example <{RECIPIENT}>\n"
            f"Subject: {subject}\n"
            f"Date: {_DATE}\n"
            f"Message-ID: <{msgid}@example.org>\n"
            "MIME-Version: 1.0\n" + extra)


def plain_message(size: int = 4096, seed: int = 0) -> bytes:
    """A text/plain message of ``size`` bytes (exactly, counting LF line ends)."""
    rng = random.Random(seed)
    head = _headers("Bench plain message", f"plain-{seed}",
                    "Content-Type: text/plain; charset=us-ascii\n"
                    "Content-Transfer-Encoding: 7bit\n") + "\n"
    body = _text(rng, max(0, size - len(head)))
    data = (head + body).encode("ascii")
    if len(data) > size:  # trim the last line, keep the final LF
        data = data[: size - 1].rstrip(b" ") + b"\n"
        data += b"x" * (size - len(data))
        data = data[:-1] + b"\n"
    return data


def _b64_lines(raw: bytes) -> str:
    enc = base64.b64encode(raw).decode("ascii")
    return "\n".join(enc[i : i + 76] for i in range(0, len(enc), 76)) + "\n"


def _zip_attachment(rng: random.Random, size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("report.csv", _text(rng, size // 2))
        zf.writestr("data.bin", rng.randbytes(size // 2))
    return buf.getvalue()


def mime_message(size: int, seed: int = 0) -> bytes:
    """A multipart/mixed message of about ``size`` bytes (within 2 %).

    Parts: multipart/alternative (text/plain and text/html), a base64 PDF-like attachment and
    a base64 zip holding a CSV and binary data: what an office mail with attachments looks like.
    """
    rng = random.Random(seed)
    outer, alt = f"=_outer_{seed:04d}", f"=_alt_{seed:04d}"
    text = _text(rng, 1500)
    html = "<html><body>" + "".join(f"<p>{line}</p>\n" for line in text.splitlines()) + \
        "</body></html>\n"
    head = _headers(f"Bench MIME message {seed}", f"mime-{seed}",
                    f'Content-Type: multipart/mixed; boundary="{outer}"\n') + "\n"
    first = (f"This is a multi-part message in MIME format.\n\n--{outer}\n"
             f'Content-Type: multipart/alternative; boundary="{alt}"\n\n'
             f"--{alt}\nContent-Type: text/plain; charset=us-ascii\n\n{text}\n"
             f"--{alt}\nContent-Type: text/html; charset=us-ascii\n\n{html}\n--{alt}--\n\n")
    budget = max(1024, size - len(head) - len(first) - 600)
    raw_total = budget * 3 // 4  # base64 grows by 4/3 plus line ends
    pdf = b"%PDF-1.4\n" + rng.randbytes(max(16, raw_total // 2 - 9))
    zipped = _zip_attachment(rng, max(64, raw_total - len(pdf) - 300))
    parts = first
    for name, ctype, raw in (("minutes.pdf", "application/pdf", pdf),
                             ("data.zip", "application/zip", zipped)):
        parts += (f"--{outer}\nContent-Type: {ctype}; name=\"{name}\"\n"
                  "Content-Transfer-Encoding: base64\n"
                  f"Content-Disposition: attachment; filename=\"{name}\"\n\n"
                  f"{_b64_lines(raw)}\n")
    parts += f"--{outer}--\n"
    return (head + parts).encode("ascii")


def to_crlf(data: bytes) -> bytes:
    """LF line ends to CRLF (the form on the wire)."""
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def dkim_presign(data: bytes, selector: str, domain: str, private_pem: bytes) -> bytes:
    """``data`` (LF ends) with a relaxed/relaxed rsa-sha256 DKIM-Signature prepended (LF ends)."""
    import dkim

    sig = dkim.sign(to_crlf(data), selector.encode(), domain.encode(), private_pem,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                     b"mime-version", b"content-type"])
    return bytes(sig).replace(b"\r\n", b"\n") + data
