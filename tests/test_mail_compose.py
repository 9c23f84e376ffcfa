"""The mail we send, read back by the stdlib's strict modern parser: whatever a subject, a name
or a body holds (any script, control characters, header-injection attempts), a client must see
exactly that text, and no line may break the RFC 5322 limits."""

from __future__ import annotations

import email
import email.header
import email.policy
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.mail.compose import Outgoing, build, clean_header

_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)


def _read(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


@settings(max_examples=300, deadline=None)
@given(subject=_TEXT, name=_TEXT, text=_TEXT, html=st.one_of(st.none(), _TEXT))
def test_what_a_client_reads_is_what_was_written(
    subject: str, name: str, text: str, html: str | None
) -> None:
    raw = build(
        Outgoing(
            from_addr="support@example.com",
            from_name=name,
            to=["customer@example.org"],
            subject=subject,
            text=text,
            html=html or None,
            message_id="a.b@example.com",
        )
    )
    assert raw.isascii()
    lines = raw.split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    # Folded within 78 wherever there is a place to fold: a longer line is one word (after its
    # header name), which cannot be folded.
    assert all(len(line) <= 78 or b" " not in line.split(b": ", 1)[-1].strip() for line in head)
    msg = _read(raw)
    assert not msg.defects
    # Date: now, in the local zone with its offset (a client shows it in the reader's time).
    sent = msg["Date"].datetime
    assert sent.utcoffset() == datetime.now().astimezone().utcoffset()
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5
    assert str(msg["Subject"]) == clean_header(subject, 900)
    assert msg["From"].addresses[0].addr_spec == "support@example.com"
    raw_from = email.message_from_bytes(raw)["From"]  # compat32: the raw header, unfolded
    if "=?utf-8?q?" in raw_from:
        # RFC 2047 6.2: white space between encoded words is dropped. The stdlib's modern address
        # parser keeps it (a display-name quirk), so read the name with its RFC decoder.
        decoded = str(email.header.make_header(email.header.decode_header(raw_from)))
        assert decoded == f"{clean_header(name, 200)} <support@example.com>"
    else:
        assert msg["From"].addresses[0].display_name == clean_header(name, 200)
    plain = msg.get_body(("plain",))
    assert plain is not None
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    # The body comes back as written, but for the line end the message always closes with.
    assert plain.get_content().replace("\r\n", "\n").removesuffix("\n") == expected.removesuffix("\n")


def test_a_subject_keeps_its_ticket_tag_readable_and_cannot_inject_a_header() -> None:
    raw = build(
        Outgoing(
            from_addr="support@example.com",
            from_name="Support",
            to=["customer@example.org"],
            subject="[SUP-20] Drucker druckt nicht — Grüße\r\nBcc: victim@example.net",
            text="Hallo",
            message_id="a.b@example.com",
        )
    )
    assert b"\r\nBcc:" not in raw
    assert raw.startswith(b"From: Support <support@example.com>\r\n")
    assert b"Subject: [SUP-20] Drucker druckt nicht =?utf-8?q?" in raw
    assert str(_read(raw)["Subject"]) == "[SUP-20] Drucker druckt nicht — Grüße Bcc: victim@example.net"
