"""Mail as real clients send it, through the installed `mailgate ingest` on a fresh desk: the
right ticket (threaded or new, or none for an out-of-office), the words the agent and the
requester see, the files reaching the agent's notification, and an agent's commands from an
Outlook reply with no text part. The messages are tests/fixtures/mail/clients/ (each file says
which client it reproduces); ids the desk made up (the acknowledgement's Message-ID, the
agent's reply address) are put in where the client would have them.
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from conftest import make_mail
from support.ingest_desk import IngestDesk

CLIENTS = Path(__file__).parent / "fixtures" / "mail" / "clients"


class Desk(IngestDesk):
    """A desk directory as `mailgate init` leaves it, fed by `mailgate ingest` in a child process."""


def fixture(name: str, **put: str) -> bytes:
    raw = (CLIENTS / name).read_bytes()
    for word, value in put.items():
        raw = raw.replace(word.encode(), value.encode())
    return raw


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def test_outlook_exchange_and_apple_mail_on_their_tickets(tmp_path: Path) -> None:
    desk = Desk(tmp_path / "desk")
    hans = desk.ingest(make_mail("Drucker druckt nicht", sender="Hans Mueller <hans.mueller@firma.example>"))
    [ticket] = desk.tickets()
    assert (ticket.key, hans.disposition) == ("SUP-1", "ticket-created")

    # Outlook (de) answers plain support@ with "AW: [SUP-1]" and no threading headers: the same ticket.
    outlook = desk.ingest(fixture("outlook_de_reply_no_references.eml"))
    assert (outlook.disposition, outlook.ticket_id) == ("reply", ticket.id)
    said = desk.messages(ticket.id)[-1].reply_text
    assert "zeigt jetzt „Papierstau“ an" in said and "Wir haben Ihre Anfrage" not in said

    # Exchange's out-of-office to a mail that names no ticket: no ticket, nobody mailed.
    before = len(desk.mail_to("hans.mueller@firma.example"))
    oof = desk.ingest(fixture("exchange_oof_no_ticket.eml"))
    assert oof.disposition == "held:auto-reply" and oof.ticket_id is None
    assert [t.key for t in desk.tickets()] == ["SUP-1"]
    assert len(desk.mail_to("hans.mueller@firma.example")) == before

    # Apple Mail (format=flowed; delsp=yes) answers its acknowledgement: the link arrives whole.
    desk.ingest(make_mail("Rechnung fehlt", sender="Jürgen Weiß <juergen@example.de>"))
    [ack] = desk.mail_to("juergen@example.de", "acknowledgement")
    apple = desk.ingest(
        fixture("apple_mail_flowed_delsp.eml", ACK_ID=ack["Message-ID"].strip("<>"), **{"[SUP-1]": "[SUP-2]"})
    )
    assert apple.disposition == "reply"
    said = desk.messages(apple.ticket_id)[-1].reply_text  # type: ignore[arg-type]
    assert (
        "https://portal.example.de/rechnungen/2026/11/abcdefghijklmnopqrstuvwxyz0123456789/ansehen?id=42"
        in said
    )
    told = desk.mail_to("lead@desk.example", "requester-reply")[-1]
    assert told["Subject"].startswith("[SUP-2]")
    assert "Rechnung März 2026 – Kunde Weiß.pdf" in [p.get_filename() for p in told.iter_attachments()]


def test_agent_commands_from_outlook_html_only_reply(tmp_path: Path) -> None:
    desk = Desk(tmp_path / "desk")
    desk.ingest(make_mail("system is down", sender="Carl Customer <carl@acme.example>"))
    [note] = desk.mail_to("lead@desk.example")
    token = note["Reply-To"].addresses[0].addr_spec
    reply = fixture(
        "outlook_html_only_agent_commands.eml",
        NOTIFICATION_ID=note["Message-ID"].strip("<>"),
        TOKEN_ADDRESS=token,
    )
    item = desk.ingest(reply, rcpt=token)
    assert item.disposition == "agent-reply"
    [ticket] = desk.tickets()
    assert (ticket.status, ticket.priority) == ("in_progress", "critical")
    assert ticket.assignee == "lead@desk.example"  # the triage default, not the quoted "#assign me"
    [update] = desk.mail_to("carl@acme.example", "status_changed")
    body = text_of(update)
    assert "We are on it: the backend is being restarted." in body
    assert "#status" not in body and "New request" not in body and "Sent:" not in body
    # The same agent's Mutt, signing inline with OpenPGP: the armor is not the top of the reply.
    [note] = [m for m in desk.mail_to("lead@desk.example") if m["Subject"].startswith("[SUP-1]")][-1:]
    signed = fixture(
        "mutt_inline_pgp_agent_commands.eml",
        NOTIFICATION_ID=note["Message-ID"].strip("<>"),
        TOKEN_ADDRESS=token,
    )
    assert desk.ingest(signed, rcpt=token).disposition == "agent-reply"
    [ticket] = desk.tickets()
    assert (ticket.priority, ticket.tags) == ("high", ["outage"])


def test_winmail_dat_files_reach_the_agent_by_name(tmp_path: Path) -> None:
    desk = Desk(tmp_path / "desk")
    item = desk.ingest(fixture("outlook_winmail_dat.eml"))
    assert item.disposition == "ticket-created"
    [note] = desk.mail_to("lead@desk.example")
    files = {p.get_filename(): p.get_content() for p in note.iter_attachments()}
    assert sorted(files) == ["Quarterly figures Q3 – Mälardalen.xlsx", "import log 2026-11-23.txt"]
    assert "row 212: invalid date" in str(files["import log 2026-11-23.txt"])
    assert "winmail.dat" not in text_of(note)


def test_a_no_reply_form_is_the_customers_request(tmp_path: Path) -> None:
    desk = Desk(tmp_path / "desk")
    item = desk.ingest(fixture("webform_noreply_reply_to.eml"))
    assert item.disposition == "ticket-created"
    [ticket] = desk.tickets()
    assert (ticket.requester, ticket.requester_name) == ("ines.garcia@mail.example", "Inés García")
    [ack] = desk.mail_to("ines.garcia@mail.example", "acknowledgement")
    assert ack["Subject"] == "[SUP-1] Contact form: booking 88123"
    assert desk.mail_to("no-reply@forms.example-hotels.example") == []


def test_outlook_forward_names_the_customer(tmp_path: Path) -> None:
    """Outlook forwards with no "Forwarded message" line: the agent is still asked to confirm the
    customer it names (From alone proves nothing), as for Gmail's and Apple Mail's forwards."""
    desk = Desk(tmp_path / "desk")
    desk.ingest(fixture("outlook_forward_for_customer.eml"))
    [ticket] = desk.tickets()
    assert ticket.requester == "lead@desk.example"
    assert desk.mail_to("carl@acme.example") == []
    assert any("#requester carl@acme.example" in text_of(m) for m in desk.mail_to("lead@desk.example"))
