"""Typed options: turn a TOML table (or command-line strings) into a filter's option table.

Owns ``OptionTable`` and ``option`` (how option tables are declared), ``OptionError`` and
``build_options``. Supported field types: ``str``, ``int``, ``float``, ``bool``, ``Literal[...]``,
``list[X]``/``tuple[X, ...]`` of those, ``dict[str, X]``, nested option tables and lists of them
(rules, keys). Unknown keys are errors with a suggestion from the known names, so a typo never
silently disables a setting.

An option table is a class derived from ``OptionTable`` (the configuration sections, the
filters' ``Options``) or a frozen dataclass (filters written that way keep working). Both
declare fields the same way; ``OptionTable`` exists because ``@dataclass`` compiles generated
methods with ``exec`` for every class, which cost pipe mode ~1 ms per class at start-up
(docs/performance.md, finding 19); its ``__init__``, ``__repr__``, ``__eq__`` and ``__hash__``
are written once here and read the fields from the class.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import (
    Any,
    ClassVar,
    Literal,
    TypeVar,
    dataclass_transform,
    get_args,
    get_origin,
    overload,
)

from rohrpost.record import FrozenInstanceError

T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: "no default": the field is required (``dataclasses.MISSING`` for option tables)
MISSING: Any = _Missing()


class Option:
    """One field of an option table, as ``dataclasses.Field`` describes a dataclass field.

    Made by :func:`option` in a class body; ``name`` is filled in when the class is created.
    """

    __slots__ = ("compare", "default", "default_factory", "init", "metadata", "name", "repr")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING, *,
                 init: bool = True, repr: bool = True, compare: bool = True,
                 metadata: Mapping[str, Any] | None = None, name: str = "") -> None:
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = name
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare
        self.metadata: Mapping[str, Any] = types.MappingProxyType(dict(metadata or {}))

    def named(self, name: str) -> Option:
        """A copy of this field called ``name``."""
        return Option(self.default, self.default_factory, init=self.init, repr=self.repr,
                      compare=self.compare, metadata=self.metadata, name=name)

    @property
    def required(self) -> bool:
        """True when the field has neither a default nor a default factory."""
        return self.default is MISSING and self.default_factory is MISSING

    def __repr__(self) -> str:
        return (f"Option(name={self.name!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, init={self.init!r})")


@overload
def option(*, default: T, init: bool = True, repr: bool = True, compare: bool = True,
           metadata: Mapping[str, Any] | None = None) -> T: ...


@overload
def option(*, default_factory: Callable[[], T], init: bool = True, repr: bool = True,
           compare: bool = True, metadata: Mapping[str, Any] | None = None) -> T: ...


@overload
def option(*, init: bool = True, repr: bool = True, compare: bool = True,
           metadata: Mapping[str, Any] | None = None) -> Any: ...


def option(*, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True,
           repr: bool = True, compare: bool = True,
           metadata: Mapping[str, Any] | None = None) -> Any:
    """Declare a field of an ``OptionTable`` (the counterpart of ``dataclasses.field``).

    ``metadata={"help": "..."}`` is the text ``rohrpost filter --list`` shows.
    """
    return Option(default, default_factory, init=init, repr=repr, compare=compare,
                  metadata=metadata)


def _is_classvar(annotation: object) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return annotation is ClassVar or get_origin(annotation) is ClassVar


def _declared_fields(cls: type[Any]) -> dict[str, Option]:
    """The fields a table class declares itself; class attributes become the defaults."""
    out: dict[str, Option] = {}
    # not inspect.get_annotations: importing inspect is what option tables avoid
    own = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    for name, annotation in own.items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        opt = (value if isinstance(value, Option) else Option(value)).named(name)
        if opt.default is not MISSING and type(opt.default).__hash__ is None:
            raise ValueError(f"mutable default {type(opt.default)} for field {name} is not "
                             "allowed: use default_factory")
        out[name] = opt
        if opt.default is MISSING:
            if name in cls.__dict__:
                delattr(cls, name)
        else:
            setattr(cls, name, opt.default)
    return out


@dataclass_transform(frozen_default=True, field_specifiers=(option, Option))
class OptionTable:
    """Base class of a frozen option table: what ``@dataclass(frozen=True)`` would make of it.

    Fields are the annotated class attributes in order (a base table's fields first); a value
    is the default, ``option(...)`` gives a default factory, ``init=False``, ``metadata``. The
    instance has the dataclass's ``__init__`` (positional or keyword, then ``__post_init__``),
    ``repr``, equality, hash and immutability. ``class T(Base, init=False, repr=False,
    eq=False)`` keeps the base's method for that part, as those dataclass flags do.
    """

    #: every field, in order
    _options: ClassVar[dict[str, Option]] = {}
    #: what ``__init__`` sets, ``repr`` shows and equality compares (see ``__init_subclass__``)
    _init_plan: ClassVar[tuple[Option, ...]] = ()
    _init_names: ClassVar[frozenset[str]] = frozenset()
    _repr_names: ClassVar[tuple[str, ...]] = ()
    _compare_names: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, *, init: bool = True, repr: bool = True,
                          eq: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields = {**cls._options, **_declared_fields(cls)}
        defaulted = False
        for opt in fields.values():
            if not opt.init:
                continue
            if not opt.required:
                defaulted = True
            elif defaulted:
                raise TypeError(f"non-default argument {opt.name!r} follows default argument")
        cls._options = fields
        if init:
            cls._init_plan = tuple(fields.values())
            cls._init_names = frozenset(o.name for o in cls._init_plan if o.init)
        if repr:
            cls._repr_names = tuple(o.name for o in fields.values() if o.repr)
        if eq:
            cls._compare_names = tuple(o.name for o in fields.values() if o.compare)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        where = f"{cls.__qualname__}.__init__()"
        positional = [o.name for o in cls._init_plan if o.init]
        if len(args) > len(positional):
            raise TypeError(f"{where} takes {len(positional) + 1} positional arguments but "
                            f"{len(args) + 1} were given")
        values = dict(zip(positional, args, strict=False))
        for key, value in kwargs.items():
            if key not in cls._init_names:
                raise TypeError(f"{where} got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{where} got multiple values for argument {key!r}")
            values[key] = value
        missing = [name for name in positional if name not in values
                   and cls._options[name].required]
        if missing:
            quoted = [repr(n) for n in missing]
            names = quoted[0] if len(quoted) == 1 else (
                f"{quoted[0]} and {quoted[1]}" if len(quoted) == 2
                else ", ".join(quoted[:-1]) + ", and " + quoted[-1])
            raise TypeError(f"{where} missing {len(missing)} required positional "
                            f"argument{'s' if len(missing) > 1 else ''}: {names}")
        for opt in cls._init_plan:
            if opt.init and opt.name in values:
                value = values[opt.name]
            elif opt.default is not MISSING:
                value = opt.default
            elif opt.default_factory is not MISSING:
                value = opt.default_factory()
            else:
                continue
            object.__setattr__(self, opt.name, value)
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._repr_names)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._compare_names)

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


def option_fields(cls: type[Any]) -> list[Option]:
    """The fields of option table ``cls`` (an ``OptionTable`` or a dataclass), in order."""
    if issubclass(cls, OptionTable):
        return list(cls._options.values())
    import dataclasses

    def given(value: Any) -> Any:
        return MISSING if value is dataclasses.MISSING else value

    return [Option(given(f.default), given(f.default_factory), init=f.init, repr=f.repr,
                   compare=f.compare, metadata=f.metadata, name=f.name)
            for f in dataclasses.fields(cls)]


def is_table(tp: object) -> bool:
    """True when ``tp`` is an option table class (``OptionTable`` or dataclass)."""
    return isinstance(tp, type) and (issubclass(tp, OptionTable)
                                     or hasattr(tp, "__dataclass_fields__"))


_HINTS: dict[type[Any], dict[str, Any]] = {}
_EVALUATED: dict[tuple[str, str], tuple[tuple[str, ...], Any]] = {}


def type_hints(cls: type[Any]) -> dict[str, Any]:
    """The type of each field of option table ``cls``: ``typing.get_type_hints``, but cheaper.

    Annotations are strings (``from __future__ import annotations``); get_type_hints compiles
    each one on every call, which was most of loading a configuration (~100 compiles for the
    default pipeline.toml, ~25 M instructions). Here each class is evaluated once, and for an
    ``OptionTable`` each distinct string once per module (a plain name without compiling).
    The result is get_type_hints' (a test compares them for every table); an annotation that
    uses a name of the class body, which get_type_hints would also look up, goes to it.
    """
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = _field_hints(cls) if issubclass(cls, OptionTable) else \
            typing.get_type_hints(cls)
    return hints


def _field_hints(cls: type[OptionTable]) -> dict[str, Any]:
    import sys

    hints: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        own = base.__dict__.get("__annotations__", {})  # noqa: RUF063 - see _declared_fields
        scope = vars(sys.modules[base.__module__])
        for name, annotation in own.items():
            if name not in cls._options:
                continue
            if not isinstance(annotation, str):
                hints[name] = type(None) if annotation is None else annotation
                continue
            key = (base.__module__, annotation)
            if key not in _EVALUATED:
                try:
                    _EVALUATED[key] = _evaluate(annotation, scope)
                except NameError:
                    return typing.get_type_hints(cls)
            names, value = _EVALUATED[key]
            if any(n in base.__dict__ and n not in scope for n in names):
                return typing.get_type_hints(cls)  # a class attribute would shadow a builtin
            hints[name] = value
    return hints


def _evaluate(annotation: str, scope: dict[str, Any]) -> tuple[tuple[str, ...], Any]:
    """The names ``annotation`` uses and its value in module ``scope`` (then builtins)."""
    import builtins

    names: tuple[str, ...]
    if annotation.isidentifier() and annotation in scope:
        names, value = (annotation,), scope[annotation]
    elif annotation.isidentifier() and hasattr(builtins, annotation):
        names, value = (annotation,), getattr(builtins, annotation)
    else:
        code = compile(annotation, "<annotation>", "eval")
        names, value = code.co_names, eval(code, dict(scope))  # noqa: S307 - our annotations
    return names, type(None) if value is None else value


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
    if is_table(tp):
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
    if is_table(tp):
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
    """Validate ``table`` against option table ``cls`` and return an instance.

    :param from_text: values may be strings to convert (command-line ``--option VALUE``).
    :raises OptionError: unknown key (with a suggestion), wrong type, missing required key.
    """
    hints = type_hints(cls)
    fields = {f.name: f for f in option_fields(cls)}
    aliases = {name.replace("_", "-"): name for name in fields}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        fname = key if key in fields else aliases.get(key, "")
        if not fname:
            raise OptionError(f"{path}.{key}" if path else key, "unknown option",
                              suggest(key, list(fields)))
        kwargs[fname] = _convert(hints[fname], value, f"{path}.{key}" if path else key, from_text)
    for name, f in fields.items():
        if f.required and name not in kwargs:
            raise OptionError(f"{path}.{name}" if path else name, "is required")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise OptionError(path, str(exc)) from None


_PARAM_RE = r":param (\w+):\s*(.*?)(?=\n\s*:param |\n\s*\n|\Z)"


def param_help(cls: type[Any]) -> dict[str, str]:
    """``:param name: text`` entries of a class docstring, joined into one line each."""
    return {m.group(1): " ".join(m.group(2).split())
            for m in re.finditer(_PARAM_RE, cls.__doc__ or "", re.S)}


def describe_options(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for each option, for ``rohrpost filter --list``.

    Help comes from the field's ``metadata["help"]`` or from ``:param name:`` in the class
    docstring.
    """
    hints = type_hints(cls)
    doc_help = param_help(cls)
    rows = []
    for f in option_fields(cls):
        if f.default is not MISSING:
            default = repr(f.default)
        elif f.default_factory is not MISSING:
            default = repr(f.default_factory())
        else:
            default = "(required)"
        text = str(f.metadata.get("help", "")) or doc_help.get(f.name, "")
        rows.append((f.name, _type_name(hints[f.name]), default, text))
    return rows
