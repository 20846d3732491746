"""Typed options: turn a TOML table (or command-line strings) into a filter's options dataclass.

Owns ``OptionError`` and ``build_options``. Supported field types: ``str``, ``int``, ``float``,
``bool``, ``Literal[...]``, ``list[X]``/``tuple[X, ...]`` of those, ``dict[str, X]``, nested
option dataclasses and lists of them (rules, keys). Unknown keys are errors with a suggestion
from the known names, so a typo never silently disables a setting.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin


class OptionError(ValueError):
    """A bad option: ``path`` is the dotted key (``filter[2].rule[0].regex``)."""

    def __init__(self, path: str, message: str, suggestion: str = "") -> None:
        self.path = path
        self.message = message
        self.suggestion = suggestion
        text = f"{path}: {message}" if path else message
        super().__init__(text + (f" ({suggestion})" if suggestion else ""))


def suggest(key: str, known: Sequence[str]) -> str:
    """A "did you mean" hint for ``key`` among ``known`` names, or a list of them."""
    import difflib

    close = difflib.get_close_matches(key, known, n=1)
    if close:
        return f"did you mean '{close[0]}'?"
    return "known keys: " + ", ".join(sorted(known)) if known else ""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple, Sequence):
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin in (dict, Mapping):
        return f"table of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "table"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, path: str, from_text: bool) -> Any:  # noqa: PLR0911
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, path, from_text)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = ", ".join(map(repr, allowed))
            raise OptionError(path, f"must be one of {choices}, not {value!r}",
                              suggest(str(value), [str(a) for a in allowed]))
        return value
    if origin in (list, tuple, Sequence):
        (inner, *_rest) = get_args(tp)
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise OptionError(path, f"must be a {_type_name(tp)}, not {type(value).__name__}")
        items = [_convert(inner, v, f"{path}[{i}]", from_text) for i, v in enumerate(value)]
        return tuple(items) if origin is not list else items
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise OptionError(path, f"must be a table, not {type(value).__name__}")
        inner = get_args(tp)[1]
        return {str(k): _convert(inner, v, f"{path}.{k}", from_text) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise OptionError(path, f"must be a table, not {type(value).__name__}")
        return build_options(tp, value, path)
    return _scalar(tp, value, path, from_text)


def _scalar(tp: Any, value: Any, path: str, from_text: bool) -> Any:  # noqa: PLR0911, PLR0912
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        words = ("1", "true", "yes", "on", "0", "false", "no", "off")
        if from_text and isinstance(value, str) and value.lower() in words:
            return value.lower() in ("1", "true", "yes", "on")
        raise OptionError(path, f"must be true or false, not {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise OptionError(path, f"must be a whole number, not {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise OptionError(path, f"must be a number, not {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise OptionError(path, f"must be a string, not {value!r}")
    raise OptionError(path, f"unsupported option type {tp!r}")


def build_options(cls: type[Any], table: Mapping[str, Any], path: str = "",
                  *, from_text: bool = False) -> Any:
    """Validate ``table`` against dataclass ``cls`` and return an instance.

    :param from_text: values may be strings to convert (command-line ``--option VALUE``).
    :raises OptionError: unknown key (with a suggestion), wrong type, missing required key.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    aliases = {name.replace("_", "-"): name for name in fields}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        fname = key if key in fields else aliases.get(key, "")
        if not fname:
            raise OptionError(f"{path}.{key}" if path else key, "unknown option",
                              suggest(key, list(fields)))
        kwargs[fname] = _convert(hints[fname], value, f"{path}.{key}" if path else key, from_text)
    for name, f in fields.items():
        missing = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if missing and name not in kwargs:
            raise OptionError(f"{path}.{name}" if path else name, "is required")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise OptionError(path, str(exc)) from None


_PARAM_RE = re.compile(r":param (\w+):\s*(.*?)(?=\n\s*:param |\n\s*\n|\Z)", re.S)


def param_help(cls: type[Any]) -> dict[str, str]:
    """``:param name: text`` entries of a class docstring, joined into one line each."""
    return {m.group(1): " ".join(m.group(2).split())
            for m in _PARAM_RE.finditer(cls.__doc__ or "")}


def describe_options(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for each option, for ``rohrpost filter --list``.

    Help comes from the field's ``metadata["help"]`` or from ``:param name:`` in the class
    docstring.
    """
    hints = typing.get_type_hints(cls)
    doc_help = param_help(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = repr(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        text = str(f.metadata.get("help", "")) or doc_help.get(f.name, "")
        rows.append((f.name, _type_name(hints[f.name]), default, text))
    return rows
