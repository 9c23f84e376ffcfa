"""Attachment names for parts that carry none, and inline versus attachment as clients show them,
on mail made by real software here (mutt, Python's email package) and by Outlook and Apple Mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.mail.attachments import shown_inline, unique_filename, unnamed_filename
from mailgate.mail.parse import parse_message

FIXTURES = Path(__file__).parent / "fixtures" / "mail"


def shown(name: str) -> list[tuple[str, str, bool]]:
    mail = parse_message((FIXTURES / name).read_bytes())
    assert not mail.errors
    return [(a.filename, a.content_type, a.inline) for a in mail.attachments]


def test_python_email_parts_without_names_get_the_names_a_help_desk_gives_them() -> None:
    assert shown("python_email_related.eml") == [
        ("image.png", "image/png", True),  # in multipart/related, shown by cid:
        ("image1.png", "image/png", True),  # Content-Disposition: inline, no name: a second "image"
        ("invoice-4711.pdf", "application/pdf", False),
        ("calendar.ics", "text/calendar", False),
    ]


def test_mutt_attachments_keep_their_names_and_are_listed() -> None:
    assert shown("reply_mutt.eml") == [
        ("report.pdf", "application/pdf", False),
        ("screenshot.png", "image/png", False),
    ]
    mail = parse_message((FIXTURES / "reply_mutt.eml").read_bytes())
    assert mail.reply_text == "Hallo,\n\nanbei das Protokoll und ein Bildschirmfoto."


def test_outlook_and_apple_inline_images() -> None:
    assert shown("reply_outlook_desktop_html.eml")[0] == ("image001.png", "image/png", True)
    assert shown("inline_image_apple.eml") == [("Screenshot 2024-01-15 at 13.39.12.png", "image/png", True)]


@pytest.mark.parametrize(
    ("ctype", "cid", "description", "name"),
    [
        ("image/png", "<image001.png@01DA4797.5C3E2B10>", None, "image001.png"),  # Outlook
        ("image/jpeg", "<part1.abc@x.example>", None, "image.jpg"),
        ("image/jpeg", None, "Photo of the label", "Photo of the label.jpg"),
        ("message/delivery-status", None, None, "delivery-status.txt"),
        ("text/plain", None, None, "document.txt"),
        ("text/html", None, None, "document.html"),
        ("text/calendar", None, None, "calendar.ics"),
        ("application/octet-stream", "<blob7@x.example>", None, "blob7"),
        ("application/pdf", None, None, "file.pdf"),
        ("application/x-unknown", None, None, "file"),
    ],
)
def test_unnamed_filename(ctype: str, cid: str | None, description: str | None, name: str) -> None:
    assert unnamed_filename(ctype, cid, description) == name


def test_unique_filename_numbers_later_parts_like_a_help_desk() -> None:
    assert unique_filename("image.png", ["image.png"]) == "image1.png"
    assert unique_filename("image.png", ["image.png", "image1.png"]) == "image2.png"
    assert unique_filename("file", ["file"]) == "file1"


def test_inline_as_clients_show_it() -> None:
    shows = {"logo@x"}
    assert shown_inline("image/png", False, "<logo@x>", shows)  # shown by cid: despite "attachment"
    assert not shown_inline("image/png", True, "<unused@x>", shows)  # related but never shown
    assert not shown_inline("application/pdf", True, None, set())  # an inline PDF is listed
    assert shown_inline("image/jpeg", True, None, set())  # Apple Mail's inline photo
    assert not shown_inline("image/jpeg", False, None, set())
