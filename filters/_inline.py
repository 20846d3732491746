"""Blocking library calls that look up DNS (dkimpy, pyspf), on the event loop when possible.

On the loop when the answers they need are known, in a worker thread as before when not.

Owns ``run_with_dns``, ``KnownAnswers`` and ``CacheMiss``; ``dkim-verify``, ``arc-verify`` and
``spf`` call it. Their libraries ask DNS in the middle of their work through a blocking
``query_sync``, which is why each check went through the loop's executor: a hand-off to a
worker thread and back costs more CPU (thread wake-ups, the loop's self-pipe, two more loop
iterations; 0.2-0.3 ms here) than a whole verification once every answer is in the resolver's
cache, as it is for nearly every message on a busy MX (docs/performance.md, finding 21).

So ``run_with_dns`` first calls ``fn`` on the loop thread with ``KnownAnswers``, whose
``query_sync`` answers from the resolver's cache (``Resolver.query_cached``: the same answer,
or the same cached error, that ``query_sync`` would give) and from answers fetched in an
earlier attempt. The first question it cannot answer raises ``CacheMiss`` (a
``BaseException``, so no handler of ``Exception`` in the library catches it; a library that
swallows it anyway is caught out by ``missed``, which stays set, and its result is thrown
away). Then, with ``prefetch``, the missing answer is fetched with the resolver's asynchronous
``query`` (no thread waits for the network) and ``fn`` runs again from the start, up to
``rounds`` attempts; without, or when the attempts are used up, ``fn`` runs with the resolver
in the executor, exactly as before. The libraries are deterministic given their DNS answers,
so a completed attempt is what the executor would have computed with the same answers.

``prefetch`` is only for callers whose lookups use the resolver's default deadline (dkimpy's
key lookups): an SPF check passes pyspf's remaining time budget with each query, which an
asynchronous prefetch outside pyspf would not count, so ``spf`` runs one attempt from the cache
and otherwise goes to the executor. Large messages (``inline=False``) always go to the
executor: canonicalizing megabytes on the loop thread would hold up every other session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from rohrpost.dns import DnsAnswer, DnsError

if TYPE_CHECKING:
    from rohrpost.dns import Resolver
    from rohrpost.filter import Context

__all__ = ["CacheMiss", "KnownAnswers", "SyncResolver", "run_with_dns"]

T = TypeVar("T")
Key = tuple[str | bytes, str]


class SyncResolver(Protocol):
    """What a blocking library call needs of the resolver: ``Resolver.query_sync``."""

    def query_sync(self, name: str | bytes, rdtype: str, *,
                   timeout: float | None = None) -> DnsAnswer:
        """The answer for ``name``/``rdtype``; raise DnsTempError / DnsPermError."""
        ...


class CacheMiss(BaseException):
    """A lookup whose answer is not known yet: abandon this attempt."""


class KnownAnswers:
    """A ``query_sync`` from the cache and earlier answers; never waits, never queries.

    :param resolver: whose cache to read.
    :param fetched: answers (or the exceptions ``query`` raised) per question, from earlier
        attempts.
    """

    def __init__(self, resolver: Resolver, fetched: dict[Key, DnsAnswer | Exception]) -> None:
        self.resolver = resolver
        self.fetched = fetched
        #: the first question that could not be answered; every later one raises too
        self.missed: Key | None = None

    def query_sync(self, name: str | bytes, rdtype: str, *,
                   timeout: float | None = None) -> DnsAnswer:
        """The answer ``Resolver.query_sync`` would give, or ``CacheMiss``."""
        del timeout  # nothing here waits
        if self.missed is not None:
            raise CacheMiss
        known = self.fetched.get((name, rdtype))
        if known is None:
            known = self.resolver.query_cached(name, rdtype)
        if known is None:
            self.missed = (name, rdtype)
            raise CacheMiss
        if isinstance(known, DnsError):
            raise type(known)(*known.args)  # a fresh exception per raise, as the cache does
        if isinstance(known, Exception):
            raise known
        return known


async def run_with_dns(ctx: Context, fn: Callable[[SyncResolver], T], *, rounds: int = 1,
                       prefetch: bool = False, inline: bool = True) -> T:
    """``fn(resolver)``: on the loop thread when its answers are known, else in a worker.

    :param rounds: attempts on the loop thread before the executor takes over.
    :param prefetch: between attempts, fetch the missing answer asynchronously (only for
        lookups with the resolver's default deadline, see the module docstring).
    :param inline: False sends ``fn`` straight to the executor.
    """
    resolver = ctx.resolver
    fetched: dict[Key, DnsAnswer | Exception] = {}
    for attempt in range(rounds if inline else 0):
        known = KnownAnswers(resolver, fetched)
        try:
            result = fn(known)
        except CacheMiss:
            pass
        except Exception:
            if known.missed is None:
                raise  # the library's own error, with every answer known: as in a worker
        else:
            if known.missed is None:
                return result
        if not prefetch or attempt + 1 == rounds or known.missed is None:
            break
        name, rdtype = known.missed
        try:
            fetched[known.missed] = await resolver.query(name, rdtype)
        except Exception as exc:  # noqa: BLE001 - raised where query_sync would raise it
            fetched[known.missed] = exc
    return await ctx.run_blocking(fn, resolver)
