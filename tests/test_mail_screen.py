"""Auto-replies, bulk mail, our own mail and bounces are recognised; a person's mail is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailgate.mail.model import ParsedMail
from mailgate.mail.parse import parse_message
from mailgate.mail.screen import auto_reply_reason, own_list

FIXTURES = Path(__file__).parent / "fixtures" / "mail"
OWN = ("support@localhost", "billing@localhost")


def load(name: str) -> ParsedMail:
    return parse_message((FIXTURES / name).read_bytes(), own_addresses=OWN)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("auto_reply_exchange_ooo.eml", "Auto-Submitted: auto-generated"),
        ("auto_reply_gmail_vacation.eml", "Auto-Submitted: auto-replied"),
        ("auto_reply_german_subject_only.eml", "out-of-office subject"),
        ("bulk_newsletter.eml", "Precedence: bulk"),
        ("own_address_loop.eml", "one of our own addresses"),
        ("noreply_sender.eml", "robot address"),
        # captured: Dovecot's Pigeonhole Sieve vacation answering one of our acknowledgements
        ("auto_reply_pigeonhole_vacation.eml", "Auto-Submitted: auto-replied (vacation)"),
    ],
)
def test_automatic_mail_is_flagged_with_a_reason(name: str, reason: str) -> None:
    mail = load(name)
    assert mail.is_auto_reply
    assert reason in (mail.auto_reply_reason or "")
    assert not mail.is_bounce


@pytest.mark.parametrize(
    "name",
    [
        "plain_new_request.eml",
        "reply_gmail.eml",
        "reply_outlook_desktop_html.eml",
        "reply_iphone.eml",
        "html_only.eml",
    ],
)
def test_mail_written_by_a_person_is_not_automatic(name: str) -> None:
    mail = load(name)
    assert not mail.is_auto_reply, mail.auto_reply_reason
    assert not mail.is_bounce


def mail_with(
    headers: list[tuple[str, str]], from_addr: str = "person@example.com", subject: str = "Hi"
) -> ParsedMail:
    return ParsedMail(headers=headers, from_addr=from_addr, subject=subject)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([("Auto-Submitted", "auto-replied")], "Auto-Submitted: auto-replied"),
        ([("auto-submitted", "auto-notified; owner-email=x@y")], "Auto-Submitted"),
        ([("X-Autoreply", "yes")], "X-Autoreply: yes"),
        ([("X-Autorespond", "Out of office")], "X-Autorespond"),
        ([("X-Auto-Response-Suppress", "DR, OOF, AutoReply")], "X-Auto-Response-Suppress"),
        ([("X-Auto-Response-Suppress", "All")], "X-Auto-Response-Suppress: All"),
        ([("Precedence", "junk")], "Precedence: junk"),
        ([("Precedence", "list")], "Precedence: list"),
        ([("List-Id", "Users <users.lists.example.org>")], "List-Id"),
        ([("List-Unsubscribe", "<mailto:u@x>")], "List-Unsubscribe"),
        ([("Return-Path", "<>")], "empty Return-Path"),
    ],
)
def test_rfc3834_and_practice_headers(headers: list[tuple[str, str]], expected: str) -> None:
    assert expected in (auto_reply_reason(mail_with(headers), OWN) or "")


@pytest.mark.parametrize(
    "headers",
    [
        [("Auto-Submitted", "no")],
        [("X-Auto-Response-Suppress", "DR, RN, NRN")],  # only receipts suppressed: a person's Outlook
        [("Precedence", "first-class")],
        [("Return-Path", "<person@example.com>")],
    ],
)
def test_headers_that_do_not_mean_automatic(headers: list[tuple[str, str]]) -> None:
    assert auto_reply_reason(mail_with(headers), OWN) is None


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example.com",
        "postmaster@example.com",
        "no-reply@shop.example",
        "noreply@x.example",
        "do-not-reply@bank.example",
        "donotreply@x.example",
        "notifications-noreply@x.example",
        "support@localhost",
        "support+t1a2@localhost",
        "Billing+x@LOCALHOST",
    ],
)
def test_robot_and_own_senders(sender: str) -> None:
    assert auto_reply_reason(mail_with([], from_addr=sender.lower()), OWN) is not None


@pytest.mark.parametrize("sender", ["noreen@example.com", "replyguy@example.com", "support@other.example"])
def test_people_with_lookalike_addresses(sender: str) -> None:
    assert auto_reply_reason(mail_with([], from_addr=sender), OWN) is None


@pytest.mark.parametrize(
    "subject",
    [
        "Out of Office: [SUP-20] Printer",
        "Automatic reply: [SUP-20] Printer",
        "Abwesenheitsnotiz: Drucker",
        "Automatische Antwort: Drucker",
        "Réponse automatique : Imprimante",
        "Absence du bureau",
        "Respuesta automática: Impresora",
        "Fuori sede: stampante",
        "Risposta automatica: stampante",
        "Resposta automática: impressora",
        "Automatisch antwoord: printer",
        "Frånvaro: skrivare",
        "Automatiskt svar: skrivare",
        "自动回复: 打印机",
        "自動応答: プリンター",
        "[Out of Office] Re: Printer",
    ],
)
def test_out_of_office_subjects(subject: str) -> None:
    assert "out-of-office" in (auto_reply_reason(mail_with([], subject=subject), OWN) or "")


@pytest.mark.parametrize(
    "subject",
    ["Re: [SUP-20] Printer", "Question about automatic replies in our CRM", "Office move next week"],
)
def test_ordinary_subjects(subject: str) -> None:
    assert auto_reply_reason(mail_with([], subject=subject), OWN) is None


@pytest.mark.parametrize(
    ("name", "recipient", "status", "permanent"),
    [
        ("bounce_postfix_dsn.eml", "gone@customer.example", "5.1.1", True),
        ("bounce_delayed_dsn.eml", "slow@customer.example", "4.4.1", False),
        ("bounce_exim.eml", "nobody@customer.example", "5.0.0", True),
        ("bounce_exim_text.eml", "nobody@customer.example", "5.1.1", True),
        ("bounce_qmail.eml", "olduser@customer.example", "5.1.1", True),
        ("bounce_exchange_ndr.eml", "left@contoso.example", "5.1.10", True),
    ],
)
def test_bounces_name_the_failed_recipient_and_our_original(
    name: str, recipient: str, status: str, permanent: bool
) -> None:
    mail = load(name)
    assert mail.is_bounce and mail.bounce is not None
    assert mail.bounce.failed_recipients == (recipient,)
    assert mail.bounce.original_message_id == "ack.SUP-45.1705309200@localhost"
    assert mail.bounce.status == status
    assert mail.bounce.permanent is permanent
    assert mail.is_auto_reply  # never answered


@pytest.mark.parametrize(
    "wording",
    [
        "Hi. This is the qmail-send program at mx.example.net.",
        "This message was created automatically by mail delivery software.",
        "This is the mail system at host mx.example.net.",
        "I'm sorry to have to inform you that your message could not be delivered.",
        "Delivery has failed to these recipients or groups:",
        "Your message to gone@customer.example couldn't be delivered.",
        "Diagnostic information for administrators:",
    ],
)
@pytest.mark.parametrize("case", [str, str.upper, str.lower, str.title])
def test_non_standard_bounce_wording_is_recognised_in_any_letter_case(wording: str, case: Any) -> None:
    """A relay that is not a known robot address, a plain subject, no DSN: only the wording says
    it is a bounce, whatever letter case the relay writes it in."""
    raw = (
        "From: Mail Relay <relay@mx.example.net>\r\nTo: support@localhost\r\nSubject: Notice\r\n"
        "Message-ID: <n1@mx.example.net>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{case(wording)}\r\n\r\n  gone@customer.example\r\n"
    ).encode()
    mail = parse_message(raw, own_addresses=OWN)
    assert mail.bounce is not None, case(wording)
    assert mail.bounce.failed_recipients == ("gone@customer.example",)


def test_dsn_details() -> None:
    bounce = load("bounce_postfix_dsn.eml").bounce
    assert bounce is not None
    assert bounce.original_envelope_id == "outbox-812"
    assert bounce.diagnostic is not None and "User unknown" in bounce.diagnostic


def test_a_success_dsn_is_not_a_bounce() -> None:
    raw = (FIXTURES / "bounce_postfix_dsn.eml").read_bytes().replace(b"Action: failed", b"Action: delivered")
    mail = parse_message(raw)
    assert not mail.is_bounce
    assert mail.is_auto_reply  # still machine mail, never answered


def test_an_out_of_office_is_not_a_bounce() -> None:
    assert load("auto_reply_exchange_ooo.eml").bounce is None


def test_one_reading_of_plus_addresses_feeds_every_loop_decision() -> None:
    """The desk lookup, the own-address loop guard and the reply-token finders all read an address
    through `plus_parts`: the mailbox is the address without its tag, the domain after the last @."""
    from mailgate.mail.decode import plus_parts
    from mailgate.mail.screen import is_own_address

    assert plus_parts(" Support+SUP-20-k3J@LocalHost ") == ("support@localhost", "SUP-20-k3J")
    assert plus_parts("a+b+c-off@example.com") == ("a@example.com", "b+c-off")
    assert plus_parts("plain@example.com") == ("plain@example.com", None)
    assert plus_parts('"x@evil.example"+t@example.com') == ('"x@evil.example"@example.com', "t")
    assert is_own_address("SUPPORT+anything@localhost", ["support@localhost"])
    assert not is_own_address("support+x@localhost.evil.example", ["support@localhost"])


def _listed(*headers: str) -> ParsedMail:
    head = "".join(f"{h}\n" for h in headers)
    raw = f"{head}From: Ann <ann@customer.example>\nTo: support@company.example\nSubject: Help\n\nHi\n"
    return parse_message(raw.encode(), own_addresses=("support@company.example",))


GROUP_DESK = ("support@company.example", "help@lists.company.example")


@pytest.mark.parametrize(
    "headers",
    [
        ("List-Post: <https://groups.google.com/x>, <mailto:Support+x@Company.Example>", "Precedence: list"),
        (
            "Mailing-list: list support@company.example; contact support+owners@company.example",
            "Precedence: list",
        ),
        ("List-Id: Support <support.company.example>",),
        ("X-BeenThere: help@lists.company.example", "List-Id: <help.lists.company.example>"),
    ],
)
def test_the_desks_own_list_is_recognised_by_every_name_it_gives(headers: tuple[str, ...]) -> None:
    mail = _listed(*headers)
    assert own_list(mail, GROUP_DESK) is not None
    assert auto_reply_reason(mail, GROUP_DESK, desk_list=True) is None
    assert auto_reply_reason(mail, GROUP_DESK) is not None  # without it, list mail as ever


@pytest.mark.parametrize(
    "headers",
    [
        # another list
        ("List-Id: <announce.vendor.example>", "List-Post: <mailto:announce@vendor.example>"),
        # the desk's list-id, but it posts to another address: a list naming itself two ways
        ("List-Id: <support.company.example>", "List-Post: <mailto:all-staff@company.example>"),
        # delivery headers name the desk on every mail it receives: no evidence of the list
        (
            "Delivered-To: support@company.example",
            "X-Original-To: support@company.example",
            "Precedence: list",
        ),
        # a list-id that only starts like the desk's
        ("List-Id: <support.company.example.evil.example>",),
    ],
)
def test_other_lists_are_not_the_desks(headers: tuple[str, ...]) -> None:
    assert own_list(_listed(*headers), GROUP_DESK) is None


def test_the_desks_list_still_carries_machines_marks() -> None:
    """An out-of-office or a bulk mail relayed by the desk's own group is still not answered."""
    for mark, said in (
        ("Auto-Submitted: auto-replied", "Auto-Submitted"),
        ("Precedence: bulk", "Precedence: bulk"),
        ("X-Autoreply: yes", "X-Autoreply"),
    ):
        mail = _listed("List-Id: <support.company.example>", mark)
        assert own_list(mail, GROUP_DESK) is not None
        assert said in (auto_reply_reason(mail, GROUP_DESK, desk_list=True) or "")
