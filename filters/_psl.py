"""The public suffix list: registered domains ("eTLD+1") and top-level domain checks.

Owns ``PublicSuffixList``, a small parser and matcher for the file format of
https://publicsuffix.org/list/ (rules, ``*.`` wildcards, ``!`` exceptions, ICANN and PRIVATE
sections), read from Debian's ``publicsuffix`` package by default. No branch of rohrpost had a
PSL helper when URIBL needed one, and the one-file format does not justify a dependency. Rules
are stored IDNA-encoded (``xn--``), the form in which hosts are compared. No I/O after loading.
"""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_PATH = "/usr/share/publicsuffix/public_suffix_list.dat"


def to_ascii(name: str) -> str | None:
    """``name`` lower case and IDNA-encoded label by label, or None if it cannot be."""
    name = name.strip().rstrip(".").lower()
    if name.isascii():
        return name
    labels = []
    for label in name.split("."):
        try:
            labels.append(label.encode("idna").decode("ascii") if label else "")
        except UnicodeError:
            return None
    return ".".join(labels)


class PublicSuffixList:
    """Public suffix rules; ``registered_domain("a.b.example.co.uk") == "example.co.uk"``."""

    def __init__(self, lines: Iterable[str]) -> None:
        self.rules: set[str] = set()
        self.wildcards: set[str] = set()  # "ck" for the rule "*.ck"
        self.exceptions: set[str] = set()  # "www.ck" for the rule "!www.ck"
        self.tlds: set[str] = set()
        for raw in lines:
            line = raw.strip().split()[0] if raw.strip() else ""
            if not line or line.startswith("//"):
                continue
            rule = to_ascii(line.lstrip("!"))
            if not rule:
                continue
            self.tlds.add(rule.rsplit(".", 1)[-1])
            if line.startswith("!"):
                self.exceptions.add(rule)
            elif rule.startswith("*."):
                self.wildcards.add(rule[2:])
            else:
                self.rules.add(rule)

    @classmethod
    def load(cls, path: str = DEFAULT_PATH) -> PublicSuffixList:
        """Read the list from ``path``.

        :raises OSError: when the file cannot be read (install Debian's ``publicsuffix``).
        """
        with open(path, encoding="utf-8") as fh:
            return cls(fh)

    def suffix_length(self, labels: list[str]) -> int:
        """How many trailing labels of ``labels`` form the public suffix (at least 1)."""
        best = 1  # the implicit "*" rule: an unlisted TLD is a public suffix
        for i in range(len(labels)):
            candidate = ".".join(labels[i:])
            size = len(labels) - i
            if candidate in self.exceptions:
                return size - 1
            if candidate in self.rules:
                best = max(best, size)
            if i > 0 and candidate in self.wildcards:
                best = max(best, size + 1)
        return best

    def registered_domain(self, host: str) -> str | None:
        """Return the public suffix plus one label, or None when ``host`` is a suffix."""
        name = to_ascii(host)
        if not name or ".." in name:
            return None
        labels = name.split(".")
        size = self.suffix_length(labels)
        if size >= len(labels):
            return None
        return ".".join(labels[-size - 1:])

    def known_tld(self, host: str) -> bool:
        """Tell whether the last label of ``host`` is a top-level domain the list knows."""
        name = to_ascii(host)
        return name is not None and name.rsplit(".", 1)[-1] in self.tlds
