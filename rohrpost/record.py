"""Value classes for the core's records, with ``@dataclass``'s behaviour but not its start-up cost.

Owns ``Record``, ``FrozenRecord``, ``FrozenInstanceError`` and ``replace``. ``@dataclass``
builds ``__init__``, ``__repr__``, ``__eq__`` and (frozen) ``__setattr__``/``__hash__`` as source
text and compiles each with ``exec`` when the class is created: about 4 M instructions (1 ms
here) per frozen class, and ``import dataclasses`` brings ``inspect``. With ~40 of them on the
path of every ``rohrpost run`` that was the largest part of a pipe-mode start
(docs/performance.md, finding 19). A record here writes its ``__init__`` by hand (as fast per
instance as the generated one) and inherits the rest, which reads the field names from
``_fields``: the same repr, equality, hash and immutability as the dataclass it replaces.
Option tables (validated from TOML) are ``rohrpost.options.OptionTable`` instead.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record (as ``dataclasses.FrozenInstanceError``)."""


class Record:  # noqa: PLW1641 - unhashable on purpose, see below
    """A mutable record: subclasses set ``__slots__``, ``_fields`` and an ``__init__``.

    ``repr`` is ``Name(field=value, ...)`` and two records are equal when they are of the same
    class with equal fields, exactly as for ``@dataclass``; like a mutable dataclass, a
    ``Record`` is not hashable.
    """

    __slots__ = ()
    #: the field names in declaration order (the ``__init__`` parameters)
    _fields: ClassVar[tuple[str, ...]] = ()
    #: the fields ``repr`` shows, when not all (``field(repr=False)`` of a dataclass)
    _repr_fields: ClassVar[tuple[str, ...] | None] = None

    def __repr__(self) -> str:
        shown = self._fields if self._repr_fields is None else self._repr_fields
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)

    # defining __eq__ without __hash__ sets __hash__ to None: a mutable record is unhashable,
    # as a dataclass with eq=True


class FrozenRecord(Record):
    """An immutable record; ``__init__`` sets the fields with ``object.__setattr__``.

    Hashable by its fields (when they are), as a frozen dataclass.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __hash__(self) -> int:
        return hash(_values(self))

    # pickle and copy restore the fields through __setstate__, past the frozen __setattr__
    def __getstate__(self) -> tuple[Any, ...]:
        return _values(self)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self._fields, state, strict=True):
            object.__setattr__(self, name, value)


def _values(record: Record) -> tuple[Any, ...]:
    return tuple(getattr(record, name) for name in record._fields)


def replace(record: R, **changes: Any) -> R:
    """A copy of ``record`` with ``changes`` (``dataclasses.replace`` for records).

    :raises TypeError: for a name that is not a field.
    """
    values = {name: getattr(record, name) for name in record._fields}
    values.update(changes)
    return type(record)(**values)
