#!/usr/bin/env python3
"""Write docs/options.md: every filter's options, types, defaults and help, from the code.

Run after changing a filter's options: `.venv/bin/python scripts/gen_options_doc.py`.
tests/core/test_packaging.py fails when the file is out of date.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rohrpost.options import describe_options, is_table, option_fields  # noqa: E402
from rohrpost.registry import available, load_filter_class  # noqa: E402


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(cls: type[typing.Any]) -> list[str]:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    init_names = {f.name for f in option_fields(cls) if f.init}
    for name, typ, default, help_text in describe_options(cls):
        if name in init_names:
            rows.append(f"| `{name}` | {_cell(typ)} | `{_cell(default)}` | {_cell(help_text)} |")
    return rows


def _nested(cls: type[typing.Any]) -> list[type[typing.Any]]:
    out = []
    for hint in typing.get_type_hints(cls).values():
        for arg in (*typing.get_args(hint), hint):
            inner = typing.get_args(arg) or (arg,)
            for t in inner:
                if is_table(t) and t not in out:
                    out.append(t)
    return out


def render() -> str:
    """The whole document."""
    lines = ["# Filter option reference", "",
             "Generated from the code by `scripts/gen_options_doc.py`; the same table is what",
             "`rohrpost filter --list` prints. Topic pages explain what the options mean together:",
             "[filters.md](filters.md), [authentication.md](authentication.md),",
             "[spam.md](spam.md), [virus.md](virus.md).", ""]
    for name in available():
        cls = load_filter_class(name)
        lines += [f"## `{name}`", "", f"{cls.description} (stage: {cls.stage.name.lower()})", ""]
        lines += _table(cls.Options)
        for sub in _nested(cls.Options):
            lines += ["", f"Keys of each `{sub.__name__}` table:", ""]
            lines += _table(sub)
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    (ROOT / "docs" / "options.md").write_text(render())
