"""Find filters by name: ``dkim-verify`` is class ``FILTER`` in ``rohrpost.filters.dkim_verify``.

Owns name-to-class lookup and the list of available filters. Modules are imported only when a
filter is used, so a pipeline pays start-up time only for its own filters.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from rohrpost.filter import Filter


class UnknownFilterError(LookupError):
    """No filter with that name; the message lists near matches."""


def module_name(name: str) -> str:
    """The module that holds filter ``name``."""
    return "rohrpost.filters." + name.replace("-", "_")


def available() -> list[str]:
    """Names of every filter module, sorted (without importing them)."""
    return list(_available())


@functools.cache
def _available() -> tuple[str, ...]:
    # Listed once per process: building a pipeline looked the folder up once per filter.
    import rohrpost.filters as pkg

    return tuple(sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(pkg.__path__)
                        if not m.name.startswith("_")))


def load_filter_class(name: str) -> type[Filter]:
    """Import and return the filter class called ``name``.

    :raises UnknownFilterError: when there is no such filter (with a suggestion).
    """
    from rohrpost.options import suggest

    names = _available()
    if name not in names:
        raise UnknownFilterError(f"unknown filter {name!r}; {suggest(name, names)}")
    module = importlib.import_module(module_name(name))
    cls = getattr(module, "FILTER", None)
    if not (isinstance(cls, type) and issubclass(cls, Filter)):
        raise UnknownFilterError(f"module {module.__name__} defines no FILTER class")
    return cls
