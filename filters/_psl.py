"""The public suffix list: organizational domains for DMARC alignment (RFC 7489 3.2).

Owns ``PublicSuffixList`` (load, ``public_suffix``, ``org_domain``). The list cannot be
downloaded at run time, so it is read from a local file: by default the one Debian's
``publicsuffix`` package installs (/usr/share/publicsuffix/public_suffix_list.dat), kept
current by the distribution's updates. Both the ICANN and the PRIVATE sections are used, as
OpenDMARC does, so ``a.github.io`` and ``b.github.io`` are different organizations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_PSL = "/usr/share/publicsuffix/public_suffix_list.dat"


def _ascii(rule: str) -> str:
    """Return a rule in A-label form (the list writes IDN rules in Unicode)."""
    if rule.isascii():
        return rule
    labels = []
    for label in rule.split("."):
        try:
            labels.append(label if label == "*" or label.isascii()
                          else label.encode("idna").decode("ascii"))
        except UnicodeError:
            labels.append(label)
    return ".".join(labels)


@dataclass(frozen=True)
class PublicSuffixList:
    """Rules of the public suffix list, split into plain, wildcard and exception rules."""

    rules: frozenset[str] = field(default_factory=frozenset)
    wildcards: frozenset[str] = field(default_factory=frozenset)
    exceptions: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str) -> PublicSuffixList:
        """Parse the list's text format (``//`` comments, one rule per line)."""
        rules: set[str] = set()
        wildcards: set[str] = set()
        exceptions: set[str] = set()
        for line in text.splitlines():
            parts = line.strip().split()
            if not parts or parts[0].startswith("//"):
                continue
            rule = _ascii(parts[0].lower().rstrip("."))
            if rule.startswith("!"):
                exceptions.add(rule[1:])
            elif rule.startswith("*."):
                wildcards.add(rule[2:])
            else:
                rules.add(rule)
        return cls(frozenset(rules), frozenset(wildcards), frozenset(exceptions))

    @classmethod
    def load(cls, path: str = DEFAULT_PSL) -> PublicSuffixList:
        """Read the list from ``path``.

        :raises OSError: when the file cannot be read.
        """
        with open(path, encoding="utf-8") as fh:
            return cls.parse(fh.read())

    def _suffix_labels(self, labels: list[str]) -> int:
        """Return how many rightmost labels form the public suffix (the default rule is 1)."""
        for i in range(len(labels)):
            name = ".".join(labels[i:])
            if name in self.exceptions:
                return len(labels) - i - 1
            if name in self.rules:
                return len(labels) - i
            if i + 1 < len(labels) and ".".join(labels[i + 1 :]) in self.wildcards:
                return len(labels) - i
        return 1

    def public_suffix(self, domain: str) -> str:
        """Return the public suffix of ``domain`` (lower case, no final dot)."""
        labels = domain.lower().rstrip(".").split(".")
        return ".".join(labels[-self._suffix_labels(labels) :])

    def org_domain(self, domain: str) -> str:
        """Return the organizational domain: the public suffix plus one label (RFC 7489 3.2).

        A domain that is itself a public suffix is its own organizational domain.
        """
        labels = domain.lower().rstrip(".").split(".")
        keep = min(len(labels), self._suffix_labels(labels) + 1)
        return ".".join(labels[-keep:])
