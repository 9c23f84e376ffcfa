"""Bounces that are not RFC 3464 reports, delay warnings and complaints, through the real daemon:
each is noted on the ticket of the mail it returns and never answered; a failure sent back to the
envelope sender of our mail (VERP), or a complaint naming it as the original envelope sender,
stops mail to that address, a delay warning does not."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from conftest import RunningDaemon, Sink, make_mail
from sqlalchemy import select

from mailgate.store.models import BouncedAddress, Participant

FIXTURES = Path(__file__).parent / "fixtures" / "mail"
CUSTOMER = "gone@acme.com"


def _ack(daemon: RunningDaemon, sink: Sink) -> EmailMessage:
    daemon.send(make_mail("printer broken", sender=CUSTOMER), sender=CUSTOMER)
    daemon.settle()
    [ack] = sink.wait_to(CUSTOMER, 1)
    return ack


def _about(name: str, ack: EmailMessage, verp: str) -> bytes:
    """A fixture notice, made to return our acknowledgement to CUSTOMER, sent to `verp` (the
    acknowledgement's envelope sender; a complaint names it in Original-Mail-From)."""
    raw = (
        (FIXTURES / name)
        .read_bytes()
        .replace(
            b"Original-Mail-From: <support@desk.example>", b"Original-Mail-From: <" + verp.encode() + b">"
        )
    )
    raw = raw.replace(b"ack.SUP-9.1@desk.example", str(ack["Message-ID"]).strip("<>").encode())
    raw = raw.replace(b"support@desk.example", b"support@localhost")
    return raw.replace(b"gone@customer.example", CUSTOMER.encode()).replace(
        b"user@example.com", CUSTOMER.encode()
    )


def _notify(daemon: RunningDaemon) -> dict[str, bool]:
    with daemon.db.session() as s:
        return {p.address: p.notify for p in s.execute(select(Participant)).scalars()}


def _quiet(daemon: RunningDaemon) -> set[str]:
    """Addresses no automatic mail goes to, desk-wide, for the quiet period (a permanent failure
    or a complaint; handlers/bounce.py)."""
    with daemon.db.session() as s:
        return {b.address for b in s.execute(select(BouncedAddress)).scalars()}


def test_opensmtpd_text_bounce_with_list_headers_mutes_the_address(daemon: RunningDaemon, sink: Sink) -> None:
    ack = _ack(daemon, sink)
    [verp] = sink.envelope_from(CUSTOMER)
    raw = b"Precedence: bulk\r\nList-Id: <relay.acme.com>\r\n" + _about("bounce_opensmtpd.eml", ack, verp)
    daemon.send(raw, sender="", rcpt=verp)
    daemon.settle()
    item = daemon.inbox()[-1]
    assert item.disposition == "bounce", item.trace
    assert len(daemon.tickets()) == 1
    assert CUSTOMER in _quiet(daemon)
    assert len(sink.to(CUSTOMER)) == 1  # never answered


def test_arf_complaint_mutes_the_complainer(daemon: RunningDaemon, sink: Sink) -> None:
    ack = _ack(daemon, sink)
    [verp] = sink.envelope_from(CUSTOMER)
    raw = _about("complaint_arf.eml", ack, verp).replace(
        b"8787KJKJ3K4J3K4J3K4J3.mail@desk.example", str(ack["Message-ID"]).strip("<>").encode()
    )
    daemon.send(raw, sender="abusedesk@example.com")
    daemon.settle()
    item = daemon.inbox()[-1]
    assert item.disposition == "bounce", item.trace
    assert CUSTOMER in _quiet(daemon)
    assert len(sink.to(CUSTOMER)) == 1


def test_a_complaint_naming_the_plain_address_as_envelope_sender_quiets_nobody(
    daemon: RunningDaemon, sink: Sink
) -> None:
    """An ARF report anyone could write: it names our acknowledgement, but not the envelope
    sender (bounce token) of our mail to the complainer. Noted on the ticket, never believed."""
    ack = _ack(daemon, sink)
    raw = _about("complaint_arf.eml", ack, "support@localhost").replace(
        b"8787KJKJ3K4J3K4J3K4J3.mail@desk.example", str(ack["Message-ID"]).strip("<>").encode()
    )
    daemon.send(raw, sender="abusedesk@example.com")
    daemon.settle()
    item = daemon.inbox()[-1]
    assert item.disposition == "bounce", item.trace
    assert any("not muted" in t["decision"] for t in item.trace), item.trace
    assert _quiet(daemon) == set()


def test_a_delay_warning_is_noted_but_the_address_keeps_getting_mail(
    daemon: RunningDaemon, sink: Sink
) -> None:
    ack = _ack(daemon, sink)
    [verp] = sink.envelope_from(CUSTOMER)
    daemon.send(_about("bounce_sendmail_warning.eml", ack, verp), sender="", rcpt=verp)
    daemon.settle()
    item = daemon.inbox()[-1]
    assert item.disposition == "bounce", item.trace
    assert len(daemon.tickets()) == 1
    assert _notify(daemon)[CUSTOMER] is True
