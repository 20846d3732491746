"""Where a key sits in a TOML file, so every configuration error names file and line.

Owns ``KeyLines``: a line scanner that maps dotted key paths such as ``filter[2].rule[0].regex``
to line numbers. ``tomllib`` gives values but no positions; this scanner follows table headers,
array-of-tables counters and ``key =`` lines, which is all configuration errors need.
"""

from __future__ import annotations

import re

_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-\"]+(?:\s*\.\s*[A-Za-z0-9_\-\"]+)*)\s*=")


class KeyLines:
    """Map dotted key paths to 1-based line numbers in one TOML text."""

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        counters: dict[str, int] = {}
        table = ""
        for lineno, line in enumerate(text.splitlines(), 1):
            header = _HEADER_RE.match(line)
            if header:
                parts = [p.strip().strip('"') for p in header.group(2).split(".")]
                table = self._table_path(parts, header.group(1) == "[[", counters, table)
                self.lines.setdefault(table, lineno)
                continue
            key = _KEY_RE.match(line)
            if key:
                name = ".".join(p.strip().strip('"') for p in key.group(1).split("."))
                self.lines.setdefault(f"{table}.{name}" if table else name, lineno)

    def _table_path(self, parts: list[str], is_array: bool, counters: dict[str, int],
                    current: str) -> str:
        # resolve each prefix to its latest array element ("filter" -> "filter[3]")
        path = ""
        for i, part in enumerate(parts):
            plain = f"{path}.{part}" if path else part
            last = i == len(parts) - 1
            if last and is_array:
                counters[plain] = counters.get(plain, -1) + 1
                # children of an earlier element must restart counting
                for k in [k for k in counters if k.startswith(plain + "[")]:
                    del counters[k]
                path = f"{plain}[{counters[plain]}]"
            elif plain in counters:
                path = f"{plain}[{counters[plain]}]"
            else:
                path = plain
        del current
        return path

    def line_of(self, path: str) -> int:
        """The line of ``path`` or of its nearest known parent; 0 when unknown."""
        while path:
            if path in self.lines:
                return self.lines[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return 0
