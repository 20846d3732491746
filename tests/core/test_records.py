"""Records and option tables behave as the dataclasses they replaced (docs/performance.md, 19).

``rohrpost.record`` and ``rohrpost.options.OptionTable`` exist for start-up time only; what
code and tests can observe (constructor, repr, equality, hash, immutability, fields, type
hints, copies) must be what ``@dataclass`` gave. Each check here compares with a real
dataclass declared the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import pickle
import pkgutil
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rohrpost import (
    changes,
    config,
    dns,
    envelope,
    envsource,
    filter,
    message,
    pipeline,
    policy,
    result,
    runner,
)
from rohrpost.options import (
    MISSING,
    OptionTable,
    build_options,
    describe_options,
    option,
    option_fields,
    type_hints,
)
from rohrpost.record import FrozenInstanceError, FrozenRecord, Record, replace
from rohrpost.registry import available, load_filter_class, submodules

RECORDS: list[type[Record]] = [
    result.Reply, result.Verdict, result.Symbol, result.AuthResult, result.FilterResult,
    changes.AddHeader, changes.InsertHeader, changes.ChangeHeader, changes.ReplaceBody,
    changes.AddRecipient, changes.DeleteRecipient, changes.ChangeSender, envelope.Envelope,
    message.Header, filter.Mail, filter.Context, pipeline.Step, pipeline.StepRun,
    pipeline.Session, runner.Processed, policy.Outcome, envsource.EnvelopeArgs, config.Config,
    config.FilterSpec, dns.DnsAnswer, dns.DnsConfig,
]
DKIM_RECORDS = {"rohrpost.filters._dkim_verifier": ("VerifyPolicy", "SignatureResult"),
                "rohrpost.filters._dkim_adapter": ("PrivateKey", "ArcResult")}
RECORDS += [getattr(importlib.import_module(module), name)
            for module, names in DKIM_RECORDS.items() for name in names]


def _all_records() -> Iterator[type[Record]]:
    stack: list[type[Record]] = [Record]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls not in (Record, FrozenRecord):
            yield cls


def test_every_record_is_checked_here() -> None:
    for name in ("rohrpost.services", "rohrpost.apply", "rohrpost.quarantine", "rohrpost.pipemode"):
        importlib.import_module(name)
    assert {c for c in _all_records() if c.__module__.startswith("rohrpost.")} == set(RECORDS)


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_fields_are_the_init_parameters_in_order(cls: type[Record]) -> None:
    params = list(inspect.signature(cls.__init__).parameters)[1:]
    assert tuple(params) == cls._fields
    if "__slots__" in cls.__dict__:
        assert tuple(cls.__slots__) == cls._fields


def _twin(cls: type[Record]) -> type[Any]:
    """A dataclass with the same fields, frozen as ``cls`` is."""
    return dataclasses.make_dataclass(cls.__name__, cls._fields,
                                      frozen=issubclass(cls, FrozenRecord))


def test_records_compare_hash_and_freeze_like_dataclasses() -> None:
    a, b, c = result.Symbol("A", 1.0, "x"), result.Symbol("A", 1.0, "x"), result.Symbol("A")
    twin = _twin(result.Symbol)
    ta, tc = twin("A", 1.0, "x"), twin("A", 0.0, "")
    assert repr(a) == repr(ta) == "Symbol(name='A', score=1.0, reason='x')"
    assert (a == b, a == c, a != c) == (ta == twin("A", 1.0, "x"), ta == tc, ta != tc)
    assert hash(a) == hash(b) == hash(ta)
    assert a.__eq__(ta) is NotImplemented and a != ("A", 1.0, "x")
    with pytest.raises(FrozenInstanceError, match="cannot assign to field 'score'"):
        a.score = 2.0  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del a.name  # type: ignore[misc]
    assert isinstance(FrozenInstanceError(), AttributeError)
    nan = result.Symbol("N", float("nan"))
    assert nan == nan  # tuple comparison: identity first, as a dataclass's __eq__
    run = pipeline.StepRun("f", filter.Stage.EOM, result.FilterResult(), 1.0)
    with pytest.raises(TypeError, match="unhashable"):
        hash(run)
    run.rcpt = "x@example.org"  # mutable records stay mutable
    assert run == pipeline.StepRun("f", filter.Stage.EOM, result.FilterResult(), 1.0,
                                   rcpt="x@example.org")
    with pytest.raises(TypeError, match="unhashable"):
        hash(result.FilterResult())  # a dict field: unhashable, as the dataclass was


def test_defaults_are_fresh_per_instance_and_replace_works() -> None:
    one, two = envelope.Envelope(), envelope.Envelope()
    assert one.tls == {} and one.tls is not two.tls
    assert result.FilterResult().facts is not result.FilterResult().facts
    env = envelope.Envelope(mail_from="a@example.org", rcpts=("b@example.net",))
    moved = env.replace(rcpts=("c@example.net",))
    assert (moved.mail_from, moved.rcpts) == ("a@example.org", ("c@example.net",))
    assert replace(result.Symbol("A", 1.0), reason="r") == result.Symbol("A", 1.0, "r")
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        env.replace(nope=1)


def test_a_field_left_out_of_repr_stays_out() -> None:
    adapter = importlib.import_module("rohrpost.filters._dkim_adapter")
    key = adapter.PrivateKey("rsa", {"private": 1}, "MIIB", 2048, b"-----BEGIN")
    assert repr(key) == "PrivateKey(kind='rsa', public='MIIB', bits=2048)"
    assert key == adapter.PrivateKey("rsa", {"private": 1}, "MIIB", 2048, b"-----BEGIN")


def test_validation_still_happens_at_construction() -> None:
    with pytest.raises(ValueError, match="out of range"):
        result.Reply(600, "", "x")
    with pytest.raises(ValueError, match="needs a 5xx reply"):
        result.Verdict(result.Action.REJECT, result.Reply(250, "2.0.0", "Ok"))
    assert result.Reply(250, "2.0.0", "a\r\nb").text == "a  b"
    with pytest.raises(changes.ChangeError):
        changes.AddHeader("Bad Name", "x")
    assert changes.AddHeader("X-A", "a\nb").value == "a b"
    with pytest.raises(changes.ChangeError):
        changes.InsertHeader(-1, "X-A", "a")
    assert changes.ChangeHeader("X-A", 1, None).value is None


@pytest.mark.parametrize("value", [
    result.Symbol("A", 1.0, "x"), changes.AddHeader("X-A", "v"), envelope.Envelope(helo="h"),
    message.Header("Subject", b"Subject: x\n"),
])
def test_frozen_records_copy_and_pickle(value: FrozenRecord) -> None:
    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value
    assert pickle.loads(pickle.dumps(value)) == value


# -- option tables ---------------------------------------------------------------------------


class Table(OptionTable):
    """A table using every feature the configuration and the filters use."""

    name: str = option(metadata={"help": "required"})
    count: int = 3
    ratio: float | None = None
    mode: Literal["a", "b"] = option(default="a", metadata={"help": "a or b"})
    items: list[str] = option(default_factory=lambda: ["x"])
    derived: str = option(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must not be negative")
        object.__setattr__(self, "derived", self.name.upper())


@dataclasses.dataclass(frozen=True)
class Twin:
    """The same table as a frozen dataclass."""

    name: str = dataclasses.field(metadata={"help": "required"})
    count: int = 3
    ratio: float | None = None
    mode: Literal["a", "b"] = dataclasses.field(default="a", metadata={"help": "a or b"})
    items: list[str] = dataclasses.field(default_factory=lambda: ["x"])
    derived: str = dataclasses.field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must not be negative")
        object.__setattr__(self, "derived", self.name.upper())


class Sub(Table, init=False, repr=False, eq=False):
    """As ``RuleSpec``: an extra field, the base's init, repr and equality."""

    __annotations__ = {"extra": "bool"}
    vars()["extra"] = False

    def __init__(self, **kwargs: Any) -> None:
        Table.__init__(self, **{k: v for k, v in kwargs.items() if k != "extra"})


def test_option_table_behaves_like_a_frozen_dataclass() -> None:
    for args, kwargs in (((), {"name": "n"}), (("n", 5), {}), (("n",), {"items": ["y"]}),
                         (("n", 1, 0.5, "b", []), {})):
        mine, theirs = Table(*args, **kwargs), Twin(*args, **kwargs)
        assert repr(mine) == repr(theirs).replace("Twin", "Table")
        assert {f.name: getattr(mine, f.name) for f in dataclasses.fields(Twin)} == \
            dataclasses.asdict(theirs)
        assert mine == Table(*args, **kwargs)
    for unhashable in (Table("n"), Twin("n")):  # a list field, as the dataclass
        with pytest.raises(TypeError, match="unhashable"):
            hash(unhashable)
    assert Table("n").items is not Table("n").items
    assert Table("n") != Table("m") and Table("n").__eq__(Twin("n")) is NotImplemented
    assert hash(Table("n", items=())) == hash(Table("n", items=()))  # type: ignore[arg-type]
    assert (Table.count, Table.mode) == (Twin.count, Twin.mode)
    assert "name" not in vars(Table) and "items" not in vars(Table)  # as dataclasses do
    with pytest.raises(FrozenInstanceError):
        Table("n").count = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="negative"):
        Table("n", -1)
    for bad_args, bad_kwargs, error in (((), {}, "missing 1 required positional argument: "
                                                 "'name'"),
                                        (("n",), {"name": "m"}, "multiple values"),
                                        (("n",), {"derived": "x"}, "unexpected keyword"),
                                        (("n", 1, 2, "a", [], 9), {}, "positional arguments")):
        with pytest.raises(TypeError, match=error):
            Table(*bad_args, **bad_kwargs)
        with pytest.raises(TypeError, match=error):
            Twin(*bad_args, **bad_kwargs)


def test_option_table_refuses_what_dataclasses_refuse() -> None:
    with pytest.raises(ValueError, match="mutable default"):
        type("Bad", (OptionTable,), {"__annotations__": {"x": "list[str]"}, "x": []})
    with pytest.raises(TypeError, match="non-default argument 'y' follows default argument"):
        type("Bad", (OptionTable,), {"__annotations__": {"x": "int", "y": "int"}, "x": 1})


def test_subclass_keeps_the_base_methods_it_opts_out_of() -> None:
    sub = Sub(name="n", extra=True)
    assert repr(sub) == "Sub(name='n', count=3, ratio=None, mode='a', items=['x'])"
    assert sub == Sub(name="n") and sub.extra is False  # the class attribute, as RuleSpec
    assert [f.name for f in option_fields(Sub)] == [*(f.name for f in option_fields(Table)),
                                                    "extra"]


def test_fields_and_descriptions_match_the_dataclass() -> None:
    def view(fields: list[Any]) -> list[tuple[Any, ...]]:
        return [(f.name, f.default, f.init, dict(f.metadata)) for f in fields]

    theirs = [(f.name, MISSING if f.default is dataclasses.MISSING else f.default, f.init,
               dict(f.metadata)) for f in dataclasses.fields(Twin)]
    assert view(option_fields(Table)) == theirs
    assert view(option_fields(Twin)) == theirs  # dataclass tables still work
    assert describe_options(Table) == describe_options(Twin)
    table = {"name": "n", "count": 2, "mode": "b", "items": ["p", "q"]}
    assert vars(build_options(Table, table)) == vars(build_options(Twin, table))


def _tables() -> Iterator[type[OptionTable]]:
    for name in available():
        load_filter_class(name)
    stack = list(OptionTable.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.__module__.startswith("rohrpost."):
            yield cls


def test_type_hints_are_get_type_hints_for_every_table() -> None:
    tables = list(_tables())
    assert config.PipelineSection in tables and len(tables) > 10
    for cls in tables:
        hints = typing.get_type_hints(cls)
        assert type_hints(cls) == {f.name: hints[f.name] for f in option_fields(cls)}, cls


# -- small replacements for imports and regexes ----------------------------------------------


def test_filter_listing_is_pkgutils(tmp_path: Path) -> None:
    import rohrpost.filters

    path = list(rohrpost.filters.__path__)
    assert submodules(path) == [m.name for m in pkgutil.iter_modules(path)]
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two, one / "pkg", one / "notpkg", one / "both", one / "mod.py",
                   two / "pkg2", one / "__pycache__"):
        folder.mkdir(parents=True)
    for f in ("a.py", "b.cpython-311-x86_64-linux-gnu.so", "c.pyc", "d.txt", "__init__.py",
              "e.f.py", "both.py", "pkg/__init__.py", "notpkg/x.py", "both/__init__.py",
              "__pycache__/__init__.cpython-311.pyc"):
        (one / f).write_text("")
    for f in ("a.py", "z.py", "pkg2/__init__.pyc"):
        (two / f).write_text("")
    paths = [str(one), str(two), str(tmp_path / "missing")]
    assert submodules(paths) == [m.name for m in pkgutil.iter_modules(paths)]
    assert submodules(paths[:2]) == [m.name for m in pkgutil.iter_modules(paths[:2])]


@given(st.text())
def test_json_string_is_json_dumps(text: str) -> None:
    assert runner.json_string(text) == json.dumps(text)


def test_translations_are_the_regexes_they_replace() -> None:
    every = "".join(map(chr, range(0x110000)))
    assert result.safe_text(every, len(every)) == \
        re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", " ", every)
    assert result.safe_text(every) == re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]", " ", every)[:400]
    assert changes.clean_header_value("a\x00b\u2028c\x0bd\x0ce\x85f\tg") == "a b c d e f\tg"
    assert every.translate(changes._OTHER_BAD) == \
        re.sub(r"[\x00\u2028\u2029\x85\x0b\x0c]", " ", every)
