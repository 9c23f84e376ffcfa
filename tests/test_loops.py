"""Loops and floods: the layered limits hold, and the admin hears about it once.

- A bot on loopback plays the relay AND every mailbox behind it: for each mail it gets it sends
  an auto-reply back to mailgate's SMTP port, from the recipient, quoting the subject. The
  requesters' auto-replies carry `Auto-Submitted: auto-replied` half the time; the agent's
  mailbox runs a broken auto-responder with no automatic headers at all, which screening cannot
  see (a marked auto-reply ends its branch of the loop at screening, so only the unmarked one
  can keep a loop going: that is what the limits are for). mailgate may send each address at most
  `auto_mails_per_ticket` mails per ticket and `auto_mails_per_recipient` overall; then it holds
  the mail, records it on the ticket and tells the admin once per address.
- A bounce of one of our notifications is a system note on its ticket: never a reply, never a
  reason to mail anyone.
- One sender opening tickets past `new_tickets_per_sender`: the excess is held (held:flood), not
  ticketed, and the admin is told once per sender.
"""

from __future__ import annotations

import random
import smtplib
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from conftest import RunningDaemon, Sink, free_port, make_mail, scenario_config
from pg import EnvDaemon, backend  # noqa: F401  (fixture)
from sqlalchemy import select

from mailgate.pipeline.handlers import LOOP_PRONE
from mailgate.scheduler import Scheduler
from mailgate.store.models import Event, InboxItem, Message, OutboxItem

ADMIN = "admin@example.com"
AGENT = "agent@loop.example"
TEAM = f"""
triage = "{AGENT}"
[[agents]]
address = "{AGENT}"
name = "agent"
"""
PER_TICKET, PER_RECIPIENT = 4, 9
LIMITS = f"[limits]\nauto_mails_per_ticket = {PER_TICKET}\nauto_mails_per_recipient = {PER_RECIPIENT}"


class AutoResponder:
    """aiosmtpd handler: records every mail, then answers it from each recipient (not the admin)."""

    def __init__(self, seed: int, max_replies: int) -> None:
        self.rng = random.Random(seed)
        self.max_replies = max_replies
        self.port = 0  # mailgate's SMTP port, set once the daemon runs
        self.got: list[tuple[str, EmailMessage]] = []
        self.sent: dict[str, bool] = {}  # Message-ID of each reply -> had Auto-Submitted
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.outgoing: list[bytes] = []
        self.wake = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self._deliver, daemon=True)
        self.thread.start()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(envelope.original_content, policy=policy.default)
        with self.lock:
            self.last = time.monotonic()
            for rcpt in envelope.rcpt_tos:
                self.got.append((rcpt, msg))  # type: ignore[arg-type]
                if rcpt != ADMIN and len(self.sent) < self.max_replies:
                    self.outgoing.append(self._reply(rcpt, msg))  # type: ignore[arg-type]
        self.wake.set()
        return "250 OK"

    def _reply(self, rcpt: str, original: EmailMessage) -> bytes:
        reply = EmailMessage()
        reply["From"] = rcpt
        reply["To"] = str(original["From"].addresses[0].addr_spec)
        reply["Subject"] = f"Re: {original['Subject']}"
        mid = make_msgid(domain="loop.example")
        reply["Message-ID"] = mid
        auto = rcpt != AGENT and self.rng.random() < 0.5
        if auto:
            reply["Auto-Submitted"] = "auto-replied"
        self.sent[mid] = auto
        reply.set_content(f'I got your message "{original["Subject"]}" and will answer when I can.\n')
        return reply.as_bytes()

    def _deliver(self) -> None:
        # Off the relay's event loop: answering inline would hold mailgate's sender in its SMTP dialogue.
        while not self.stopped:
            self.wake.wait(0.2)
            self.wake.clear()
            while True:
                with self.lock:
                    if not self.outgoing:
                        break
                    raw = self.outgoing.pop(0)
                msg = message_from_bytes(raw, policy=policy.default)
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
                    smtp.sendmail(str(msg["From"]), ["support@localhost"], raw.replace(b"\n", b"\r\n"))
                with self.lock:
                    self.last = time.monotonic()


@pytest.mark.slow
def test_a_bot_that_answers_everything_gets_at_most_the_limit_and_the_admin_is_told(tmp_path: Path) -> None:
    bot = AutoResponder(seed=7, max_replies=200)
    relay = Controller(bot, hostname="127.0.0.1", port=free_port())
    relay.start()
    cfg = scenario_config(
        tmp_path / "desk",
        relay_port=relay.port,
        desks=[("support@localhost", "SUP", "default")],
        team=TEAM,
        extra=LIMITS,
    )
    d = RunningDaemon(cfg)
    bot.port = d.port
    try:
        # Three conversations, so the agent's notices span tickets and the overall limit bites too.
        for i in range(3):
            bot_address = f"bot{i}@loop.example"
            d.send(make_mail(f"hello there {i}", sender=bot_address), sender=bot_address)
        # Bounded run: until the conversation has been quiet for 3 s, 20 s, or 200 bot replies.
        start = time.monotonic()
        while time.monotonic() - start < 20 and len(bot.sent) < 200:
            with bot.lock:
                quiet = time.monotonic() - bot.last > 3 and not bot.outgoing
            if quiet:
                break
            time.sleep(0.1)
        assert quiet, (
            f"mailgate kept talking to the bot: {len(bot.got)} mails in {time.monotonic() - start:.0f}s"
        )
        d.settle()
    finally:
        d.stop()
        bot.stopped = True
        relay.stop()

    with d.db.session() as s:
        outbox = list(s.execute(select(OutboxItem)).scalars())
        ticket_of = {o.message_id: o.ticket_id for o in outbox}
        kind_of = {o.message_id: o.kind for o in outbox}
        held = [e for e in s.execute(select(Event).where(Event.kind == "mail-held")).scalars()]
        rows = list(s.execute(select(InboxItem)).scalars())
    to_bot = [(r, m) for r, m in bot.got if r != ADMIN]
    # Mail to our own agent about work (a new ticket to triage) is never held; what answers mail
    # claiming to be the agent's (forged-agent notices, command errors) is: only that can loop.
    limited = [
        (r, m) for r, m in to_bot if r != AGENT or kind_of[str(m["Message-ID"]).strip("<>")] in LOOP_PRONE
    ]
    per_rcpt = Counter(r for r, _ in limited)
    per_ticket = Counter((r, ticket_of[str(m["Message-ID"]).strip("<>")]) for r, m in limited)
    print(
        f"\nloop run: bot sent {len(bot.sent)} replies ({sum(bot.sent.values())} with Auto-Submitted), "
        f"mailgate sent {len(to_bot)} mails to the bot {dict(per_rcpt)}, held {len(held)}, "
        f"admin notices {len(bot.got) - len(to_bot)}"
    )
    assert held, "the run must have been a real loop that the limits stopped"
    reasons = " ".join(e.data["reason"] for e in held)
    assert "automatic mails to" in reasons
    assert max(per_rcpt.values()) <= PER_RECIPIENT
    assert max(per_ticket.values()) <= PER_TICKET
    # Every mail mailgate sent was marked automatic (RFC 3834), so a well-behaved bot would stop.
    assert all(str(m["Auto-Submitted"]) in ("auto-replied", "auto-generated") for _, m in to_bot)
    # No acknowledgement ever answered a mail marked Auto-Submitted.
    for _, m in to_bot:
        if m["In-Reply-To"] and str(m["In-Reply-To"]) in bot.sent and "We're on it" in m.get_content():
            assert not bot.sent[str(m["In-Reply-To"])]
    # The admin: one notice per held address, no more.
    notices = [m for r, m in bot.got if r == ADMIN and "loop limit" in str(m["Subject"])]
    held_to = {e.data["recipient"] for e in held}
    assert sorted(str(m["Subject"]) for m in notices) == sorted(
        f"mailgate: automatic mail to {a} held (loop limit)" for a in held_to
    )
    assert all(r.state == "done" for r in rows)


def _dsn(original_id: str, failed: str, to: str) -> bytes:
    """An RFC 3464 delivery status notification for one of our mails, as Postfix writes it, to
    `to`: that mail's envelope sender (VERP)."""
    return f"""From: MAILER-DAEMON@relay.example (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: {make_msgid(domain="relay.example")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

I'm sorry to have to inform you that your message could not be delivered to {failed}.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; relay.example

Final-Recipient: rfc822; {failed}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 user unknown

--B
Content-Type: text/rfc822-headers

From: support@localhost
To: {failed}
Message-ID: {original_id}

--B--
""".encode()


def test_a_bounce_of_our_notification_is_a_system_note_not_a_reply(tmp_path: Path, sink: Sink) -> None:
    cfg = scenario_config(
        tmp_path / "desk", relay_port=sink.port, desks=[("support@localhost", "SUP", "default")], team=TEAM
    )
    d = RunningDaemon(cfg)
    try:
        d.send(make_mail("printer jam", sender="c@acme.com"), sender="c@acme.com")
        d.settle()
        [notice] = sink.wait_to(AGENT, 1)
        [ack] = sink.wait_to("c@acme.com", 1)
        before = d.tickets()[0]
        n_out = len(sink.messages)
        [to_agent], [to_customer] = sink.envelope_from(AGENT), sink.envelope_from("c@acme.com")
        d.send(_dsn(str(notice["Message-ID"]), AGENT, to_agent), sender="", rcpt=to_agent)
        d.send(_dsn(str(ack["Message-ID"]), "c@acme.com", to_customer), sender="", rcpt=to_customer)
        d.settle()
        assert [r.disposition for r in d.inbox()[1:]] == ["bounce", "bounce"]
        # Nothing but the agent's notice that the customer cannot be reached was queued after the
        # bounces (issue 19): the bounced addresses get nothing, the agent's bounce tells nobody.
        assert [(r.kind, r.recipients) for r in d.outbox()[n_out:]] == [("address-bounced", [AGENT])]
        after = d.tickets()[0]
        assert (after.status, after.updated_at, after.key) == (before.status, before.updated_at, before.key)
        assert len(d.tickets()) == 1 and len(sink.wait_for(n_out + 1)) == n_out + 1
        with d.db.session() as s:
            kinds = [m.kind for m in s.execute(select(Message).order_by(Message.id)).scalars()]
            events = [e.kind for e in s.execute(select(Event).order_by(Event.id)).scalars()]
        assert kinds == ["public", "system", "system"]
        assert "reply" not in events and events.count("bounce") == 2
    finally:
        d.stop()


@pytest.mark.postgres
def test_flood_from_one_sender_is_held_and_the_admin_told_once(
    tmp_path: Path,
    sink: Sink,
    backend: dict[str, str],  # noqa: F811
) -> None:
    cfg = scenario_config(
        tmp_path / "desk",
        relay_port=sink.port,
        desks=[("support@localhost", "SUP", "default")],
        team=TEAM,
        extra="[limits]\nnew_tickets_per_sender = 3\nflood_window_minutes = 60",
    )
    d = EnvDaemon(cfg, backend)
    try:
        for i in range(6):
            d.send(make_mail(f"buy now {i}", sender="spam@flood.example"), sender="spam@flood.example")
        d.settle()
        d.send(
            make_mail("Re: [SUP-1] buy now 0", "and another thing", sender="spam@flood.example"),
            sender="spam@flood.example",
        )
        for i in range(4):
            d.send(make_mail(f"newsletter {i}", sender="news@flood.example"), sender="news@flood.example")
        d.send(make_mail("buy later", sender="spam@flood.example"), sender="spam@flood.example")
        d.settle()
        rows = d.inbox()
        by_sender: dict[str, list[str]] = {}
        for r in rows:
            by_sender.setdefault(r.mail_from, []).append(r.disposition or r.state)
        assert by_sender["spam@flood.example"][:6] == ["ticket-created"] * 3 + ["held:flood"] * 3
        assert by_sender["spam@flood.example"][6:] == ["reply", "held:flood"]  # replies still thread
        assert by_sender["news@flood.example"] == ["ticket-created"] * 3 + ["held:flood"]
        held = [r for r in rows if r.disposition == "held:flood"]
        assert all(r.ticket_id is None and "held, not ticketed" in (r.reason or "") for r in held)
        assert sorted(t.subject for t in d.tickets()) == sorted(
            [f"buy now {i}" for i in range(3)] + [f"newsletter {i}" for i in range(3)]
        )
        # One notice per held sender: the first at once, the second (within [limits]
        # admin_notice_minutes of it) in the next admin digest, and no more queued.
        [first] = sink.wait_to(ADMIN, 1)
        assert str(first["Subject"]) == "mailgate: new tickets from spam@flood.example are held (flood limit)"
        assert "new_tickets_per_sender" in first.get_content()
        later = datetime.now(UTC) + timedelta(minutes=16)
        assert Scheduler(d.daemon.runner, clock=lambda: later).admin_digest() == 1
        d.settle()
        assert len(d.outbox_to(ADMIN)) == 2
        second = sink.wait_to(ADMIN, 2)[1]
        assert (
            str(second["Subject"]) == "mailgate: new tickets from news@flood.example are held (flood limit)"
        )
    finally:
        d.stop()


def test_mail_queued_earlier_in_the_same_message_counts_toward_the_loop_limit(
    tmp_path: Path, sink: Sink
) -> None:
    """One message can cause two automatic mails to its sender (the acknowledgement, then the
    notice of an attachment not kept). The pipeline writes the rows of queued mail at the end of
    the message (one executemany per table), so the limit must count the ones still in hand: at
    one automatic mail per ticket, the second is held and recorded, the first goes out."""
    cfg = scenario_config(
        tmp_path / "desk",
        relay_port=sink.port,
        desks=[("support@localhost", "SUP", "default")],
        team=TEAM,
        extra="[limits]\nauto_mails_per_ticket = 1\nmax_attachment_size = 1000",
    )
    d = RunningDaemon(cfg)
    try:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "c@acme.com", "support@localhost", "big log"
        msg["Message-ID"] = make_msgid(domain="acme.com")
        msg.set_content("the log is attached")
        msg.add_attachment(b"x" * 5000, maintype="text", subtype="plain", filename="big.log")
        d.send(msg.as_bytes(), sender="c@acme.com")
        d.settle()
        assert [r.kind for r in d.outbox_to("c@acme.com")] == ["acknowledgement"]  # the honest first mail
        with d.db.session() as s:
            held = [e.data for e in s.execute(select(Event).where(Event.kind == "mail-held")).scalars()]
        assert [(h["recipient"], h["mail"]) for h in held] == [("c@acme.com", "attachments-rejected")]
        [ack] = sink.wait_to("c@acme.com", 1)
        assert "[SUP-1]" in str(ack["Subject"])
    finally:
        d.stop()
