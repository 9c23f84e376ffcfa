"""Mail as clients nobody here wrote send it, through the real daemon (SMTP in, the relay out) on
the small desk: what the customer and the agent notice. Each message is a fixture under
tests/fixtures/mail/clients/ whose X-Fixture header says which client it reproduces; ids the desk
made up (the notification's Message-ID, the agent's reply address, the mail Carla read) are put
in where the client would have them.

- an agent's commands as Outlook, Gmail and a Japanese input method type them: obeyed when they
  open the reply (full-width "＃", ideographic space) or stand under one greeting line, and never
  sent to the customer as text;
- read and delivery receipts (Outlook, Thunderbird, Exchange) on a ticket waiting for the
  customer: no answer from Carla, so the ticket keeps waiting and nobody is mailed;
- GroupWise's reply, whose history is not quoted with ">": the agent reads Carla's new words only.
"""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply
from sqlalchemy import select
from support.small_desk import CUSTOMER, DESK, TRIAGE, WATCHER

from mailgate.store.models import InboxItem, Message

CLIENTS = Path(__file__).parent / "fixtures" / "mail" / "clients"
SUBJECT = "Printer on floor 2 is broken"


def fixture(name: str, **put: str) -> bytes:
    raw = (CLIENTS / name).read_bytes()
    for word, value in put.items():
        raw = raw.replace(word.encode(), value.encode())
    return raw


def open_ticket(desk: RunningDaemon, sink: Sink) -> tuple[EmailMessage, str]:
    """Carla's request, made SUP-1: the notification Tara got and its reply address (the token)."""
    desk.send(make_mail(SUBJECT, "It shows E-31.\n", sender=CUSTOMER, to=DESK), sender=CUSTOMER, rcpt=DESK)
    desk.settle()
    [note] = sink.wait_to(TRIAGE, 1)
    return note, note["Reply-To"].addresses[0].addr_spec


def last_inbox(desk: RunningDaemon) -> InboxItem:
    with desk.db.session() as s:
        item = s.execute(select(InboxItem).order_by(InboxItem.id.desc())).scalars().first()
        assert item is not None
        return item


@pytest.mark.parametrize(
    ("name", "greeting", "priority", "question"),
    [
        ("outlook_ja_fullwidth_commands.eml", "", "high", "プリンターの型番を教えていただけますか。"),
        ("gmail_agent_greeting_then_command.eml", "Hi Carla,", None, "Could you tell me which model"),
        ("outlook_agent_greeting_then_commands.eml", "Hello Carla,", "high", "Which model is the printer?"),
    ],
)
def test_agent_commands_as_clients_type_them(
    small_desk: RunningDaemon, sink: Sink, name: str, greeting: str, priority: str | None, question: str
) -> None:
    """Obeyed when they open the reply, in the input method's "＃" and ideographic space too, or
    under one greeting line; the customer reads the greeting and the question, no command."""
    note, token = open_ticket(small_desk, sink)
    answer = fixture(name, NOTIFICATION_ID=note["Message-ID"].strip("<>"), TOKEN_ADDRESS=token)
    small_desk.send(answer, sender=TRIAGE, rcpt=token)
    small_desk.settle()
    [ticket] = small_desk.tickets()
    assert (ticket.status, ticket.priority) == ("pending", priority)
    told = body_of(sink.wait_to(CUSTOMER, 2)[-1])
    assert question in told
    assert told.index(greeting) < told.index(question)  # the greeting opens the comment
    assert "#" not in told and "＃" not in told and "priority" not in told


def test_outlook_autoformat_leaves_the_commands_meaning(small_desk: RunningDaemon, sink: Sink) -> None:
    """Outlook made the typed address a mailto link ("address<mailto:address>" in its text part)
    and curled the quotes of '#set plan="gold"': Wes is added and told, the plan is gold."""
    note, token = open_ticket(small_desk, sink)
    answer = fixture(
        "outlook_agent_autoformat_commands.eml",
        NOTIFICATION_ID=note["Message-ID"].strip("<>"),
        TOKEN_ADDRESS=token,
    )
    small_desk.send(answer, sender=TRIAGE, rcpt=token)
    small_desk.settle()
    [ticket] = small_desk.tickets()
    assert ticket.fields["plan"] == "gold"
    [to_wes] = sink.wait_to(WATCHER, 1)
    assert "Wes from your facilities team will get our updates too." in body_of(to_wes)
    assert "mailto" not in body_of(sink.to(CUSTOMER)[-1])


@pytest.mark.parametrize(
    ("name", "kept_as"),
    [
        ("outlook_read_receipt.eml", "reply:auto"),
        ("thunderbird_return_receipt.eml", "reply:auto"),
        # from the customer's postmaster, nobody on the ticket: held, and no agent told of it
        ("exchange_delivery_receipt.eml", "held:stranger"),
    ],
)
def test_a_receipt_is_no_answer_from_the_customer(
    small_desk: RunningDaemon, sink: Sink, name: str, kept_as: str
) -> None:
    note, token = open_ticket(small_desk, sink)
    small_desk.send(reply(note, TRIAGE, "#pending\n\nWhich model is it?"), sender=TRIAGE, rcpt=token)
    small_desk.settle()
    asked = sink.wait_to(CUSTOMER, 2)[-1]
    assert small_desk.tickets()[0].status == "pending"
    mails = len(small_desk.outbox())

    receipt = fixture(name, ORIGINAL_ID=asked["Message-ID"].strip("<>"))
    sender = "postmaster@client.example" if name.startswith("exchange") else CUSTOMER
    small_desk.send(receipt, sender=sender, rcpt=DESK)
    small_desk.settle()
    [ticket] = small_desk.tickets()
    assert ticket.status == "pending"  # still waiting for Carla: a receipt is not her answer
    assert len(small_desk.outbox()) == mails  # nobody told, nothing acknowledged
    assert last_inbox(small_desk).disposition == kept_as

    # Control: Carla's own answer does bring the ticket back to the desk.
    small_desk.send(reply(asked, CUSTOMER, "It is an HP LaserJet M404."), sender=CUSTOMER, rcpt=DESK)
    small_desk.settle()
    assert small_desk.tickets()[0].status == "open"


def test_a_receipt_for_no_ticket_opens_none(small_desk: RunningDaemon, sink: Sink) -> None:
    """A receipt for a mail the desk cannot place (tag and ids gone) is held, not a new ticket."""
    receipt = fixture("outlook_read_receipt.eml", ORIGINAL_ID="unknown@elsewhere.example")
    receipt = receipt.replace(b"[SUP-1] ", b"")
    small_desk.send(receipt, sender=CUSTOMER, rcpt=DESK)
    small_desk.settle()
    assert small_desk.tickets() == []
    assert last_inbox(small_desk).disposition == "held:auto-reply"
    assert small_desk.outbox() == []


@pytest.mark.parametrize(
    ("name", "said"),
    [
        (
            "groupwise_reply.eml",
            "The new toner did not help: the display still shows E-31 and the paper tray light blinks.",
        ),
        (
            "outlook_ro_reply.eml",
            "Tonerul nou nu a ajutat: afișajul arată tot E-31, iar lampa tăvii de hârtie clipește.",
        ),
        ("zoho_reply_dashes.eml", "The new toner did not help: the display still shows E-31."),
    ],
)
def test_a_reply_whose_history_is_not_quoted_reaches_the_agent_without_it(
    small_desk: RunningDaemon, sink: Sink, name: str, said: str
) -> None:
    """GroupWise's '>>> sender date >>>', Outlook's header block in Romanian, Zoho's dashed
    attribution: the old mail below is not quoted with ">", and still not Carla's words."""
    note, token = open_ticket(small_desk, sink)
    ask = "Please put in the new toner cartridge we sent and tell us what the display shows."
    small_desk.send(reply(note, TRIAGE, ask), sender=TRIAGE, rcpt=token)
    small_desk.settle()
    asked = sink.wait_to(CUSTOMER, 2)[-1]
    small_desk.send(fixture(name, ORIGINAL_ID=asked["Message-ID"].strip("<>")), sender=CUSTOMER, rcpt=DESK)
    small_desk.settle()
    told = body_of(sink.wait_to(TRIAGE, 2)[-1])
    assert said in told
    assert ">>>" not in told and "toner cartridge we sent" not in told
    with small_desk.db.session() as s:
        stored = s.execute(select(Message.reply_text).order_by(Message.id.desc())).scalars().first()
    assert stored == said


def test_japanese_outlook_request_reads_as_written(small_desk: RunningDaemon, sink: Sink) -> None:
    """Windows' ISO-2022-JP (code page 50220): the ㈱ of a company name, circled numbers, 髙."""
    small_desk.send(
        fixture("outlook_ja_cp50220_nec_chars.eml"),
        sender="ichiro.takahashi@takahashi-ss.example.co.jp",
        rcpt=DESK,
    )
    small_desk.settle()
    [ticket] = small_desk.tickets()
    assert (ticket.requester_name, ticket.subject) == (
        "髙橋 一郎（㈱髙橋製作所）",
        "複合機の故障について（本社３階）①",
    )
    [ack] = sink.wait_to("ichiro.takahashi@takahashi-ss.example.co.jp", 1)
    assert ack["Subject"] == "[SUP-1] 複合機の故障について（本社３階）①"
    assert "髙橋 一郎（㈱髙橋製作所）" in body_of(ack)
    told = body_of(sink.wait_to(TRIAGE, 1)[0])
    assert "①電源を入れるとエラーE-31が表示される\n②用紙トレイのランプが点滅する" in told
    assert "\x1b" not in told and "$B" not in told


@pytest.mark.parametrize("name", ["iphone_fr_thanks.eml", "outlook_de_thanks.eml", "gmail_es_thanks.eml"])
def test_a_thank_you_leaves_a_resolved_ticket_resolved(
    small_desk: RunningDaemon, sink: Sink, name: str
) -> None:
    """Seed 003: a plain "thanks" must not reopen what was resolved; in French with its space
    before "!", in German saying it works again, in Spanish opened with "¡"."""
    note, token = open_ticket(small_desk, sink)
    small_desk.send(reply(note, TRIAGE, "#resolve\n\nThe fuser was replaced."), sender=TRIAGE, rcpt=token)
    small_desk.settle()
    resolved = sink.wait_to(CUSTOMER, 2)[-1]
    assert small_desk.tickets()[0].status == "resolved"

    small_desk.send(fixture(name, ORIGINAL_ID=resolved["Message-ID"].strip("<>")), sender=CUSTOMER, rcpt=DESK)
    small_desk.settle()
    assert small_desk.tickets()[0].status == "resolved"

    # Control: a reply that says it is still broken does reopen.
    small_desk.send(
        reply(resolved, CUSTOMER, "Danke, aber es geht wieder nicht."), sender=CUSTOMER, rcpt=DESK
    )
    small_desk.settle()
    assert small_desk.tickets()[0].status != "resolved"
