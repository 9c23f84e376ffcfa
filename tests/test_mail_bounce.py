"""Bounce understanding: every shape a delivery failure, a delay warning or a complaint arrives in.

Each fixture is one MTA's or provider's notice as that software writes it (its template's
wording, layout and headers; Postfix's are captured from a real Postfix by
test_mail_bounce_postfix.py). For each: is it a bounce, permanent or temporary, who failed, the
status, and our original Message-ID. Mail written by people must never be taken for a bounce.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailgate.mail.model import ParsedMail
from mailgate.mail.parse import parse_message

FIXTURES = Path(__file__).parent / "fixtures" / "mail"
OWN = ("support@desk.example", "support@localhost")
GONE = "gone@customer.example"
OURS = "ack.SUP-9.1@desk.example"


def load(name: str) -> ParsedMail:
    return parse_message((FIXTURES / name).read_bytes(), own_addresses=OWN)


# fixture, failed recipients, permanent, status (None: the notice gives none), original Message-ID
CASES = [
    ("bounce_sendmail_text.eml", [GONE], True, "5.1.1", OURS),
    ("bounce_sendmail_warning.eml", [GONE], False, None, OURS),
    ("bounce_dma.eml", [GONE], True, "5.1.1", OURS),
    ("bounce_opensmtpd.eml", [GONE], True, "5.1.1", OURS),
    ("bounce_opensmtpd_delay.eml", [GONE], False, None, OURS),
    ("bounce_gmail_text.eml", [GONE], True, None, OURS),
    ("bounce_gmail_delay.eml", [GONE], False, None, OURS),
    ("bounce_google_groups.eml", ["old-team@googlegroups.com"], True, None, OURS),
    ("bounce_yahoo.eml", [GONE], True, "5.0.0", OURS),
    ("bounce_aol.eml", [GONE], True, "5.0.0", OURS),
    ("bounce_groupwise.eml", [GONE], True, None, OURS),
    ("bounce_lotus_notes.eml", [GONE], True, None, OURS),
    ("bounce_amazon_ses.eml", [GONE], True, None, OURS),
    ("bounce_kddi.eml", ["user123@ezweb.ne.jp"], True, None, None),
    ("bounce_interscan.eml", [GONE], True, "5.1.1", OURS),
    ("bounce_mcafee.eml", [GONE], True, None, OURS),
    ("bounce_x400.eml", [GONE], True, None, OURS),
    ("bounce_netscape.eml", [GONE], True, "5.1.1", OURS),
    ("bounce_exim_delay.eml", [GONE], False, "4.7.1", None),
    ("bounce_exchange2003.eml", [GONE], True, "5.1.1", None),
    ("bounce_could_not_be_delivered.eml", [GONE], True, None, OURS),
    ("bounce_dsn_odd.eml", [GONE], True, "5.2.1", OURS),
    ("bounce_postfix_dsn.eml", [GONE], True, "5.1.1", "ack.SUP-45.1705309200@localhost"),
    ("bounce_delayed_dsn.eml", ["slow@customer.example"], False, "4.4.1", "ack.SUP-45.1705309200@localhost"),
    ("bounce_qmail.eml", ["olduser@customer.example"], True, "5.1.1", "ack.SUP-45.1705309200@localhost"),
    ("postfix_real_bounce.eml", ["gone@customer.test"], True, "5.1.1", "out.gone.1@example.test"),
    ("postfix_real_delay.eml", ["slow@customer.test"], False, "4.2.1", "out.slow.1@example.test"),
]


@pytest.mark.parametrize(("name", "failed", "permanent", "status", "original"), CASES)
def test_each_mta_notice_is_read(
    name: str, failed: list[str], permanent: bool, status: str | None, original: str | None
) -> None:
    mail = load(name)
    assert mail.is_bounce and mail.bounce is not None, name
    bounce = mail.bounce
    assert list(bounce.failed_recipients) == failed
    assert bounce.permanent is permanent
    # A delay warning is not a failure: its kind says so, and nothing is to be given up on.
    assert bounce.kind == ("failed" if permanent else "delayed") or (
        not permanent and bounce.kind == "failed"
    )
    assert bounce.status == status
    assert bounce.original_message_id == original
    assert not bounce.complaint
    assert mail.is_auto_reply


def test_a_dsn_carrying_list_headers_is_a_bounce_before_it_is_bulk_mail() -> None:
    mail = load("bounce_dsn_odd.eml")  # Precedence: bulk, List-Id, a misspelt report-type, no Action
    assert mail.is_bounce
    assert mail.auto_reply_reason == "delivery status notification (bounce)"


def test_an_arf_feedback_report_is_a_permanent_complaint_about_the_recipient() -> None:
    mail = load("complaint_arf.eml")  # RFC 5965 appendix B.1
    bounce = mail.bounce
    assert mail.is_bounce and bounce is not None
    assert bounce.complaint and bounce.kind == "complaint" and bounce.permanent
    assert bounce.failed_recipients == ("user@example.com",)
    assert bounce.original_message_id == "8787KJKJ3K4J3K4J3K4J3.mail@desk.example"
    assert "abuse" in (bounce.diagnostic or "")
    # Where a complaint's bounce token is (VERP): the envelope sender of the mail it reports.
    assert bounce.original_mail_from == "support@desk.example"


def _raw(headers: str, body: str) -> bytes:
    return (headers.strip() + "\n\n" + body).replace("\n", "\r\n").encode()


def test_a_format_only_mailmans_detectors_know_is_read_through_flufl_bounce() -> None:
    raw = _raw(
        "From: postmaster@old.customer.example\nTo: support@desk.example\nSubject: Notification\n"
        "Message-ID: <n.1@old.customer.example>",
        "Here is your list of failed recipients\n\n<gone@customer.example>\n\nHere is your returned mail\n",
    )
    mail = parse_message(raw, own_addresses=OWN)
    assert mail.bounce is not None
    assert mail.bounce.detector == "flufl.bounce"
    assert mail.bounce.failed_recipients == (GONE,)


def test_a_read_receipt_and_a_success_report_are_not_bounces() -> None:
    mdn = _raw(
        "From: gone@customer.example\nTo: support@desk.example\nSubject: Read: [SUP-9] Hello\n"
        'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=disposition-notification; boundary="b"',
        "--b\nContent-Type: text/plain\n\nYour message was displayed.\n\n--b\n"
        "Content-Type: message/disposition-notification\n\nReporting-UA: mail.customer.example\n"
        "Final-Recipient: rfc822; gone@customer.example\nDisposition: manual-action/MDN-sent-manually; displayed\n\n--b--\n",
    )
    assert not parse_message(mdn, own_addresses=OWN).is_bounce
    relayed = _raw(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example>\nTo: support@desk.example\n"
        "Subject: Successful Mail Delivery Report\nMIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
        "--b\nContent-Type: text/plain\n\nYour message was successfully delivered.\n\n--b\n"
        "Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        "Final-Recipient: rfc822; ok@customer.example\nAction: delivered\nStatus: 2.0.0\n\n--b--\n",
    )
    assert not parse_message(relayed, own_addresses=OWN).is_bounce


@pytest.mark.parametrize(
    "body",
    [
        "Hi, my last mail to you could not be delivered, the server said user unknown. Can you check?\n",
        "Our invoice was undeliverable to the old address; please use the new one.\n",
        "Forwarding this: ----- The following addresses had permanent fatal errors ----- is what I got.\n",
    ],
)
def test_a_person_writing_about_a_failed_delivery_is_not_a_bounce(body: str) -> None:
    raw = _raw(
        "From: Alice <alice@customer.example>\nTo: support@desk.example\nSubject: Mail problem\n"
        "Message-ID: <p.1@customer.example>",
        body,
    )
    mail = parse_message(raw, own_addresses=OWN)
    assert not mail.is_bounce, mail.bounce


def test_a_person_forwarding_a_bounce_as_an_attachment_is_not_a_bounce() -> None:
    inner = (FIXTURES / "postfix_real_bounce.eml").read_bytes().replace(b"\r\n", b"\n").decode()
    raw = _raw(
        "From: Alice <alice@customer.example>\nTo: support@desk.example\nSubject: Fwd: why did this bounce?\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="outer"',
        "--outer\nContent-Type: text/plain\n\nWhy did this bounce?\n\n--outer\n"
        f"Content-Type: message/rfc822\n\n{inner}\n--outer--\n",
    )
    assert not parse_message(raw, own_addresses=OWN).is_bounce


def test_a_dsn_whose_status_part_lost_its_type_is_read_from_its_text() -> None:
    """A gateway relabelled the message/delivery-status part text/plain: the fields are read as text."""
    raw = _raw(
        "From: System Administrator <postmaster@gw.customer.example>\nTo: support@desk.example\n"
        "Subject: Delivery Status Notification (Delay)\nMessage-ID: <gw.1@gw.customer.example>\n"
        'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"',
        "--b\nContent-Type: text/plain\n\nReporting-MTA: dns; gw.customer.example\n\n"
        "Final-Recipient: rfc822; slow@customer.example\nAction: delayed\nStatus: 4.4.7\n\n--b--\n",
    )
    bounce = parse_message(raw, own_addresses=OWN).bounce
    assert bounce is not None
    assert bounce.failed_recipients == ("slow@customer.example",)
    assert not bounce.permanent and bounce.kind == "delayed" and bounce.status == "4.4.7"


def test_an_admin_pasting_a_notice_under_a_failure_subject_is_not_a_bounce() -> None:
    raw = _raw(
        "From: IT Admin <admin@customer.example>\nTo: support@desk.example\n"
        "Subject: Mail delivery failed for our CEO\nMessage-ID: <a1@customer.example>",
        "Hi,\n\nsince yesterday mail to ceo@customer.example could not be delivered.\nHere is what we got:\n\n"
        "  ----- The following addresses had permanent fatal errors -----\n  <ceo@customer.example>\n\nCan you check?\n",
    )
    assert not parse_message(raw, own_addresses=OWN).is_bounce
