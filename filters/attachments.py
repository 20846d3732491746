"""``attachments``: a banned-files policy in the spirit of amavis, judged by content and names.

Owns the filter's options, the per-class actions and the mapping of findings to symbols and a
verdict. The MIME walk is ``_mimewalk``'s, names ``_names``', types ``_filetypes``' and zip
listing ``_archives``'. Classes and their default actions:

=================  ===========  ==============================================================
class              default      finding
=================  ===========  ==============================================================
banned_name        reject       extension in ``banned_extensions`` or name in ``banned_names``
banned_type        reject       content is a type in ``banned_types`` whatever name/type it claims
double_extension   reject       ``invoice.pdf.exe``, ``photo.jpg      .scr``
bidi               reject       U+202E and other bidi controls in a file name
encrypted_archive  score:3      a zip member with the encryption flag
office_macro       score:5      a VBA project in OLE2 (``.doc``/``.xls``) or OOXML (vbaProject.bin)
pdf_javascript     score:2      a PDF with /JavaScript, /JS or /Launch
archive_bomb       reject       nesting, member count, size, ratio limits; overlapping entries
mime_ambiguous     reject       parser differential: duplicate headers or parameters that differ
mime_too_complex   reject       more parts, depth or decoded bytes than the limits
=================  ===========  ==============================================================

An action is ``reject``, ``quarantine``, ``discard``, ``score:N`` or ``ignore``. The analysis
runs in a worker thread (``Context.run_blocking``) because it is CPU work on possibly large
messages; every loop in it is bounded by the limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from rohrpost.filter import Context, Filter, Mail, Stage
from rohrpost.result import NOTHING, Action, FilterResult, Symbol, Verdict

from ._archives import ArchiveLimits, list_zip
from ._filetypes import ole_has_macros, pdf_active, sniff
from ._mimewalk import Limits, Walk, walk
from ._names import DEFAULT_BANNED_EXTENSIONS, DEFAULT_DECOY_EXTENSIONS, NamePolicy, shown

DEFAULT_ACTIONS = {
    "banned_name": "reject", "banned_type": "reject", "double_extension": "reject",
    "bidi": "reject", "encrypted_archive": "score:3", "office_macro": "score:5",
    "pdf_javascript": "score:2", "archive_bomb": "reject", "mime_ambiguous": "reject",
    "mime_too_complex": "reject",
}
SYMBOLS = {
    "banned_name": "ATTACH_BANNED_NAME", "banned_type": "ATTACH_BANNED_TYPE",
    "double_extension": "ATTACH_DOUBLE_EXT", "bidi": "ATTACH_BIDI_NAME",
    "encrypted_archive": "ATTACH_ENCRYPTED", "office_macro": "ATTACH_OFFICE_MACRO",
    "pdf_javascript": "ATTACH_PDF_JAVASCRIPT", "archive_bomb": "ATTACH_ARCHIVE_BOMB",
    "mime_ambiguous": "MIME_AMBIGUOUS", "mime_too_complex": "MIME_TOO_COMPLEX",
}
REPLIES = {
    "mime_ambiguous": "554 5.6.0 Ambiguous MIME structure",
    "mime_too_complex": "554 5.6.0 MIME structure too complex",
    "archive_bomb": "554 5.7.1 Message rejected: archive exceeds limits",
    "encrypted_archive": "554 5.7.1 Message rejected: encrypted archive",
    "office_macro": "554 5.7.1 Message rejected: Office document with macros",
    "pdf_javascript": "554 5.7.1 Message rejected: PDF with JavaScript",
}
_ACTION_RE = re.compile(r"^(reject|quarantine|discard|ignore|score:[-+]?\d+(\.\d+)?)$")
_RANK = {"reject": 3, "discard": 2, "quarantine": 1}
MAX_REASONS = 5


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass(frozen=True)
class AttachmentsOptions:
    """Options of the ``attachments`` filter."""

    banned_extensions: list[str] = field(default_factory=lambda: list(
        DEFAULT_BANNED_EXTENSIONS), metadata=_h("extensions (no dot) that are banned"))
    decoy_extensions: list[str] = field(default_factory=lambda: list(
        DEFAULT_DECOY_EXTENSIONS), metadata=_h("harmless-looking extensions for double_extension"))
    banned_names: list[str] = field(default_factory=list, metadata=_h(
        "glob patterns on the lower-cased name, e.g. 'winmail.dat'"))
    banned_types: list[str] = field(default_factory=lambda: [
        "pe", "dosexe", "elf", "macho", "lnk"], metadata=_h(
        "content types by magic: pe dosexe elf macho lnk script zip ole2 pdf rar 7z gzip "
        "bzip2 xz cab iso rtf"))
    actions: dict[str, str] = field(default_factory=dict, metadata=_h(
        "class = 'reject' | 'quarantine' | 'discard' | 'score:N' | 'ignore'"))
    check_archives: bool = field(default=True, metadata=_h("list zips, nested, within limits"))
    max_parts: int = field(default=1000, metadata=_h("MIME parts before mime_too_complex"))
    max_depth: int = field(default=50, metadata=_h("MIME nesting before mime_too_complex"))
    max_decoded: int = field(default=100 * 1024 * 1024, metadata=_h("decoded bytes, all parts"))
    mime_resolve: Literal["all", "first", "last"] = field(default="all", metadata=_h(
        "ambiguous parts are checked in every reading (all) or the first/last one"))
    archive_max_depth: int = field(default=3, metadata=_h("nested archive levels"))
    archive_max_members: int = field(default=1000, metadata=_h("members of an archive tree"))
    archive_max_total: int = field(default=100 * 1024 * 1024, metadata=_h(
        "declared uncompressed bytes of an archive tree"))
    archive_max_ratio: float = field(default=100.0, metadata=_h(
        "compression ratio of a member (over 1 MiB) counted as a bomb"))

    def __post_init__(self) -> None:
        for cls, action in self.actions.items():
            if cls not in DEFAULT_ACTIONS:
                raise ValueError(f"actions: unknown class {cls!r}; classes: "
                                 + ", ".join(DEFAULT_ACTIONS))
            if not _ACTION_RE.match(action):
                raise ValueError(f"actions.{cls}: {action!r} is not reject, quarantine, "
                                 "discard, ignore or score:N")
        for name in ("max_parts", "max_depth", "max_decoded", "archive_max_depth",
                     "archive_max_members", "archive_max_total"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


class Attachments(Filter):
    """Judge attachments by name and content; archives listed; MIME ambiguity refused."""

    name = "attachments"
    description = "Banned names and types, double extensions, bidi tricks, archives, macros."
    stage = Stage.EOM
    Options = AttachmentsOptions

    def __init__(self, options: AttachmentsOptions) -> None:
        super().__init__(options)
        self.opts = options
        self.actions = {**DEFAULT_ACTIONS, **options.actions}
        self.names = NamePolicy(options.banned_extensions, options.decoy_extensions,
                                options.banned_names)
        self.limits = Limits(options.max_parts, options.max_depth, options.max_decoded,
                             options.mime_resolve)
        self.archive_limits = ArchiveLimits(options.archive_max_depth,
                                            options.archive_max_members,
                                            options.archive_max_total, options.archive_max_ratio)

    async def check(self, ctx: Context, mail: Mail) -> FilterResult:
        """Walk the message in a worker thread and turn findings into a result."""
        if mail.message is None:
            return NOTHING
        return await ctx.run_blocking(self.analyse, mail.message.without_from_line())

    def analyse(self, raw: bytes) -> FilterResult:
        """Return the findings for ``raw`` as symbols, facts and the strongest action."""
        tree = walk(raw, self.limits)
        findings = self.findings(tree)
        return self.result(findings, tree)

    def findings(self, tree: Walk) -> list[tuple[str, str]]:
        """Every ``(class, detail)`` found in the walked tree, in message order."""
        found: list[tuple[str, str]] = []
        if tree.too_complex:
            found.append(("mime_too_complex", tree.too_complex))
        found += [("mime_ambiguous", a) for a in tree.ambiguous]
        banned = set(self.opts.banned_types)
        for leaf in tree.leaves:
            label = shown(leaf.names[0]) if leaf.names else f"part {leaf.path}"
            for name in leaf.names:
                found += self.names.check(name)
            kind = sniff(leaf.data)
            if kind in banned:
                found.append(("banned_type", f"{kind} content in {label} (declared "
                                             f"{shown(leaf.content_type, 60)})"))
            if kind == "ole2" and ole_has_macros(leaf.data):
                found.append(("office_macro", f"VBA macros in {label}"))
            if kind == "pdf" and (keys := pdf_active(leaf.data)):
                found.append(("pdf_javascript", f"{'/'.join(keys)} in {label}"))
            if kind == "zip" and self.opts.check_archives:
                found += self.archive(leaf.data, label, banned)
        return found

    def archive(self, data: bytes, label: str, banned: set[str]) -> list[tuple[str, str]]:
        """Return the findings inside one zip (and the zips in it)."""
        listing = list_zip(data, label, self.archive_limits)
        found = [("archive_bomb", b) for b in listing.bombs]
        if listing.macro:
            found.append(("office_macro", f"vbaProject.bin in {label}"))
        for member in listing.members:
            found += [(c, f"{d} (in {shown(member.path)})") for c, d in
                      self.names.check(member.name)]
            if member.encrypted:
                found.append(("encrypted_archive", f"encrypted {shown(member.path)}"))
            if member.type in banned:
                found.append(("banned_type", f"{member.type} content in {shown(member.path)}"))
            if member.macro:
                found.append(("office_macro", f"VBA macros in {shown(member.path)}"))
            if member.pdf_active:
                found.append(("pdf_javascript", f"{'/'.join(member.pdf_active)} in "
                                                f"{shown(member.path)}"))
        return found

    def result(self, findings: list[tuple[str, str]], tree: Walk) -> FilterResult:
        """One symbol per class (details joined), the score, and the strongest action."""
        by_class: dict[str, list[str]] = {}
        for cls, detail in findings:
            if self.actions[cls] != "ignore" and detail not in by_class.setdefault(cls, []):
                by_class[cls].append(detail)
        symbols: list[Symbol] = []
        verdict: Verdict | None = None
        rank = 0
        for cls, details in by_class.items():
            if not details:
                continue
            action = self.actions[cls]
            score = float(action.split(":", 1)[1]) if action.startswith("score:") else 0.0
            more = f" (+{len(details) - MAX_REASONS} more)" if len(details) > MAX_REASONS else ""
            reason = "; ".join(details[:MAX_REASONS]) + more
            symbols.append(Symbol(SYMBOLS[cls], score, reason))
            if _RANK.get(action, 0) > rank:
                rank = _RANK[action]
                verdict = self.verdict(cls, action, details[0])
        facts = {"attachments.names": tuple(n for leaf in tree.leaves for n in leaf.names),
                 "attachments.classes": tuple(by_class), "attachments.parts": tree.parts}
        return FilterResult(verdict=verdict, symbols=symbols, facts=facts)

    def verdict(self, cls: str, action: str, detail: str) -> Verdict:
        """Return the verdict for the first finding of the strongest action."""
        if action == "reject":
            reply = REPLIES.get(cls, f"554 5.7.1 Message rejected: banned attachment ({detail})")
            return Verdict.of(Action.REJECT, reply, f"{cls}: {detail}", self.name)
        kind = Action.QUARANTINE if action == "quarantine" else Action.DISCARD
        return Verdict.of(kind, "", f"{cls}: {detail}", self.name)


FILTER = Attachments
