r"""Find the hosts of URLs and bare domain names in message text, HTML and headers (for uribl).

Owns ``extract_hosts`` (plain text), ``extract_html`` (``href``/``src``/``action`` attributes
and the visible text), ``message_hosts`` (every text/plain and text/html part, decoded) and
``normalize_host``. Hosts come back lower case, IDNA-encoded (``xn--``), or as IP address
text, in order of first appearance, without duplicates.

What is a URL here, and what is deliberately not:

* ``http``, ``https`` and ``ftp`` URLs (also with ``\\\\`` for ``//`` and ``%3A`` for ``:``,
  which browsers accept), protocol-relative ``//host`` links in HTML, and ``www.`` names;
  the host may carry user info, a port, percent-escapes, IDN labels, full-width dots, or be an
  IP address (dotted, a bracketed IPv6 literal, or one decimal number).
* Bare names (``example.com`` in running text) only when their last label is a top-level
  domain the public suffix list knows, so ``file.pdf`` is no domain.
* Defanged links (``hxxp://evil.test``, ``evil[.]test``) are not URLs: they are how abuse
  reports and security advisories quote bad links, and looking them up would mark those mails.
  A token with any other ``scheme://`` is skipped entirely, bare-name scan included.

Pure functions, no I/O; every input is hostile, so nothing here raises on any text.
"""

from __future__ import annotations

import email.message
import email.utils
import ipaddress
import re
from collections.abc import Iterable
from html.parser import HTMLParser
from urllib.parse import unquote

from rohrpost.filters._psl import PublicSuffixList, to_ascii

_STOP = r"\s/\\?#<>\"'`(){}\[\],;|^"
URL_RE = re.compile(rf"(?i)(?<![a-z0-9+.-])(?:https?|ftp)(?::|%3a)[/\\]{{2}}"
                    rf"(\[[0-9a-f:.]{{2,45}}\]|[^{_STOP}]{{1,300}})")
WWW_RE = re.compile(rf"(?i)(?<![\w.@/:-])(www\d{{0,3}}\.[^{_STOP}@]{{1,300}})")
OTHER_SCHEME_RE = re.compile(r"(?i)[a-z][a-z0-9+.-]{0,30}(?::|%3a)(?://|\\\\)\S*")
BARE_RE = re.compile(
    r"(?<![\w.@/:%-])((?:[\w-]{1,63}[.\u3002\uff0e\uff61]){1,10}[\w-]{2,63})(?![\w@])")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
HTML_ATTRS = frozenset({"href", "src", "action", "background", "formaction"})


def normalize_host(raw: str) -> str | None:  # noqa: PLR0911 - one exit per host form
    """Return the host of a URL authority (``user@host:port``) normalized, or None."""
    host = unquote(raw, errors="replace").translate(_DOTS).strip()
    host = host.rsplit("@", 1)[-1]
    if host.startswith("["):
        inner = host[1:].split("]", 1)[0]
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            return None
    host = host.split(":", 1)[0].rstrip(".").lower()
    if host.isdigit() and len(host) <= 10:  # http://3232235777/ is 192.168.1.1 to a browser
        number = int(host)
        return str(ipaddress.IPv4Address(number)) if number < 2**32 else None
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    name = to_ascii(host)
    if not name or len(name) > 253:
        return None
    labels = name.split(".")
    if len(labels) < 2 or not all(_LABEL_RE.match(label) for label in labels):
        return None
    return None if labels[-1].isdigit() else name


def is_ip(host: str) -> bool:
    """Tell whether ``host`` (as ``normalize_host`` returns it) is an IP address."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _add(out: dict[str, None], host: str | None) -> None:
    if host is not None:
        out.setdefault(host, None)


def extract_hosts(text: str, psl: PublicSuffixList | None = None, *,
                  bare: bool = True) -> list[str]:
    """Return hosts of URLs, ``www.`` names and (``psl`` and ``bare``) bare domain names."""
    out: dict[str, None] = {}
    for match in URL_RE.finditer(text):
        _add(out, normalize_host(match.group(1)))
    for match in WWW_RE.finditer(text):
        _add(out, normalize_host(match.group(1)))
    if bare and psl is not None:
        rest = OTHER_SCHEME_RE.sub(" ", text)
        for match in BARE_RE.finditer(rest):
            host = normalize_host(match.group(1))
            if host is not None and not is_ip(host) and psl.known_tld(host):
                _add(out, host)
    return list(out)


class _Links(HTMLParser):
    """Collects link attributes and visible text; never raises on malformed HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.text: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        self.links.extend(v.strip() for k, v in attrs if k in HTML_ATTRS and v)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def link_host(link: str) -> str | None:
    """Return the host of an ``href``: absolute http(s)/ftp or protocol-relative; else None."""
    if link.startswith(("//", "\\\\")):
        return normalize_host(re.split(r"[/\\?#]", link[2:], maxsplit=1)[0])
    match = URL_RE.match(link)
    return normalize_host(match.group(1)) if match else None


def extract_html(html: str, psl: PublicSuffixList | None = None, *, bare: bool = True) -> list[str]:
    """Return hosts of link attributes first, then of URLs and names in the visible text."""
    parser = _Links()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001, S110 - keep what was parsed before the parser gave up
        pass
    out: dict[str, None] = {}
    for link in parser.links:
        _add(out, link_host(link))
    for host in extract_hosts(" ".join(parser.text), psl, bare=bare):
        _add(out, host)
    return list(out)


def _part_text(part: email.message.Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def message_hosts(mime: email.message.Message, psl: PublicSuffixList | None, *,
                  bare: bool = True, max_chars: int = 1_000_000) -> list[str]:
    """Return hosts in every text/plain and text/html part, scanning ``max_chars``."""
    links: dict[str, None] = {}
    budget = max_chars
    for part in mime.walk():
        if part.is_multipart() or part.get_content_maintype() != "text" or budget <= 0:
            continue
        text = _part_text(part)[:budget]
        budget -= len(text)
        if part.get_content_subtype() == "html":
            found = extract_html(text, psl, bare=bare)
        else:
            found = extract_hosts(text, psl, bare=bare)
        for host in found:
            _add(links, host)
    return list(links)


def header_domains(values: Iterable[str]) -> list[str]:
    """Return the domains of the addresses in header values (From, Reply-To)."""
    out: dict[str, None] = {}
    for _name, addr in email.utils.getaddresses(list(values)):
        if "@" in addr:
            _add(out, normalize_host(addr.rsplit("@", 1)[1]))
    return list(out)
