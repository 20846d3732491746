"""URL and domain extraction for uribl: forms, obfuscations, HTML, IDN, and properties."""

from __future__ import annotations

from html import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rohrpost.filters._psl import PublicSuffixList
from rohrpost.filters._urls import (
    extract_hosts,
    extract_html,
    header_domains,
    message_hosts,
    normalize_host,
)

from rohrpost.message import Message

PSL = PublicSuffixList.load()


@pytest.mark.parametrize(("text", "hosts"), [
    ("see http://Example.COM, now", ["example.com"]),
    ("https://user:pw@sub.shop.example.net:8080/x?y=1", ["sub.shop.example.net"]),
    ("(http://paren.example.org/a)", ["paren.example.org"]),
    ("<https://angle.example.org>", ["angle.example.org"]),
    ("ftp://files.example.info/pub", ["files.example.info"]),
    ("http:\\\\backslash.example.net\\x", ["backslash.example.net"]),
    ("http%3a//escaped.example.net/", ["escaped.example.net"]),
    ("http://%65vil.example.com/", ["evil.example.com"]),
    ("www.shop.example.org/path.", ["www.shop.example.org"]),
    ("http://3232235777/", ["192.168.1.1"]),
    ("http://[2001:DB8::1]:80/", ["2001:db8::1"]),
    ("http://192.0.2.7/x", ["192.0.2.7"]),
    ("full width http://a\u3002b\u3002example\u3002com/", ["a.b.example.com"]),
    ("IDN http://b\u00fccher.example/ y", ["xn--bcher-kva.example"]),
    ("punycode https://xn--bcher-kva.example/", ["xn--bcher-kva.example"]),
    ("bare spammer.com here", ["spammer.com"]),
    ("bare IDN b\u00fccher.de.", ["xn--bcher-kva.de"]),
])
def test_found(text: str, hosts: list[str]) -> None:
    assert extract_hosts(text, PSL) == hosts


@pytest.mark.parametrize("text", [
    "hxxp://defanged.example.com/x",
    "hxxps://defanged.example.com",
    "evil[.]com and evil(.)com",
    "hxxp://evil.com/path and meow://evil.com",
    "see file.pdf and photo.jpeg",
    "mail bob@mail.example.com please",
    "httpx://bad.example.com",
    "version 1.2.3 and 10.0",
    "http://localhost/ http://-bad-.example.com/",
])
def test_not_urls(text: str) -> None:
    assert extract_hosts(text, PSL) == []


def test_bare_domains_need_a_psl_and_a_known_tld() -> None:
    assert extract_hosts("bare spammer.com", None) == []
    assert extract_hosts("bare spammer.com", PSL, bare=False) == []
    assert extract_hosts("unknown tld spammer.notatld", PSL) == []
    assert extract_hosts("but urls are fine http://x.notatld/", PSL) == ["x.notatld"]


def test_html_links_text_and_entities() -> None:
    html = (
        '<a href="https://Click.Example.net/a">click</a>'
        "<a href=//proto.example.org/>x</a><a href='/relative/path'>r</a>"
        '<a href="mailto:bob@mail.example.com">m</a>'
        '<img src="http://img.example.com/1.gif"><form action="https://form.example.com/">'
        "<p>visible spam.example.com &lt;http://ent.example.com&gt;</p>"
        '<a href="http&#58;//encoded.example.com/">e</a>'
        "<style>.x{background:url(http://style.example.com/)}</style>"
    )
    assert extract_html(html, PSL) == [
        "click.example.net", "proto.example.org", "img.example.com", "form.example.com",
        "encoded.example.com", "ent.example.com", "spam.example.com"]


def test_broken_html_does_not_raise() -> None:
    for html in ("<a href=", "<<<>>>", "<a href='http://x.example.com", "<!--", "&#99999999;"):
        extract_html(html, PSL)


def test_message_parts_decoded() -> None:
    raw = (
        b"From: a@example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="b"\n\n'
        b"--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        b"aHR0cDovL3BsYWluLmV4YW1wbGUuY29tLwo=\n"
        b"--b\nContent-Type: text/html; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n"
        b'<a href=3D"http://html.example.com/">x</a> b=FCcher.de\n'
        b"--b\nContent-Type: application/octet-stream\n\nhttp://binary.example.com/\n"
        b"--b--\n"
    )
    hosts = message_hosts(Message(raw).mime, PSL)
    assert hosts == ["plain.example.com", "html.example.com", "xn--bcher-kva.de"]


def test_header_domains() -> None:
    assert header_domains(["Alice <a@Mail.Example.ORG>, b@x.example.com", "broken <@>"]) == [
        "mail.example.org", "x.example.com"]


def test_normalize_host_rejects_junk() -> None:
    for raw in ("", ".", "a..b", "x" * 300 + ".com", "-a.com", "a.123", "[::g]", "99999999999"):
        assert normalize_host(raw) is None


LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?\Z")
HOST = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                 st.lists(LABEL, min_size=1, max_size=4),
                 st.sampled_from(["com", "org", "net", "de", "example", "co.uk"]))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_extraction_never_crashes(text: str) -> None:
    for host in extract_hosts(text, PSL) + extract_html(text, PSL):
        assert host == host.lower() and host.isascii() and " " not in host


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), HOST, st.sampled_from(["http", "https", "HTTP"]),
       st.text(alphabet=st.characters(blacklist_categories=("Zs", "Cc")), max_size=20),
       st.text(max_size=200))
def test_embedded_url_is_always_found(before: str, host: str, scheme: str, path: str,
                                      after: str) -> None:
    text = f"{before} {scheme}://{host}/{path} {after}"
    assert host in extract_hosts(text, PSL)
    html = f"<p>{escape(before)}</p><a href=\"{scheme}://{host}/\">{escape(after)}</a>"
    assert host in extract_html(html, PSL)
