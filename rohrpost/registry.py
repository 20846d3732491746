"""Find filters by name: ``dkim-verify`` is class ``FILTER`` in ``rohrpost.filters.dkim_verify``.

Owns name-to-class lookup and the list of available filters. Modules are imported only when a
filter is used, so a pipeline pays start-up time only for its own filters.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Sequence

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

    return tuple(sorted(name.replace("_", "-") for name in submodules(list(pkg.__path__))
                        if not name.startswith("_")))


def submodules(path: Sequence[str]) -> list[str]:
    """The names ``pkgutil.iter_modules(path)`` lists, in its order.

    For folders the same rule, without ``pkgutil``'s import of ``inspect`` (a twentieth of a
    pipe-mode start, for ``inspect.getmodulename``): a file whose name ends in an import
    suffix, or a folder with an ``__init__`` module; no dots in names, ``__init__`` skipped,
    each name once. A path entry that is not a folder (a zip file) goes to pkgutil.
    """
    if not all(os.path.isdir(folder) for folder in path):
        import pkgutil

        return [m.name for m in pkgutil.iter_modules(path)]
    from importlib.machinery import all_suffixes

    suffixes = sorted(all_suffixes(), key=len, reverse=True)  # longest first, as inspect does

    def module_name(filename: str) -> str | None:
        return next((filename[: -len(s)] for s in suffixes if filename.endswith(s)), None)

    def listing(folder: str) -> list[str]:
        try:
            return sorted(os.listdir(folder))  # packages before same-named modules
        except OSError:
            return []

    names: dict[str, None] = {}
    for folder in path:
        for filename in listing(folder):
            name = module_name(filename)
            if name == "__init__" or name in names:
                continue
            if not name and "." not in filename and os.path.isdir(os.path.join(folder, filename)):
                if "__init__" not in map(module_name, listing(os.path.join(folder, filename))):
                    continue  # a folder, not a package
                name = filename
            if name and "." not in name:
                names[name] = None
    return list(names)


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
