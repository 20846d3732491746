"""attachments filter: each class with a crafted message, bombs, parser differentials."""

from __future__ import annotations

import base64
import binascii
import quopri
from email.message import EmailMessage

import pytest

from filters._filetypes import sniff
from filters._mimewalk import Limits, walk
from filters._names import NamePolicy
from rohrpost.config import ConfigError
from rohrpost.result import Action

from . import craft
from .helpers import mail_with, pipeline_for, run, symbols

PLAIN = '[[filter]]\nuse = "attachments"\n'


def att(*attachments: tuple[str, str, bytes], extra: str = "") -> tuple[Action, dict[str, float],
                                                                          str]:
    done = run(PLAIN + extra, mail_with(*attachments))
    return done.outcome.action, symbols(done), str(done.outcome.verdict.reply)


def check_raw(raw: bytes, extra: str = "") -> tuple[Action, dict[str, float], str]:
    done = run(PLAIN + extra, raw)
    assert not done.outcome.runs[0].error, done.outcome.runs[0].error
    return done.outcome.action, symbols(done), str(done.outcome.verdict.reply)


def test_clean_attachments_pass() -> None:
    action, syms, _ = att(("report.pdf", "application/pdf", b"%PDF-1.4\n%%EOF\n"),
                          ("photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0JFIF"),
                          ("data.zip", "application/zip", craft.zip_of(("a.txt", b"hello"))))
    assert (action, syms) == (Action.ACCEPT, {})


@pytest.mark.parametrize("name", ["setup.exe", "SCRIPT.JS", "evil.exe.", "evil.exe   ",
                                  "C:\\temp\\x.scr", "../../x.vbs", "x\uff0eexe", "app.msi",
                                  "shortcut.lnk", "disk.iso"])
def test_banned_names(name: str) -> None:
    action, syms, reply = att((name, "application/octet-stream", b"harmless bytes"))
    assert action is Action.REJECT
    assert "ATTACH_BANNED_NAME" in syms
    assert reply.startswith("554 5.7.1 Message rejected: banned attachment")
    assert reply.isascii()


@pytest.mark.parametrize("name", ["invoice.pdf.exe", "photo.jpg          .scr", "scan.PDF.Js"])
def test_double_extension(name: str) -> None:
    action, syms, _ = att((name, "application/octet-stream", b"x"))
    assert action is Action.REJECT
    assert "ATTACH_DOUBLE_EXT" in syms


def test_rtlo_name_is_flagged_and_judged_without_the_trick() -> None:
    action, syms, reply = att(("invoice\u202egpj.exe", "image/jpeg", b"x"))
    assert action is Action.REJECT
    assert {"ATTACH_BIDI_NAME", "ATTACH_BANNED_NAME"} <= set(syms)
    assert "\u202e" not in reply and "\\u202e" in reply
    # even with a harmless real extension the bidi trick itself is flagged
    action, syms, _ = att(("report\u202etxt.pdf", "application/pdf", b"%PDF-1.4"))
    assert (action, set(syms)) == (Action.REJECT, {"ATTACH_BIDI_NAME"})


@pytest.mark.parametrize(("name", "ctype", "data"), [
    ("cat.jpg", "image/jpeg", craft.PE),
    ("notes.txt", "text/plain", craft.ELF),
    ("noname", "application/octet-stream", craft.PE),
])
def test_executables_disguised_by_content_type(name: str, ctype: str, data: bytes) -> None:
    action, syms, reply = att((name, ctype, data))
    assert action is Action.REJECT
    assert "ATTACH_BANNED_TYPE" in syms
    assert "content in" in reply


def test_executable_inside_zip_under_innocent_name() -> None:
    action, syms, _ = att(("docs.zip", "application/zip", craft.zip_of(("readme.txt", craft.PE))))
    assert action is Action.REJECT and "ATTACH_BANNED_TYPE" in syms
    action, syms, _ = att(("docs.zip", "application/zip", craft.zip_of(("run.exe", b"x"))))
    assert action is Action.REJECT and "ATTACH_BANNED_NAME" in syms


def test_encrypted_zip_scores_by_default_and_can_reject() -> None:
    data = craft.encrypted(craft.zip_of(("secret.txt", b"password protected")))
    action, syms, _ = att(("secret.zip", "application/zip", data))
    assert (action, syms) == (Action.ACCEPT, {"ATTACH_ENCRYPTED": 3.0})
    action, _, reply = att(("secret.zip", "application/zip", data),
                           extra='actions = { encrypted_archive = "reject" }\n')
    assert (action, reply) == (Action.REJECT, "554 5.7.1 Message rejected: encrypted archive")


def test_office_macros() -> None:
    action, syms, _ = att(("report.docm", "application/octet-stream", craft.docm()))
    assert (action, syms) == (Action.ACCEPT, {"ATTACH_OFFICE_MACRO": 5.0})
    action, syms, _ = att(("legacy.doc", "application/msword", craft.ole_with_macros()),
                          extra='actions = { office_macro = "quarantine" }\n')
    assert (action, syms) == (Action.QUARANTINE, {"ATTACH_OFFICE_MACRO": 0.0})
    action, syms, _ = att(("plain.doc", "application/msword",
                           bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 600))
    assert (action, syms) == (Action.ACCEPT, {})


def test_pdf_javascript_with_escaped_names() -> None:
    pdf = b"%PDF-1.4\n1 0 obj << /OpenAction << /S /J#61vaScript /JS (app.alert(1)) >> >>\n"
    action, syms, _ = att(("form.pdf", "application/pdf", pdf))
    assert (action, syms) == (Action.ACCEPT, {"ATTACH_PDF_JAVASCRIPT": 2.0})
    action, syms, _ = att(("plain.pdf", "application/pdf", b"%PDF-1.4\n/OpenAction 3 0 R\n"))
    assert (action, syms) == (Action.ACCEPT, {})


@pytest.mark.parametrize(("data", "why"), [
    (craft.nested_zips(6), "nested deeper than 3"),
    (craft.zip_of(*[(f"f{i}.txt", b"x") for i in range(1001)]), "more than 1000 members"),
    (craft.zip_of(("zeros.bin", b"\0" * (2 * 1024 * 1024))), "compression ratio"),
    (craft.overlapping(), "overlapping entries"),
])
def test_archive_bombs(data: bytes, why: str) -> None:
    done = run(PLAIN, mail_with(("bomb.zip", "application/zip", data)))
    assert done.outcome.action is Action.REJECT
    assert str(done.outcome.verdict.reply) == "554 5.7.1 Message rejected: archive exceeds limits"
    assert why in done.outcome.symbols[0].reason


def test_nested_zip_within_limits_is_listed() -> None:
    inner = craft.nested_zips(3, ("deep/payload.exe", b"x"))
    action, syms, _ = att(("ok.zip", "application/zip", inner))
    assert action is Action.REJECT and "ATTACH_BANNED_NAME" in syms


def test_mime_nesting_1000_deep_is_too_complex() -> None:
    action, syms, reply = check_raw(craft.deep_nesting(1000))
    assert action is Action.REJECT
    assert reply == "554 5.6.0 MIME structure too complex"
    assert "MIME_TOO_COMPLEX" in syms
    # within the limit the same shape passes
    action, syms, _ = check_raw(craft.deep_nesting(40))
    assert (action, syms) == (Action.ACCEPT, {})


def test_100000_parts_is_too_complex_or_scored() -> None:
    raw = craft.many_parts(100_000)
    action, syms, reply = check_raw(raw)
    assert (action, reply) == (Action.REJECT, "554 5.6.0 MIME structure too complex")
    action, syms, _ = check_raw(raw, 'actions = { mime_too_complex = "score:10" }\n')
    assert (action, syms) == (Action.ACCEPT, {"MIME_TOO_COMPLEX": 10.0})


AMBIGUOUS = {
    "duplicate-content-type": craft.raw_mime([(
        "Content-Type: text/plain\r\nContent-Type: application/x-msdownload; name=\"a.exe\"",
        b"hello")]),
    "two-boundaries": (craft.HEAD + b'Content-Type: multipart/mixed; boundary="A"; boundary="B"'
                       b"\r\n\r\n--A\r\nContent-Type: text/plain\r\n\r\nclean\r\n--A--\r\n"
                       b'--B\r\nContent-Type: application/octet-stream; name="evil.exe"\r\n'
                       b"\r\nMZ\r\n--B--\r\n"),
    "conflicting-cte": craft.raw_mime([(
        "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Transfer-Encoding: 7bit", base64.b64encode(craft.PE))]),
    "two-filenames": craft.raw_mime([(
        'Content-Type: application/pdf\r\nContent-Disposition: attachment; filename="a.pdf"; '
        'filename="a.exe"', b"%PDF-1.4")]),
}


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_parser_differential_rejected_by_default(case: str) -> None:
    action, syms, reply = check_raw(AMBIGUOUS[case])
    assert (action, reply) == (Action.REJECT, "554 5.6.0 Ambiguous MIME structure")
    assert "MIME_AMBIGUOUS" in syms


@pytest.mark.parametrize("case", sorted(AMBIGUOUS))
def test_parser_differential_resolved_checks_every_reading(case: str) -> None:
    action, syms, _ = check_raw(AMBIGUOUS[case], 'actions = { mime_ambiguous = "score:1" }\n')
    assert syms["MIME_AMBIGUOUS"] == 1.0
    # whichever reading a client picks, the executable in the other one is still found
    assert action is Action.REJECT
    assert {"ATTACH_BANNED_NAME", "ATTACH_BANNED_TYPE"} & set(syms)


def test_resolve_first_follows_one_reading() -> None:
    extra = 'actions = { mime_ambiguous = "ignore" }\nmime_resolve = "first"\n'
    action, syms, _ = check_raw(AMBIGUOUS["two-boundaries"], extra)
    assert (action, syms) == (Action.ACCEPT, {})


def test_names_rfc2231_and_rfc2047() -> None:
    continued = craft.raw_mime([(
        "Content-Type: application/octet-stream\r\nContent-Disposition: attachment;\r\n"
        " filename*0=\"inv\";\r\n filename*1=\"oice.e\";\r\n filename*2=\"xe\"", b"x")])
    assert check_raw(continued)[1].keys() == {"ATTACH_BANNED_NAME"}
    charset = craft.raw_mime([(
        "Content-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        "filename*=utf-8''r%C3%A9sum%C3%A9.scr", b"x")])
    assert "ATTACH_BANNED_NAME" in check_raw(charset)[1]
    encoded_word = "=?utf-8?B?" + base64.b64encode(b"evil.exe").decode() + "?="
    ewords = craft.raw_mime([(f'Content-Type: application/octet-stream; name="{encoded_word}"',
                              b"x")])
    assert "ATTACH_BANNED_NAME" in check_raw(ewords)[1]


def test_uuencoded_and_quoted_printable_payloads() -> None:
    lines = b"".join(binascii.b2a_uu(craft.PE[i:i + 45]) for i in range(0, len(craft.PE), 45))
    uu = craft.HEAD + b"\r\nsee below\r\n\r\nbegin 644 tool.bin\r\n" + lines + b"`\r\nend\r\n"
    assert "ATTACH_BANNED_TYPE" in check_raw(uu)[1]
    qp = craft.raw_mime([("Content-Type: image/gif\r\nContent-Transfer-Encoding: "
                          "quoted-printable", quopri.encodestring(craft.PE))])
    assert "ATTACH_BANNED_TYPE" in check_raw(qp)[1]


def test_forwarded_message_attachment_is_walked() -> None:
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("see attachment")
    inner.add_attachment(b"x", maintype="application", subtype="octet-stream",
                         filename="payload.exe")
    outer = EmailMessage()
    outer["Subject"] = "fwd"
    outer.set_content("forwarded")
    outer.add_attachment(inner)
    assert "ATTACH_BANNED_NAME" in check_raw(outer.as_bytes())[1]


def test_ignore_and_custom_lists() -> None:
    extra = 'banned_extensions = ["xyz"]\nbanned_names = ["winmail.dat"]\n'
    assert att(("setup.exe", "application/octet-stream", b"x"), extra=extra)[0] is Action.ACCEPT
    assert att(("a.XYZ", "application/octet-stream", b"x"), extra=extra)[0] is Action.REJECT
    assert att(("WINMAIL.DAT", "application/ms-tnef", b"x"), extra=extra)[0] is Action.REJECT
    ignore = 'actions = { banned_name = "ignore" }\n'
    assert att(("setup.exe", "application/octet-stream", b"x"), extra=ignore)[:2] == (
        Action.ACCEPT, {})
    discard = 'actions = { banned_name = "discard" }\n'
    assert att(("setup.exe", "application/octet-stream", b"x"), extra=discard)[0] is \
        Action.DISCARD


@pytest.mark.parametrize(("extra", "message"), [
    ('actions = { banned_nmae = "reject" }\n', "unknown class"),
    ('actions = { bidi = "bounce" }\n', "not reject"),
    ("max_parts = 0\n", "at least 1"),
])
def test_option_errors(extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        pipeline_for(PLAIN + extra)


def test_units() -> None:
    assert sniff(craft.PE) == "pe" and sniff(b"MZ" + b"\0" * 62) == "dosexe"
    assert sniff(b"Rar!\x1a\x07\x00") == "rar" and sniff(b"hello") == ""
    policy = NamePolicy()
    assert policy.check("readme.txt") == []
    assert policy.check("archive.tar.gz") == []
    tree = walk(b"Subject: x\r\n\r\nno mime at all\r\n", Limits())
    assert [leaf.content_type for leaf in tree.leaves] == ["text/plain"]
    assert walk(b"", Limits()).leaves[0].data == b""
