"""Attacks on who is on a ticket, how many one event mails, and dedup (issue 18; issue 19 item 2).

Each attack goes through the real daemon over SMTP and asserts that nothing changed (no new
participant, no status moved, the ticket's people as before) and nothing leaked (the attacker got
no mail at all, and no mail of the desk names them as a recipient). Each group has a control:
the honest path still works. DESIGN.md "Who is on a ticket"; docs/security.md, "Membership and fan-out".
"""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply, scenario_config
from sqlalchemy import select

from mailgate.store.models import Event, InboxItem, Message, OutboxItem, Participant

DESK = "support@localhost"
AGENT = "agent1@hypertvx.com"
CUSTOMER = "customer1@acme.com"
COLLEAGUE = "customer2@acme.com"
STRANGER = "mallory@evil.example"
SECRET = "IBAN DE89 3704 0044 0532 0130 00"

TEAM = f"""
triage = "{AGENT}"
[[agents]]
address = "{AGENT}"
name = "Agent One"
"""


def start(root: Path, sink: Sink, extra: str = "") -> RunningDaemon:
    cfg = scenario_config(
        root, relay_port=sink.port, desks=[(DESK, "SUP", "default")], team=TEAM, extra=extra
    )
    return RunningDaemon(cfg)


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    d = start(tmp_path / "desk", sink)
    yield d
    d.stop()


def rcpt_of(msg: EmailMessage) -> str:
    return str(msg["Reply-To"].addresses[0].addr_spec)


def send(desk: RunningDaemon, raw: bytes, sender: str, rcpt: str | list[str] = DESK) -> None:
    assert desk.send(raw, sender=sender, rcpt=rcpt) == {}
    desk.settle()


def people(desk: RunningDaemon) -> dict[str, str]:
    with desk.db.session() as s:
        return {p.address: p.role for p in s.execute(select(Participant)).scalars()}


def messages(desk: RunningDaemon) -> list[Message]:
    with desk.db.session() as s:
        return list(s.execute(select(Message).order_by(Message.id)).scalars())


def events(desk: RunningDaemon, kind: str) -> list[Event]:
    with desk.db.session() as s:
        return list(s.execute(select(Event).where(Event.kind == kind).order_by(Event.id)).scalars())


def outgoing_to(desk: RunningDaemon, address: str) -> list[OutboxItem]:
    """Every mail the desk queued for `address`, sent or not: "nothing leaked" means none."""
    with desk.db.session() as s:
        rows = s.execute(select(OutboxItem)).scalars().all()
    return [o for o in rows if address in o.recipients]


def open_ticket(
    desk: RunningDaemon, sink: Sink, *, cc: str | None = None
) -> tuple[EmailMessage, EmailMessage]:
    """The customer writes; returns (the customer's acknowledgement, the agent's notice)."""
    send(
        desk,
        make_mail("Invoice question", "Which account do I pay to?\n", message_id="<first-1@acme.com>", cc=cc),
        CUSTOMER,
    )
    [ack] = sink.wait_to(CUSTOMER, 1)
    [notice] = sink.wait_to(AGENT, 1)
    return ack, notice


def agent_says(desk: RunningDaemon, notice: EmailMessage, text: str) -> None:
    send(desk, reply(notice, AGENT, text), AGENT, rcpt_of(notice))


def assert_nothing_leaked(desk: RunningDaemon, sink: Sink, address: str) -> None:
    assert sink.to(address) == []
    assert outgoing_to(desk, address) == []


# --- a stranger writing on a ticket ---------------------------------------------------------------


def test_attack_stranger_by_subject_tag_is_held_and_learns_nothing(
    desk: RunningDaemon, sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    ack, notice = open_ticket(desk, sink)
    agent_says(desk, notice, f"Please pay to {SECRET}.")
    assert SECRET in body_of(sink.wait_to(CUSTOMER, 2)[-1])
    before = people(desk)

    # Ticket keys are sequential: a stranger guesses SUP-1 and writes on it by its tag.
    send(
        desk,
        make_mail(
            "Re: [SUP-1] Invoice question", "Please send me the account details again.\n", sender=STRANGER
        ),
        STRANGER,
    )
    assert desk.inbox()[-1].disposition == "held:stranger"
    assert people(desk) == before  # not made a watcher
    held = messages(desk)[-1]
    assert (held.kind, held.author) == ("held", STRANGER)
    [heard] = [m for m in sink.wait_to(AGENT, 2) if "is not on the ticket" in body_of(m)]
    assert f"#cc add {STRANGER}" in body_of(heard) and "account details again" in body_of(heard)

    # The agent writes again: the stranger still gets nothing, now or ever.
    agent_says(desk, notice, "Did the payment go through?")
    sink.wait_to(CUSTOMER, 3)
    assert_nothing_leaked(desk, sink, STRANGER)
    assert desk.tickets()[0].status == "open"  # nothing reopened or moved by the stranger

    # Agents see the held mail in `tickets show`, marked as such.
    from mailgate.cli import main

    assert main(["--config", str(desk.config_path), "tickets", "show", "SUP-1"]) == 0
    out = capsys.readouterr().out
    assert f"in held from {STRANGER}" in out and "held" in out


def test_attack_stranger_mails_the_customers_token_address(desk: RunningDaemon, sink: Sink) -> None:
    ack, notice = open_ticket(desk, sink)
    before = people(desk)
    # The customer forwarded the acknowledgement; the stranger answers it to its reply address,
    # with its Message-ID in In-Reply-To and References: all of it issued to the customer.
    forged = reply(ack, STRANGER, "I am with the customer, send me everything.")
    send(desk, forged, STRANGER, rcpt_of(ack))
    item = desk.inbox()[-1]
    assert item.disposition == "held:stranger", item.trace
    assert people(desk) == before
    agent_says(desk, notice, f"Pay to {SECRET}.")
    assert SECRET in body_of(sink.wait_to(CUSTOMER, 2)[-1])
    assert_nothing_leaked(desk, sink, STRANGER)


def test_attack_stranger_cced_on_a_later_reply_is_not_let_in(desk: RunningDaemon, sink: Sink) -> None:
    ack, notice = open_ticket(desk, sink)
    # The customer (or a forger in their name) copies the stranger on a reply.
    send(desk, reply(ack, CUSTOMER, "Adding my accountant.", cc=STRANGER), CUSTOMER, rcpt_of(ack))
    assert desk.inbox()[-1].disposition == "reply"
    assert STRANGER not in people(desk)
    [copied] = [m for m in sink.wait_to(AGENT, 2) if "wrote on SUP-1" in body_of(m)]
    assert f"They copied {STRANGER}" in body_of(copied)
    assert [e.data["addresses"] for e in events(desk, "cc-not-added")] == [[STRANGER]]

    # The stranger replies to all: the desk keeps it, held, and sends them nothing.
    [customer_reply] = [m for m in messages(desk) if m.reply_text.startswith("Adding")]
    send(
        desk,
        make_mail(
            "Re: [SUP-1] Invoice question",
            "What is the balance?\n",
            sender=STRANGER,
            cc=CUSTOMER,
            in_reply_to=f"<{customer_reply.message_id}>",
            references=f"<first-1@acme.com> <{customer_reply.message_id}>",
        ),
        STRANGER,
    )
    assert desk.inbox()[-1].disposition == "held:stranger"
    agent_says(desk, notice, f"The balance is due to {SECRET}.")
    sink.wait_to(CUSTOMER, 2)
    assert STRANGER not in people(desk)
    assert_nothing_leaked(desk, sink, STRANGER)


def test_attack_same_domain_colleague_is_held_unless_the_desk_allows_it(tmp_path: Path, sink: Sink) -> None:
    """join_same_domain is off by default: a requester's domain is no proof (anyone at a free
    mail provider shares it)."""
    for allowed in (False, True):
        sink.clear()
        d = start(
            tmp_path / f"desk-{allowed}", sink, "[security]\njoin_same_domain = true\n" if allowed else ""
        )
        try:
            ack, notice = open_ticket(d, sink)
            send(d, make_mail("Re: [SUP-1] Invoice question", "Any news?\n", sender=COLLEAGUE), COLLEAGUE)
            agent_says(d, notice, f"Paid to {SECRET}.")
            sink.wait_to(CUSTOMER, 2)
            d.settle()
            if allowed:  # control: the colleague joins and hears the answer
                assert d.inbox()[1].disposition == "reply"
                assert people(d)[COLLEAGUE] == "watcher"
                assert SECRET in body_of(sink.wait_to(COLLEAGUE, 1)[-1])
            else:
                assert d.inbox()[1].disposition == "held:stranger"
                assert COLLEAGUE not in people(d)
                assert_nothing_leaked(d, sink, COLLEAGUE)
        finally:
            d.stop()


def test_control_first_mail_cc_colleague_replies_and_is_on_the_thread(
    desk: RunningDaemon, sink: Sink
) -> None:
    ack, notice = open_ticket(desk, sink, cc=COLLEAGUE)
    assert people(desk) == {CUSTOMER: "requester", COLLEAGUE: "watcher"}
    # The colleague answers the customer's original mail (they never got one of ours yet).
    send(
        desk,
        make_mail(
            "Re: Invoice question",
            "It is the March invoice.\n",
            sender=COLLEAGUE,
            to=DESK,
            cc=CUSTOMER,
            in_reply_to="<first-1@acme.com>",
            references="<first-1@acme.com>",
        ),
        COLLEAGUE,
    )
    assert desk.inbox()[-1].disposition == "reply"
    assert len(desk.tickets()) == 1
    assert "March invoice" in body_of(sink.wait_to(AGENT, 2)[-1])
    agent_says(desk, notice, "Thanks, found it.")
    assert "found it" in body_of(sink.wait_to(COLLEAGUE, 1)[-1])
    assert "found it" in body_of(sink.wait_to(CUSTOMER, 2)[-1])


def test_control_answering_our_mail_proves_the_address(desk: RunningDaemon, sink: Sink) -> None:
    """Someone we mailed who is not (or no longer) a participant, e.g. of a ticket made before
    membership was recorded, answers mail sent to their own address: that proves they belong."""
    ack, notice = open_ticket(desk, sink, cc=COLLEAGUE)
    agent_says(desk, notice, "Looking into it.")
    [to_colleague] = sink.wait_to(COLLEAGUE, 1)
    with desk.db.session() as s:
        s.execute(Participant.__table__.delete().where(Participant.address == COLLEAGUE))  # type: ignore[attr-defined]
    send(desk, reply(to_colleague, COLLEAGUE, "Still waiting."), COLLEAGUE, rcpt_of(to_colleague))
    item = desk.inbox()[-1]
    assert item.disposition == "reply", item.trace
    assert any("reply token issued to" in t["decision"] for t in item.trace)
    assert people(desk)[COLLEAGUE] == "watcher"


def test_attack_removed_watcher_answers_old_mail_to_come_back(desk: RunningDaemon, sink: Sink) -> None:
    ack, notice = open_ticket(desk, sink, cc=COLLEAGUE)
    agent_says(desk, notice, "Looking into it.")
    [to_colleague] = sink.wait_to(COLLEAGUE, 1)
    agent_says(desk, notice, f"#cc remove {COLLEAGUE}")
    assert COLLEAGUE not in people(desk)
    send(desk, reply(to_colleague, COLLEAGUE, "Let me back in."), COLLEAGUE, rcpt_of(to_colleague))
    item = desk.inbox()[-1]
    assert item.disposition == "held:stranger", item.trace
    assert COLLEAGUE not in people(desk)
    agent_says(desk, notice, f"Paid to {SECRET}.")
    sink.wait_to(CUSTOMER, 3)
    assert len(sink.to(COLLEAGUE)) == 1  # only the mail from before the removal
    # Control: the agent adds them again, and they are back.
    agent_says(desk, notice, f"#cc add {COLLEAGUE}")
    send(desk, reply(to_colleague, COLLEAGUE, "Thanks for adding me."), COLLEAGUE, rcpt_of(to_colleague))
    assert desk.inbox()[-1].disposition == "reply"


def test_control_cc_add_lets_a_held_stranger_in(desk: RunningDaemon, sink: Sink) -> None:
    ack, notice = open_ticket(desk, sink)
    send(desk, make_mail("Re: [SUP-1] Invoice question", "I am the accountant.\n", sender=STRANGER), STRANGER)
    assert desk.inbox()[-1].disposition == "held:stranger"
    [heard] = [m for m in sink.wait_to(AGENT, 2) if "is not on the ticket" in body_of(m)]
    # The agent vouches for them, from the held-mail notice itself.
    send(desk, reply(heard, AGENT, f"#cc add {STRANGER}"), AGENT, rcpt_of(heard))
    assert people(desk)[STRANGER] == "watcher"
    agent_says(desk, notice, "Welcome aboard: the invoice is attached to the ticket.")
    assert "Welcome aboard" in body_of(sink.wait_to(STRANGER, 1)[-1])
    # Now a member: their mail is a reply like the customer's.
    [theirs] = sink.to(STRANGER)
    send(desk, reply(theirs, STRANGER, "Got it, thanks."), STRANGER, rcpt_of(theirs))
    assert desk.inbox()[-1].disposition == "reply"


def _delivery_report(failed: str, subject: str, original_headers: str | None, to: str = DESK) -> bytes:
    """A DSN as an MTA writes it (RFC 3464), to `to`, optionally returning the headers of the mail."""
    dsn = EmailMessage()
    dsn["From"] = "MAILER-DAEMON@mx.evil.example"
    dsn["To"] = to
    dsn["Subject"] = subject
    dsn["Message-ID"] = "<dsn-1@mx.evil.example>"
    dsn["Auto-Submitted"] = "auto-replied"
    dsn.set_content("This is the mail system.\n")
    dsn.make_mixed()
    report = EmailMessage()
    report.set_content(
        f"Reporting-MTA: dns; mx.evil.example\n\nFinal-Recipient: rfc822; {failed}\nAction: failed\n"
        "Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n"
    )
    dsn.attach(report)
    if original_headers:
        headers = EmailMessage()
        headers.set_content(original_headers)
        dsn.attach(headers)
    raw = dsn.as_bytes().replace(b"multipart/mixed", b"multipart/report; report-type=delivery-status", 1)
    return raw.replace(
        b'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 7bit\n\nReporting',
        b"Content-Type: message/delivery-status\n\nReporting",
        1,
    )


def _quieted(desk: RunningDaemon) -> list[str]:
    """Every address a bounce event quieted (desk-wide, [limits] bounce_quiet_days)."""
    return [a for e in events(desk, "bounce") for a in e.data["muted"]]


def test_attack_forged_bounce_by_subject_tag_mutes_nobody(desk: RunningDaemon, sink: Sink) -> None:
    ack, notice = open_ticket(desk, sink)
    # A stranger "bounces" the customer on SUP-1, naming no mail of ours to them.
    forged = _delivery_report(CUSTOMER, "Undelivered Mail Returned to Sender [SUP-1]", None)
    send(desk, forged, "")
    item = desk.inbox()[-1]
    assert item.disposition == "bounce"
    assert any("not muted" in t["decision"] for t in item.trace), item.trace
    agent_says(desk, notice, "Here is your answer.")
    assert "your answer" in body_of(sink.wait_to(CUSTOMER, 2)[-1])  # still mailed
    # Control: a real bounce of our acknowledgement, sent back to its envelope sender (VERP) as
    # an MTA does, mutes the address for automatic mail (issue 19: an agent's own reply still
    # goes, with a warning to the agent).
    verp = sink.envelope_from(CUSTOMER)[0]
    real = _delivery_report(
        CUSTOMER,
        "Undelivered Mail Returned to Sender",
        f"Message-ID: {ack['Message-ID']}\nSubject: x\n",
        verp,
    )
    send(desk, real, "", verp)
    [bounce] = events(desk, "bounce")[-1:]
    assert bounce.data["muted"] == [CUSTOMER]
    send(desk, make_mail("Another request", sender=CUSTOMER), CUSTOMER)
    assert len(sink.to(CUSTOMER)) == 2  # no acknowledgement to the dead address


def test_attack_forged_bounce_naming_our_public_message_id_mutes_nobody(
    desk: RunningDaemon, sink: Sink
) -> None:
    """The hole the References of a reply opened: the customer's reply (or anything they copy or
    forward) names our acknowledgement's Message-ID, and a delivery report naming it looked real.
    Now only the address a report came back to proves who bounced: the bounce token in the
    envelope sender of the one mail to that person (VERP), which no reply carries."""
    ack, notice = open_ticket(desk, sink, cc=COLLEAGUE)
    agent_says(desk, notice, "Looking into it.")
    sink.wait_to(COLLEAGUE, 1)
    colleague_verp = sink.envelope_from(COLLEAGUE)[0]
    customer_verp = sink.envelope_from(CUSTOMER)[0]
    # Every mail about a ticket has its own recipient's bounce address; From and Reply-To are
    # the desk's as before (the Reply-To carries the reply token, never the bounce token).
    assert colleague_verp != customer_verp and customer_verp.startswith("support+sup-1-")
    assert str(ack["From"]).endswith(f"<{DESK}>") and "-b@" not in str(ack["Reply-To"])
    returned = f"Message-ID: {ack['Message-ID']}\nTo: {CUSTOMER}\nSubject: {ack['Subject']}\n"
    # 1. To the desk's plain address, naming the acknowledgement's (public) Message-ID.
    send(desk, _delivery_report(CUSTOMER, "Undelivered Mail Returned to Sender", returned), "")
    # 2. To a real bounce address of ours, issued to someone else: the colleague, who got their
    #    own copy of the ticket's mail and so knows their own envelope sender.
    forged = _delivery_report(CUSTOMER, "Undelivered Mail Returned to Sender", returned, colleague_verp)
    send(desk, forged, "", colleague_verp)
    # 3. A guess at the customer's bounce address (one letter of its token changed), written
    #    where IMAP and pipe intakes read the address mail came to (To:, Delivered-To:).
    local, domain = customer_verp.split("@")
    guess = f"{local[:-3]}{'a' if local[-3] != 'a' else 'b'}-b@{domain}"
    spoof = f"Delivered-To: {guess}\r\n".encode() + _delivery_report(
        CUSTOMER, "Undelivered Mail Returned to Sender", returned, guess
    )
    send(desk, spoof, "")
    items = desk.inbox()[-3:]
    assert [i.disposition for i in items] == ["bounce"] * 3
    for item in items:
        assert any("not muted" in t["decision"] for t in item.trace), item.trace
    assert _quieted(desk) == []
    assert all(e.data["unproven"] == [CUSTOMER] for e in events(desk, "bounce"))
    # Nobody was quieted and the agents were told nothing: the customer still gets automatic mail.
    assert "address-bounced" not in [r.kind for r in desk.outbox_to(AGENT)]
    send(desk, make_mail("A second question", sender=CUSTOMER), CUSTOMER)
    assert len(sink.wait_to(CUSTOMER, 3)) == 3  # the agent's reply, and this one acknowledged
    # The forgeries are on the ticket, as system notes, for the agents to read.
    assert [m.kind for m in messages(desk)].count("system") == 3


def test_control_a_real_bounce_to_the_bounce_address_mutes_and_tells_the_agent(
    desk: RunningDaemon, sink: Sink
) -> None:
    """The control of the attack above: the report an MTA sends back to the envelope sender of
    our mail to the customer, naming the customer, quiets them and tells the agent."""
    ack, notice = open_ticket(desk, sink)
    verp = sink.envelope_from(CUSTOMER)[0]
    # Even a report that returns nothing of our mail, and does not say who failed, is about the
    # customer: the address it came back to was issued to them alone.
    for failed in (CUSTOMER, ""):
        report = _delivery_report(failed or "", "Undelivered Mail Returned to Sender", None, verp)
        if not failed:
            report = report.replace(b"Final-Recipient: rfc822; \n", b"")
        send(desk, report, "", verp)
        assert desk.inbox()[-1].disposition == "bounce", desk.inbox()[-1].trace
        assert _quieted(desk)[-1:] == [CUSTOMER], desk.inbox()[-1].trace
    told = [m for m in sink.wait_to(AGENT, 2) if "cannot be reached" in body_of(m)]
    assert told and CUSTOMER in body_of(told[0]) and "5.1.1" in body_of(told[0])
    send(desk, make_mail("Another request", sender=CUSTOMER), CUSTOMER)
    assert len(sink.to(CUSTOMER)) == 1  # no acknowledgement to the dead address
    del ack, notice


# --- fan-out ------------------------------------------------------------------------------------


def test_attack_a_thousand_addresses_on_a_new_request(desk: RunningDaemon, sink: Sink) -> None:
    crowd = [f"victim{n}@target.example" for n in range(1000)]
    raw = make_mail(
        "Invoice question",
        "Please answer everyone.\n",
        to=", ".join([DESK, *crowd[:500]]),
        cc=", ".join(crowd[500:]),
    )
    send(desk, raw, CUSTOMER)
    on_ticket = people(desk)
    assert len(on_ticket) == 1 + 10  # the requester and [security] max_initial_cc
    [created] = events(desk, "created")
    assert len(created.data["cc_not_added"]) == 990
    [notice] = sink.wait_to(AGENT, 1)
    assert "990 more address(es)" in body_of(notice)
    sent_before = len(sink.messages)
    agent_says(desk, notice, "Answered.")
    desk.settle()
    assert len(sink.messages) - sent_before == 11 <= 20  # one agent reply: at most the cap
    assert all(sink.to(a) == [] for a in crowd[10:])


def test_attack_fanout_one_agent_reply_mails_at_most_the_cap(tmp_path: Path, sink: Sink) -> None:
    d = start(tmp_path / "desk", sink, "[security]\nmax_recipients_per_event = 5\n")
    try:
        ack, notice = open_ticket(d, sink)
        added = [f"w{n}@acme.com" for n in range(8)]
        agent_says(d, notice, "\n".join(f"#cc add {a}" for a in added))
        assert len([a for a in people(d) if a != AGENT]) == 9
        sent_before = len(sink.messages)
        agent_says(d, notice, f"To all: pay to {SECRET}.")
        d.settle()
        got = [m for m in sink.messages[sent_before:] if SECRET in body_of(m)]
        assert len(got) == 5  # one event, at most [security] max_recipients_per_event people
        [limited] = events(d, "fanout-limited")
        assert len(limited.data["mailed"]) == 5 and len(limited.data["not_mailed"]) == 4
        told = [m for m in sink.to(AGENT) if "were left out" in body_of(m)]
        assert len(told) == 1 and all(a in body_of(told[0]) for a in limited.data["not_mailed"])
    finally:
        d.stop()


def test_fanout_cap_holds_for_the_scheduler_jobs_too(tmp_path: Path, sink: Sink) -> None:
    """A reminder to the requester and watchers is one event as well (pipeline/sla_apply.py)."""
    from mailgate.domain.timers import RemindCustomer
    from mailgate.store.models import now_utc
    from mailgate.store.repo import Repo

    d = start(tmp_path / "desk", sink, "[security]\nmax_recipients_per_event = 3\n")
    try:
        colleagues = [f"c{n}@acme.com" for n in range(4)]
        open_ticket(d, sink, cc=", ".join(colleagues))
        runner = d.daemon.runner
        with d.db.session() as s:
            repo = Repo(s)
            ticket = repo.ticket_by_key("SUP-1")
            assert ticket is not None
            now = now_utc()
            runner.sla.apply(repo, d.config.desks[0], ticket, RemindCustomer("SUP-1", now, None, ()), now)
        d.settle()
        with d.db.session() as s:
            reminders = [
                o.recipients[0]
                for o in s.execute(select(OutboxItem)).scalars()
                if o.kind == "customer-reminder"
            ]
        assert reminders == [CUSTOMER, *colleagues[:2]]  # the requester first, then the cap
        [limited] = events(d, "fanout-limited")
        assert limited.data["not_mailed"] == colleagues[2:]
        assert any("were left out" in body_of(m) for m in sink.wait_to(AGENT, 2))
    finally:
        d.stop()


# --- issue 19 item 2: caps are for automatic mail -------------------------------------------------


def test_agent_replies_are_never_held_by_loop_caps(tmp_path: Path, sink: Sink) -> None:
    limits = "[limits]\nauto_mails_per_ticket = 2\nauto_mails_per_recipient = 2\n"
    d = start(tmp_path / "desk", sink, limits)
    try:
        ack, notice = open_ticket(d, sink)
        for n in range(4):
            agent_says(d, notice, f"Update number {n}.")
        got = sink.wait_to(CUSTOMER, 5)
        assert [f"Update number {n}." in body_of(m) for n, m in enumerate(got[1:])] == [True] * 4
        assert events(d, "mail-held") == []
        # Control: automatic mail is still capped, and the agent's replies used none of it. The
        # acknowledgement of a second request is the customer's second automatic mail; the
        # third request's is held.
        for subject in ("Second question", "Third question"):
            send(d, make_mail(subject, "One more thing.\n"), CUSTOMER)
        assert len(sink.to(CUSTOMER)) == 6
        [held] = events(d, "mail-held")
        assert (held.data["recipient"], held.data["mail"]) == (CUSTOMER, "acknowledgement")
    finally:
        d.stop()


# --- dedup never erases mail ----------------------------------------------------------------------


def test_attack_message_id_preemption_does_not_erase_the_real_mail(desk: RunningDaemon, sink: Sink) -> None:
    victim = "victim@acme.com"
    # The stranger sends first with the Message-ID the victim's client will use.
    send(
        desk,
        make_mail("hello", "nothing to see\n", sender=STRANGER, message_id="<real-1@acme.com>"),
        STRANGER,
    )
    send(
        desk,
        make_mail(
            "Server room flooded", "Water everywhere.\n", sender=victim, message_id="<real-1@acme.com>"
        ),
        victim,
    )
    first, second = desk.inbox()
    assert (first.message_id, second.message_id) == ("real-1@acme.com", "real-1@acme.com")
    assert second.disposition == "ticket-created"
    assert any("reused Message-ID <real-1@acme.com>" in t["decision"] for t in second.trace)
    theirs, real = desk.tickets()
    assert (real.requester, real.subject) == (victim, "Server room flooded")
    assert theirs.requester == STRANGER
    [victim_ack] = sink.wait_to(victim, 1)
    assert "[SUP-2]" in str(victim_ack["Subject"])
    assert people(desk) == {STRANGER: "requester", victim: "requester"}


def test_control_the_same_message_redelivered_is_one_message(desk: RunningDaemon, sink: Sink) -> None:
    raw = make_mail("Printer", "It jams.\n", message_id="<once-1@acme.com>")
    send(desk, raw, CUSTOMER)
    # An MTA retries after a lost 250, through another hop that adds its trace fields on top.
    again = (
        b"Received: from mx2.acme.com (mx2.acme.com [192.0.2.7]) by mx.localhost; Mon, 23 Nov 2026\r\n"
        b"Delivered-To: support@localhost\r\nReturn-Path: <customer1@acme.com>\r\n" + raw
    )
    send(desk, again, CUSTOMER)
    assert len(desk.inbox()) == 1
    assert len(desk.tickets()) == 1
    assert len(sink.wait_to(CUSTOMER, 1)) == 1
    with desk.db.session() as s:
        assert s.execute(select(InboxItem.digest)).scalar_one()


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("max_recipients_per_event = 0", "security.max_recipients_per_event"),
        ("max_initial_cc = -1", "security.max_initial_cc"),
        ('join_same_domain = "yes"', "security.join_same_domain"),
    ],
)
def test_a_wrong_membership_setting_is_refused_naming_its_key(
    tmp_path: Path, setting: str, named: str
) -> None:
    from mailgate.config import ConfigError, load_config

    cfg = scenario_config(
        tmp_path / "desk",
        relay_port=25,
        desks=[(DESK, "SUP", "default")],
        team=TEAM,
        extra=f"[security]\n{setting}\n",
    )
    with pytest.raises(ConfigError, match=named):
        load_config(cfg, env={"MAILGATE_SECRET": "x"})
