r"""File-name checks for attachments: banned extensions and names, double extensions, bidi tricks.

Owns ``NamePolicy`` and ``shown``. A name is judged the way Windows and mail clients would treat
it: only the last path component, Unicode NFKC-normalised (full-width dots become dots), trailing
dots and spaces dropped (Windows ignores them), compared without case. A name that contains
bidirectional control characters (U+202E RIGHT-TO-LEFT OVERRIDE and friends, which make
``invoice\\u202Efdp.exe`` look like ``invoiceexe.pdf``) is flagged, and is also judged with them
removed. Returns findings as ``(class, detail)``; actions are the caller's.
"""

from __future__ import annotations

import fnmatch
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
DEFAULT_BANNED_EXTENSIONS = (
    "ade", "adp", "app", "application", "appx", "appxbundle", "bas", "bat", "chm", "cmd", "com",
    "cpl", "crt", "dll", "exe", "gadget", "hlp", "hta", "inf", "ins", "isp", "iso", "img", "jar",
    "js", "jse", "lnk", "mde", "msc", "msi", "msix", "msp", "mst", "pif", "ps1", "psm1", "reg",
    "scf", "scr", "sct", "shb", "shs", "sys", "vb", "vbe", "vbs", "vhd", "vhdx", "ws", "wsc",
    "wsf", "wsh", "xll",
)
DEFAULT_DECOY_EXTENSIONS = (
    "avi", "bmp", "csv", "doc", "docx", "gif", "htm", "html", "jpeg", "jpg", "mov", "mp3", "mp4",
    "odt", "pdf", "png", "ppt", "pptx", "rtf", "tif", "tiff", "txt", "wav", "xls", "xlsx", "zip",
)
_PADDING = re.compile(r"\s{3,}\.[^.]+$")


def shown(name: str, limit: int = 80) -> str:
    """``name`` safe for logs, SMTP replies and headers: printable ASCII, others escaped."""
    out = []
    for ch in name[:limit]:
        out.append(ch if " " <= ch <= "~" else f"\\u{ord(ch):04x}")
    return "".join(out) + ("..." if len(name) > limit else "")


def normalise(name: str) -> str:
    """Return the name as Windows uses it: last component, NFKC, no trailing dots/spaces."""
    base = re.split(r"[/\\]", name)[-1]
    return unicodedata.normalize("NFKC", base).strip().rstrip(". ").lower()


@dataclass(frozen=True)
class NamePolicy:
    """Which names are banned."""

    banned_extensions: Sequence[str] = DEFAULT_BANNED_EXTENSIONS
    decoy_extensions: Sequence[str] = DEFAULT_DECOY_EXTENSIONS
    banned_names: Sequence[str] = ()

    def check(self, name: str) -> list[tuple[str, str]]:
        """Return the findings for one file name (empty when the name is fine)."""
        found: list[tuple[str, str]] = []
        if any(ch in BIDI for ch in name):
            found.append(("bidi", f"bidi control characters in name {shown(name)}"))
            name = "".join(ch for ch in name if ch not in BIDI)
        norm = normalise(name)
        if not norm:
            return found
        parts = norm.split(".")
        ext = parts[-1].strip() if len(parts) > 1 else ""
        banned = {e.lower().lstrip(".") for e in self.banned_extensions}
        if ext in banned:
            decoys = {e.lower().lstrip(".") for e in self.decoy_extensions}
            prev = parts[-2].strip() if len(parts) > 2 else ""
            if prev in decoys or _PADDING.search(norm):
                found.append(("double_extension", f"double extension in {shown(name)}"))
            else:
                found.append(("banned_name", f"banned extension .{ext} in {shown(name)}"))
        elif any(fnmatch.fnmatchcase(norm, pat.lower()) for pat in self.banned_names):
            found.append(("banned_name", f"banned file name {shown(name)}"))
        return found
