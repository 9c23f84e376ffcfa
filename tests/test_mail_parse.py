"""Parsing what mail clients really send: headers, addresses, ids, MIME structure, charsets, attachments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailgate.cli.parse import parse_to_dict, ticket_ref
from mailgate.mail.attachments import apply_limits, safe_filename
from mailgate.mail.decode import decode_bytes
from mailgate.mail.model import Attachment
from mailgate.mail.parse import parse_message

FIXTURES = Path(__file__).parent / "fixtures" / "mail"


def load(name: str):
    return parse_message((FIXTURES / name).read_bytes(), own_addresses=["support@localhost"])


def test_headers_addresses_and_ids_of_a_gmail_reply() -> None:
    mail = load("reply_gmail.eml")
    assert mail.from_addr == "alice.example@gmail.com"  # bare and lowercase
    assert mail.from_name == "Alice Example"
    assert mail.to_addrs == ["support@localhost"]
    assert mail.message_id == "CAO9vQ1kX3e5nZ8=Yq3_pL0wJ2mFh7GZ0v@mail.gmail.com"
    assert mail.in_reply_to == "ack.SUP-20.1705310580@localhost"
    assert mail.subject == "Re: [SUP-20] Printer on 3rd floor not working"
    assert mail.date is not None and mail.date.utcoffset() is not None
    assert mail.body_html is not None and "gmail_quote" in mail.body_html
    assert mail.header("received") is not None


def test_references_separated_by_commas_and_folded() -> None:
    mail = load("references_with_commas.eml")
    assert mail.references == [
        "ack.SUP-44.1@localhost",
        "notify.SUP-44.2@localhost",
        "VI1PR02MB1111@VI1PR02MB1111.eurprd02.prod.outlook.com",
    ]
    assert mail.in_reply_to == "notify.SUP-44.2@localhost"
    # A display name with a comma in quotes does not split the address list.
    assert mail.cc_addrs == ["richard.roe@exchange.example", "sam@exchange.example"]


def test_rfc2047_subject_and_names_in_several_charsets() -> None:
    jp = load("reply_japanese.eml")
    assert jp.subject == "Re: [SUP-41] 会議室のプロジェクター"
    assert jp.from_name == "山田太郎"
    zh = load("reply_chinese.eml")
    assert zh.subject == "回复：[SUP-39] 无法登录系统"
    assert "无法登录" in zh.body_text  # gb18030 body


def test_eight_bit_headers_are_read_as_utf8_with_latin1_fallback() -> None:
    mail = load("eight_bit_headers.eml")
    assert mail.subject == "Ação necessária: conta bloqueada"
    assert mail.from_name == "Beatriz Núñez"
    assert mail.from_addr == "bea@raw8bit.example"
    assert mail.header("X-Old-Header") == "Grüße"


def test_wrong_unknown_and_illegal_charsets_fall_back_and_say_so() -> None:
    wrong = load("wrong_charset.eml")  # declared us-ascii, really UTF-8
    assert "Grüße aus Köln – die Größe ist 5 €." in wrong.body_text
    unknown = load("unknown_charset.eml")
    assert "Café crème, s'il vous plaît." in unknown.body_text
    assert any("x-mac-klingon" in e for e in unknown.errors)
    illegal = load("illegal_utf8.eml")
    assert "Café ok, then broken:" in illegal.body_text and "€" in illegal.body_text
    assert "\ufffd" in illegal.body_text
    assert illegal.errors


@pytest.mark.parametrize(
    ("label", "text", "codec"),
    [
        # WHATWG's encoding standard reads each label as the Windows code page senders use
        ("iso-8859-9", "“Yazıcı” çalışmıyor – acil", "cp1254"),
        ("shift_jis", "㈱髙橋製作所 ①", "cp932"),
        ("euc-kr", "똠방각하 프린터", "cp949"),
        ("tis-620", "เครื่องพิมพ์เสีย “ด่วน”", "cp874"),
        ("x-mac-roman", "Grüße – „Drucker“", "mac-roman"),
    ],
)
def test_charset_labels_read_as_the_code_page_sent(label: str, text: str, codec: str) -> None:
    errors: list[str] = []
    assert decode_bytes(text.encode(codec), label, errors) == text
    assert errors == []


def test_iso_2022_jp_as_windows_writes_it() -> None:
    """Code page 50220: cp932's NEC and IBM characters in JIS code space (strict ISO-2022-JP has
    none; being 7-bit it also "decodes" as UTF-8, which showed the escapes raw)."""
    windows = b"\x1b$B-j|b66\x1b(B \x1b$B-!\x1b(BE-31 \x1b(I6@6E\x1b(B"
    assert decode_bytes(windows, "ISO-2022-JP") == "㈱髙橋 ①E-31 ｶﾀｶﾅ"
    standard = "日本語のテキスト、カタカナ。".encode("iso2022_jp")
    assert decode_bytes(standard, "iso-2022-jp") == "日本語のテキスト、カタカナ。"
    errors: list[str] = []
    decode_bytes(b"\x1b$B\x7f\x7f\x1b(B", "iso-2022-jp", errors)  # no JIS code: said, never raised
    assert errors


def test_windows_1252_labelled_latin1() -> None:
    # Outlook labels cp1252 text (with an en dash) as iso-8859-1.
    assert "DE 123 456 789 – please" in load("reply_outlook_web.eml").reply_text


def test_missing_message_id_and_date() -> None:
    mail = load("no_message_id.eml")
    assert mail.message_id is None and mail.date is None
    assert mail.from_addr == "dana@nomid.example"
    assert "neither Message-ID nor Date" in mail.body_text


def test_html_only_mail_becomes_text_with_links() -> None:
    mail = load("html_only.eml")
    assert "[shows it as delivered](https://track.example.com/7781?x=1&y=2)" in mail.body_text
    assert "Ordered: 2 January" in mail.body_text
    assert "alert(1)" not in mail.body_text and "<p>" not in mail.body_text


def test_outlook_html_mail_keeps_inline_logo_and_attached_log() -> None:
    mail = load("reply_outlook_desktop_html.eml")
    assert [(a.filename, a.content_type, a.inline) for a in mail.attachments] == [
        ("image001.png", "image/png", True),
        ("calendar-crash.log", "text/plain", False),
    ]
    assert mail.attachments[0].content_id == "image001.png@01DA4797.5C3E2B10"
    assert mail.attachments[1].content == b"2024-01-15 09:58:01 ERROR calendar: shared folder timeout\n"
    assert "ERROR calendar" not in mail.body_text  # an attached text file is not body


def test_apple_inline_image_inside_related_alternative() -> None:
    mail = load("inline_image_apple.eml")
    assert mail.body_text.startswith("Here is the error:")
    (image,) = mail.attachments
    assert image.inline and image.content.startswith(b"\x89PNG")


def test_forwarded_message_is_an_attachment_and_its_text_is_shown() -> None:
    mail = load("forwarded_rfc822.eml")
    names = [(a.filename, a.content_type) for a in mail.attachments]
    assert names == [("Contract renewal question.eml", "message/rfc822"), ("contract.pdf", "application/pdf")]
    assert b"Message-ID: <orig-contract@customer.example>" in mail.attachments[0].content
    assert "Can we move to the yearly plan?" in mail.body_text
    assert "From: Victor Customer <victor@customer.example>" in mail.body_text


def test_rfc2231_and_rfc2047_filenames_decoded_and_never_paths() -> None:
    mail = load("rfc2231_filename.eml")
    names = [a.filename for a in mail.attachments]
    assert names[:3] == [
        "Rechnung März 2024.pdf",
        "Übergabeprotokoll Gebäude Nord – Januar.txt",
        "Übersicht.jpg",
    ]
    evil = names[3]
    assert "/" not in evil and "\\" not in evil and "\r" not in evil and "\n" not in evil
    assert evil.endswith(".sh") and evil.startswith("evil")


def test_winmail_dat_is_noted_as_tnef_attachment() -> None:
    (att,) = load("winmail_dat.eml").attachments
    assert (att.filename, att.content_type) == ("winmail.dat", "application/ms-tnef")
    assert att.size > 0


def test_multipart_without_its_boundary_keeps_the_text() -> None:
    mail = load("missing_boundary.eml")
    assert "This text sits where the parts should be." in mail.body_text
    assert any("StartBoundaryNotFound" in e for e in mail.errors)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\bob\\report.pdf", "report.pdf"),
        ("in\x00voice\r\n.pdf", "invoice.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("..", "attachment"),
        ("", "attachment"),
        ("a" * 300 + ".pdf", "a" * 196 + ".pdf"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_limits_record_what_they_reject() -> None:
    mb = 1024 * 1024
    atts = [
        Attachment("report.pdf", "application/pdf", b"x" * (31 * mb)),
        Attachment("a.txt", "text/plain", b"a"),
        Attachment("b.txt", "text/plain", b"b"),
        Attachment("c.txt", "text/plain", b"c"),
    ]
    kept, rejected = apply_limits(atts, max_size=20 * mb, max_count=2)
    assert [a.filename for a in kept] == ["a.txt", "b.txt"]
    assert rejected == [
        "report.pdf (31 MB) over the 20 MB limit",
        "c.txt (1 bytes) over the limit of 2 attachments",
    ]


def test_parse_json_object_fields() -> None:
    data = parse_to_dict((FIXTURES / "bounce_postfix_dsn.eml").read_bytes(), ["support@localhost"], ["SUP"])
    assert json.loads(json.dumps(data)) == data
    assert data["is_bounce"] and data["bounce"]["failed_recipients"] == ["gone@customer.example"]
    for key in (
        "subject",
        "from_addr",
        "to_addrs",
        "cc_addrs",
        "message_id",
        "in_reply_to",
        "references",
        "body_text",
        "reply_text",
        "attachments",
        "is_auto_reply",
        "is_bounce",
        "ticket_ref",
        "errors",
    ):
        assert key in data
    reply = parse_to_dict((FIXTURES / "reply_outlook_desktop_html.eml").read_bytes(), (), ["SUP"])
    assert reply["ticket_ref"] == "SUP-22"
    assert reply["attachments"][1] == {
        "filename": "calendar-crash.log",
        "content_type": "text/plain",
        "size": 58,
        "inline": False,
    }


@pytest.mark.parametrize(
    ("subject", "keys", "expected"),
    [
        ("Re: [SUP-20] Printer", ["SUP"], "SUP-20"),
        ("AW: WG: (sup-7) Drucker", ["SUP"], "SUP-7"),
        ("[JIRA-5] [SUP-9] both", ["SUP"], "SUP-9"),
        ("[JIRA-5] only foreign", ["SUP"], None),
        ("SUP-20 without brackets", ["SUP"], None),
        ("Re: [IT-3] x", ["SUP", "IT"], "IT-3"),
    ],
)
def test_ticket_ref(subject: str, keys: list[str], expected: str | None) -> None:
    assert ticket_ref(subject, keys) == expected
