"""Who wrote the mail an agent forwards (mail/forwarded.py), as each client words the block, and
files on our outgoing mail (mail/compose.with_attachments): names never paths, no header smuggled."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from mailgate.mail.compose import OutAttachment, Outgoing, build
from mailgate.mail.forwarded import attached_sender, inline_sender

CLIENTS = {
    "gmail": "FYI\n\n---------- Forwarded message ---------\nFrom: Jane Doe <Jane@Acme.example>\n"
    "Date: Mon, 23 Nov 2026\nSubject: Door\nTo: tech@desk.example\n\nThe door is stuck.\n",
    "thunderbird": "-------- Forwarded Message --------\nSubject: Door\nDate: Mon, 23 Nov 2026\n"
    "From: Jane Doe <jane@acme.example>\nTo: tech@desk.example\n\nThe door is stuck.\n",
    "apple": "Begin forwarded message:\n\n> From: Jane Doe <jane@acme.example>\n> Subject: Door\n",
    "outlook": "-----Original Message-----\nFrom: Jane Doe [mailto:jane@acme.example]\nSent: Monday\n",
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_inline_forward_names_its_writer(client: str) -> None:
    assert inline_sender(CLIENTS[client]) == ("jane@acme.example", "Jane Doe")


def test_no_forward_block_names_nobody() -> None:
    assert inline_sender("From: jane@acme.example\nthis is just a mail that says From:\n") is None
    assert inline_sender("---------- Forwarded message ---------\nFrom: not an address\n") is None


def test_attached_message_names_its_writer() -> None:
    assert attached_sender(b"From: Jane <jane@acme.example>\r\nSubject: x\r\n\r\nhi\r\n") == (
        "jane@acme.example",
        "Jane",
    )
    assert attached_sender(b"\xff\xfe garbage") is None


def test_attachment_names_are_names_and_smuggle_no_header() -> None:
    raw = build(
        Outgoing(
            from_addr="support@desk.example",
            from_name="Support",
            to=["ann@acme.example"],
            subject="[SUP-1] files",
            text="See attached.\n",
            message_id="mg.1@desk.example",
            attachments=[
                OutAttachment("../../etc/passwd", "text/plain", b"root:x:0:0\n"),
                OutAttachment("a.txt\r\nBcc: evil@example.com", "text/plain\r\nX-Evil: 1", b"hi"),
                OutAttachment("mail.eml", "message/rfc822", b"From: x@y\r\n\r\nbody\r\n"),
            ],
        )
    )
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Bcc"] is None and b"X-Evil" not in raw and b"\r\nBcc:" not in raw
    assert msg.get_content_type() == "multipart/mixed"
    assert "See attached." in msg.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    files = [
        (p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in msg.iter_attachments()
    ]
    assert files == [
        ("passwd", "text/plain", b"root:x:0:0\n"),
        ("a.txtBcc: evil@example.com", "application/octet-stream", b"hi"),
        ("mail.eml", "application/octet-stream", b"From: x@y\r\n\r\nbody\r\n"),
    ]
    assert raw.count(b"Message-ID:") == 1 and b"\r\n" in raw and b"\n\n" not in raw.replace(b"\r\n", b"")
