"""The filter interface: what a filter declares and what it is given.

Owns ``Stage``, ``Mail`` (what a filter may read), ``Context`` (what a filter may use: DNS,
clock, state store, logger, blocking executor) and the ``Filter`` base class. A filter never
edits a message: it returns a ``FilterResult`` with a verdict, symbols and changes. Heavy
services (DNS resolver, state store) are created on first use so that a pipe-mode run only pays
for what its filters touch.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from rohrpost.envelope import Envelope
from rohrpost.message import Message
from rohrpost.record import FrozenRecord
from rohrpost.result import FilterResult

if TYPE_CHECKING:
    from rohrpost.dns import Resolver
    from rohrpost.store import Store

T = TypeVar("T")
_set = object.__setattr__


class Stage(enum.IntEnum):
    """SMTP stages in order; a filter runs at the earliest stage that has what it needs."""

    CONNECT = 1
    HELO = 2
    MAIL = 3
    RCPT = 4
    EOM = 5  # end of message: headers and body available

    @classmethod
    def parse(cls, text: str) -> Stage:
        """Parse a stage name (``connect``, ``helo``, ``mail``, ``rcpt``, ``eom``/``data``)."""
        key = text.strip().upper()
        key = "EOM" if key in ("DATA", "BODY", "END") else key
        try:
            return cls[key]
        except KeyError:
            raise ValueError(
                f"unknown stage {text!r}: use connect, helo, mail, rcpt or eom") from None


class Mail(FrozenRecord):
    """What a filter may read about the message being processed.

    :param envelope: the envelope as known at this stage.
    :param message: the message, or ``None`` before the end-of-message stage.
    :param prior: results of the filters that ran before, by instance name, in order.
    :param rcpt: at the RCPT stage, the recipient being checked.
    """

    __slots__ = _fields = ("envelope", "message", "prior", "rcpt")
    envelope: Envelope
    message: Message | None
    prior: Sequence[tuple[str, FilterResult]]
    rcpt: str

    def __init__(self, envelope: Envelope, message: Message | None = None,
                 prior: Sequence[tuple[str, FilterResult]] = (), rcpt: str = "") -> None:
        _set(self, "envelope", envelope)
        _set(self, "message", message)
        _set(self, "prior", prior)
        _set(self, "rcpt", rcpt)

    def fact(self, key: str, default: object = None) -> object:
        """The latest published fact ``key`` from an earlier filter (e.g. ``"spf.result"``)."""
        for _name, result in reversed(self.prior):
            if key in result.facts:
                return result.facts[key]
        return default

    @property
    def score(self) -> float:
        """The score so far."""
        return sum(r.score for _n, r in self.prior)


class Services:
    """Shared, lazily created services of one process: resolver, store, executor.

    One instance per process (milter, server, or one pipe run) is passed around explicitly;
    nothing here is global. ``factories`` make the services on first use.
    """

    def __init__(
        self,
        *,
        resolver_factory: Callable[[], Resolver] | None = None,
        store_factory: Callable[[], Store] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self._resolver_factory = resolver_factory
        self._store_factory = store_factory
        self._resolver: Resolver | None = None
        self._store: Store | None = None
        self.clock: Callable[[], float] = clock or time.time

    @property
    def resolver(self) -> Resolver:
        """The DNS resolver (created on first use)."""
        if self._resolver is None:
            if self._resolver_factory is None:
                raise RuntimeError("no DNS resolver configured")
            self._resolver = self._resolver_factory()
        return self._resolver

    @property
    def store(self) -> Store:
        """The state store (created on first use)."""
        if self._store is None:
            if self._store_factory is None:
                raise RuntimeError("no state store configured")
            self._store = self._store_factory()
        return self._store

    async def aclose(self) -> None:
        """Close what was opened."""
        if self._store is not None:
            await self._store.close()
            self._store = None


class Context(FrozenRecord):
    """What a filter may use while it checks one message.

    :param services: the process's shared resolver, store and clock.
    :param log: a logger whose records carry the queue id.
    :param authserv_id: the authserv-id for Authentication-Results.
    :param hostname: this host's name (for Received, reports).
    :param settings: pipeline-level settings a filter may consult (read-only).
    """

    __slots__ = _fields = ("services", "log", "authserv_id", "hostname", "settings")
    services: Services
    log: logging.LoggerAdapter[logging.Logger]
    authserv_id: str
    hostname: str
    settings: Mapping[str, Any]

    def __init__(self, services: Services, log: logging.LoggerAdapter[logging.Logger],
                 authserv_id: str, hostname: str,
                 settings: Mapping[str, Any] | None = None) -> None:
        _set(self, "services", services)
        _set(self, "log", log)
        _set(self, "authserv_id", authserv_id)
        _set(self, "hostname", hostname)
        _set(self, "settings", {} if settings is None else settings)

    @property
    def resolver(self) -> Resolver:
        """The DNS resolver."""
        return self.services.resolver

    @property
    def store(self) -> Store:
        """The state store."""
        return self.services.store

    def now(self) -> float:
        """The current time from the injected clock (seconds since the epoch)."""
        return self.services.clock()

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking library call (pyspf, dkimpy) in a worker thread."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Filter(abc.ABC):
    """Base class of every filter.

    Subclasses set ``name``, ``description``, ``stage`` and ``Options`` (an option table, i.e.
    a ``rohrpost.options.OptionTable`` or frozen dataclass whose typed fields are the filter's
    options, validated by ``rohrpost.options``), and implement
    ``check``. ``__init__`` receives the validated options; it may load files (keys, lists) and
    must raise ``rohrpost.options.OptionError`` for options that are wrong beyond their type.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    stage: ClassVar[Stage] = Stage.EOM
    Options: ClassVar[type[Any]]
    #: True for a filter whose ``check`` never awaits (no DNS, store, sockets, executor).
    #: When every filter of a pipe-mode run says so, ``rohrpost run`` drives the pipeline
    #: without importing asyncio (see ``rohrpost.pipeline.run_loop_free``); a filter that
    #: suspends anyway makes the run exit 75, never pass unchecked.
    loop_free: ClassVar[bool] = False

    def __init__(self, options: Any) -> None:
        self.options = options

    @abc.abstractmethod
    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Look at ``mail`` and return what this filter finds; never mutate anything."""

    async def aclose(self) -> None:
        """Release resources held across messages (connections); default: nothing."""
        return
