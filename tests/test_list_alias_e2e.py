"""A desk whose own address is a group (Google Groups, a Mailman list) that relays to it: the
group's list headers do not make a customer's request list mail. The request opens a ticket and
its author (never the group) is acknowledged, a reply relayed the same way is the customer's
reply on the ticket, an agent's answer goes to the author; mail of any other list stays list
mail, and nothing is ever sent to the group, however a mail is crafted.

Through the installed `mailgate ingest` console script on a fresh desk whose address is the
group; the messages are tests/fixtures/mail/lists/ (each file says what it reproduces).
"""

from __future__ import annotations

from pathlib import Path

from conftest import make_mail
from sqlalchemy import select
from support.ingest_desk import IngestDesk

from mailgate.mail.decode import plus_parts
from mailgate.store.models import Event

LISTS = Path(__file__).parent / "fixtures" / "mail" / "lists"
GROUP = "support@company.example"  # the Google Group, and the desk's address
MAILMAN = "help@lists.company.example"  # a Mailman list, the desk's alias


class Desk(IngestDesk):
    """A fresh desk whose address is the group, with the Mailman list as its alias."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, GROUP, [MAILMAN])

    def mailed_lists(self) -> list[str]:
        """Every recipient of every queued mail that is the group, the Mailman list, a plus form
        of either, or the crafted mail's other list."""
        lists = {GROUP, MAILMAN, "all-staff@company.example"}
        return [r for o in self.outbox() for r in o.recipients if plus_parts(r)[0] in lists]


def fixture(name: str, **put: str) -> bytes:
    raw = (LISTS / name).read_bytes()
    for word, value in put.items():
        raw = raw.replace(word.encode(), value.encode())
    return raw


def test_the_groups_request_and_reply_are_the_customers(tmp_path: Path) -> None:
    desk = Desk(tmp_path / "desk")
    first = desk.ingest(fixture("google_groups_new_request.eml"))
    assert first.disposition == "ticket-created"
    [ticket] = desk.tickets()
    assert (ticket.requester, ticket.requester_name) == ("ann@customer.example", "Ann")
    [ack] = desk.mail_to("ann@customer.example", "acknowledgement")
    assert ack["Subject"] == "[SUP-1] Invoice 4411 charged twice"
    assert [a.addr_spec for a in ack["To"].addresses] == ["ann@customer.example"]

    # Ann answers to the group; relayed the same way, it is her reply, and the agent hears of it.
    reply = desk.ingest(fixture("google_groups_reply.eml", ACK_ID=ack["Message-ID"].strip("<>")))
    assert (reply.disposition, reply.ticket_id) == ("reply", ticket.id)
    last = desk.messages(ticket.id)[-1]
    assert (last.kind, last.author) == ("public", "ann@customer.example")
    assert "reference 77-0912" in last.reply_text
    assert "Google Groups" not in last.reply_text
    told = desk.mail_to("lead@desk.example", "requester-reply")
    assert len(told) == 1 and told[0]["Subject"].startswith("[SUP-1]")

    # The agent's answer goes to Ann, not to the group.
    note = desk.mail_to("lead@desk.example")[0]  # the agent's notice of the new ticket
    token = note["Reply-To"].addresses[0].addr_spec
    answer = make_mail(
        "Re: [SUP-1] Invoice 4411 charged twice",
        "We refunded the second charge.\n",
        sender="Lena Lead <lead@desk.example>",
        to=token,
        in_reply_to=note["Message-ID"],
    )
    assert desk.ingest(answer, rcpt=token).disposition == "agent-reply"
    [to_ann] = [m for m in desk.mail_to("ann@customer.example") if "refunded" in str(m.get_body())]
    assert [a.addr_spec for a in to_ann["To"].addresses] == ["ann@customer.example"]

    # An agent who puts the group on the ticket by hand: Ann hears, the group never does.
    again = make_mail(
        "Re: [SUP-1] Invoice 4411 charged twice",
        "#cc add Support+Billing@company.example\nThe refund is on its way.\n",
        sender="Lena Lead <lead@desk.example>",
        to=token,
        in_reply_to=note["Message-ID"],
    )
    assert desk.ingest(again, rcpt=token).disposition == "agent-reply"
    assert any("on its way" in str(m.get_body()) for m in desk.mail_to("ann@customer.example"))
    assert desk.mailed_lists() == []
    with desk.db.session() as s:
        held = [e.data for e in s.execute(select(Event).where(Event.kind == "mail-held")).scalars()]
    assert [(h["recipient"], h["reason"]) for h in held] == [
        ("support+billing@company.example", "one of the desk's own addresses")
    ]


def test_a_mailman_list_that_is_the_desks_alias(tmp_path: Path) -> None:
    desk = Desk(tmp_path / "desk")
    item = desk.ingest(fixture("mailman_alias_request.eml"), rcpt=MAILMAN)
    assert item.disposition == "ticket-created"
    [ticket] = desk.tickets()
    assert ticket.requester == "bob@strict-dmarc.example"
    assert len(desk.mail_to("bob@strict-dmarc.example", "acknowledgement")) == 1
    # The same list with Reply-To set to itself: Mailman names the author in Cc.
    item = desk.ingest(fixture("mailman_alias_reply_to_list.eml"), rcpt=MAILMAN)
    assert item.disposition == "ticket-created"
    assert [t.requester for t in desk.tickets()] == ["bob@strict-dmarc.example"] * 2
    assert len(desk.mail_to("bob@strict-dmarc.example", "acknowledgement")) == 2
    assert desk.mailed_lists() == []


def test_another_lists_newsletter_is_still_list_mail(tmp_path: Path) -> None:
    """The control: Delivered-To and X-Original-To name the desk (its MTA wrote them), the list
    names itself: no acknowledgement to anyone, the list least of all."""
    desk = Desk(tmp_path / "desk")
    item = desk.ingest(fixture("other_list_newsletter.eml"))
    assert desk.mail_to("pr@vendor.example") == [] and desk.mail_to("announce@vendor.example") == []
    # Today's behaviour for list mail: a ticket for the agents, mail to nobody outside the team.
    assert item.disposition == "ticket-created"
    assert {r for o in desk.outbox() for r in o.recipients} == {"lead@desk.example"}
    trace = " ".join(str(step) for step in item.trace or [])
    assert "no automatic answer" in trace and "relayed by the desk's own list" not in trace


def test_crafted_mail_never_makes_the_desk_mail_the_group(tmp_path: Path) -> None:
    desk = Desk(tmp_path / "desk")
    # The group as its own author, every way a relay names one: a loop, cut before any ticket.
    named = desk.ingest(fixture("attack_mail_the_group.eml"))
    assert named.ticket_id is None and named.disposition is not None
    assert named.disposition.startswith("ignored")
    # A List-Id of the desk's list on another list's mail: still list mail, nothing to the list.
    desk.ingest(fixture("attack_list_id_only.eml"))
    assert desk.mail_to("all-staff@company.example") == []
    # A person's mail that copies the group's owners and asks for answers at the group: the
    # acknowledgement goes to the person alone, the group's addresses are no watchers.
    raw = fixture("google_groups_new_request.eml").replace(
        b"To: support@company.example\n", b"To: support@company.example\nCc: support+owners@company.example\n"
    )
    raw = raw.replace(b"Reply-To: Ann <ann@customer.example>", b"Reply-To: Support <support@company.example>")
    item = desk.ingest(raw)
    assert item.disposition == "ticket-created"
    assert len(desk.mail_to("ann@customer.example", "acknowledgement")) == 1
    assert desk.mailed_lists() == []
