"""Socket addresses and bounded stream I/O shared by the in-house spamd and clamd clients.

Owns ``SocketAddress`` (``tcp:HOST:PORT`` / ``unix:PATH`` / bare ``HOST:PORT``), ``open_stream``
(a connect with its own timeout) and ``read_to_eof`` (read a whole reply with a size cap). Knows
nothing about either protocol; opens no connection by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


class BackendError(Exception):
    """A scanner daemon could not be reached or answered something unusable."""


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """Where a daemon listens: a unix socket ``path`` or TCP ``host`` and ``port``."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, spec: str, default_port: int) -> SocketAddress:
        """Parse ``unix:/run/x.sock``, ``/run/x.sock``, ``tcp:HOST:PORT``, ``HOST:PORT``, ``HOST``.

        :raises ValueError: for an empty path, a bad port, or an unknown scheme.
        """
        spec = spec.strip()
        if spec.startswith(("unix:", "/")):
            path = spec.removeprefix("unix:")
            if not path:
                raise ValueError(f"socket {spec!r}: empty unix socket path")
            return cls(path=path)
        rest = spec.removeprefix("tcp:") if spec.startswith("tcp:") else spec
        if ":" in rest.split("]")[-1]:
            host, _, port_text = rest.rpartition(":")
        else:
            host, port_text = rest, str(default_port)
        host = host.strip("[]") or "127.0.0.1"
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"socket {spec!r}: port must be a number") from None
        if not 0 < port < 65536:
            raise ValueError(f"socket {spec!r}: port {port} out of range")
        return cls(host=host, port=port)

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"tcp:{self.host}:{self.port}"


async def open_stream(address: SocketAddress, connect_timeout: float
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``address`` within ``connect_timeout`` seconds.

    :raises BackendError: refused, unreachable, missing socket file, or timed out.
    """
    try:
        async with asyncio.timeout(connect_timeout):  # no extra task, unlike wait_for
            if address.path:
                return await asyncio.open_unix_connection(address.path)
            return await asyncio.open_connection(address.host, address.port)
    except TimeoutError:
        raise BackendError(f"connect to {address} timed out after {connect_timeout:g}s") from None
    except OSError as exc:
        raise BackendError(f"cannot connect to {address}: {exc.strerror or exc}") from None


async def read_to_eof(reader: asyncio.StreamReader, limit: int) -> bytes:
    """Read until the peer closes; more than ``limit`` bytes is a ``BackendError``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BackendError(f"reply larger than {limit} bytes")
        chunks.append(chunk)


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    """Close a stream, ignoring errors from a peer that already went away."""
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
