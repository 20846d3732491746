r"""A small clamd client: INSTREAM (streamed, no temporary files), PING, VERSION.

Owns ``ClamdClient``, ``ScanResult`` and the reply parser. INSTREAM is sent as ``zINSTREAM\\0``,
then the data in chunks, each preceded by its length as 4 bytes big-endian, then a zero-length
chunk; clamd answers one NUL-terminated line: ``stream: OK``, ``stream: NAME FOUND`` or
``... ERROR``. Every failure raises ``ClamdError`` (``ClamdLimitError`` when clamd refused the
stream as larger than its ``StreamMaxLength``), so callers decide; nothing here maps a failure
to "clean". It reads no configuration.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from ._sockets import BackendError, SocketAddress, close_quietly, open_stream

DEFAULT_PORT = 3310
MAX_REPLY = 64 * 1024
FLUSH_BYTES = 1024 * 1024  # bytes of chunks gathered per socket write


class ClamdError(BackendError):
    """clamd was unreachable, timed out, or answered an error."""


class ClamdLimitError(ClamdError):
    """clamd refused the stream: ``INSTREAM size limit exceeded`` (its StreamMaxLength)."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The outcome of one scan: ``virus`` is the signature name, or ``None`` when clean."""

    virus: str | None
    raw: str

    @property
    def clean(self) -> bool:
        """True when clamd found nothing."""
        return self.virus is None


def parse_scan_reply(line: str) -> ScanResult:
    """Parse ``stream: OK`` / ``stream: NAME FOUND`` / ``... ERROR``.

    :raises ClamdLimitError: for ``INSTREAM size limit exceeded``.
    :raises ClamdError: for any other error or an unparsable line.
    """
    text = line.strip("\0\r\n ")
    if "size limit exceeded" in text.lower():
        raise ClamdLimitError(f"clamd: {text[:200]}")
    if text.endswith("ERROR"):
        raise ClamdError(f"clamd: {text[:200]}")
    _, sep, verdict = text.partition(": ")
    if not sep:
        raise ClamdError(f"clamd: unexpected reply {text[:200]!r}")
    if verdict == "OK":
        return ScanResult(None, text)
    if verdict.endswith(" FOUND"):
        return ScanResult(verdict.removesuffix(" FOUND").strip() or "unknown", text)
    raise ClamdError(f"clamd: unexpected reply {text[:200]!r}")


class ClamdClient:
    """Talk to one clamd.

    :param address: where clamd listens (unix socket or TCP).
    :param connect_timeout: seconds for the connect.
    :param timeout: seconds for a whole command including the scan (``None``: no own limit).
    :param chunk_size: bytes per INSTREAM chunk.
    """

    def __init__(self, address: SocketAddress, *, connect_timeout: float = 5.0,
                 timeout: float | None = 120.0, chunk_size: int = 64 * 1024) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.address = address
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.chunk_size = chunk_size

    async def command(self, name: str) -> str:
        r"""Send a simple ``zNAME\\0`` command (PING, VERSION) and return the reply line."""
        return await self._run(self._simple(name))

    async def ping(self) -> bool:
        """Ask clamd for PONG; True when it answers."""
        return (await self.command("PING")) == "PONG"

    async def instream(self, data: bytes) -> ScanResult:
        """Scan ``data`` with INSTREAM, streamed in chunks from memory."""
        return parse_scan_reply(await self._run(self._instream(data)))

    async def _run(self, coro: Coroutine[Any, Any, str]) -> str:
        try:
            async with asyncio.timeout(self.timeout):  # in this task: no wait_for task
                return await coro
        except TimeoutError:
            raise ClamdError(f"clamd at {self.address}: no reply within {self.timeout:g}s"
                             ) from None
        except ClamdError:
            raise
        except BackendError as exc:
            raise ClamdError(f"clamd at {self.address}: {exc}") from None
        except OSError as exc:
            raise ClamdError(f"clamd at {self.address}: {exc.strerror or exc}") from None

    async def _simple(self, name: str) -> str:
        reader, writer = await open_stream(self.address, self.connect_timeout)
        try:
            writer.write(b"z" + name.encode("ascii") + b"\0")
            await writer.drain()
            return await _read_line(reader)
        finally:
            await close_quietly(writer)

    async def _instream(self, data: bytes) -> str:
        reader, writer = await open_stream(self.address, self.connect_timeout)
        try:
            view = memoryview(data)
            # The command, each chunk with its length and the end mark go out in as few
            # writes as possible (one send for most mail, instead of 2 per chunk + 2), up
            # to FLUSH_BYTES per write so that a large message is not copied whole.
            parts: list[bytes | memoryview] = [b"zINSTREAM\0"]
            pending = 0
            try:
                for start in range(0, len(view), self.chunk_size):
                    chunk = view[start : start + self.chunk_size]
                    parts += (struct.pack(">I", len(chunk)), chunk)
                    pending += len(chunk)
                    if pending >= FLUSH_BYTES:
                        writer.writelines(parts)
                        parts, pending = [], 0
                        await writer.drain()
                parts.append(struct.pack(">I", 0))
                writer.writelines(parts)
                await writer.drain()
            except (BrokenPipeError, ConnectionResetError):
                # clamd stops reading and answers early (size limit): read what it said
                pass
            return await _read_line(reader)
        finally:
            await close_quietly(writer)


async def _read_line(reader: asyncio.StreamReader) -> str:
    """Read one NUL-terminated reply (or up to EOF), bounded by ``MAX_REPLY``."""
    buf = b""
    while b"\0" not in buf:
        try:
            chunk = await reader.read(4096)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_REPLY:
            raise ClamdError("clamd reply too long")
    if not buf:
        raise ClamdError("clamd closed the connection without a reply")
    return buf.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
