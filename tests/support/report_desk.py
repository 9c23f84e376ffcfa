"""A desk with a known week of history, for the report, export and weekly-mail tests.

Every mail goes through the real pipeline (Acceptor → Runner: routing, agent commands by reply,
reopen, ratings), then the rows that delivery wrote are moved to the instant the story says —
the pipeline stamps the wall clock, this desk lives on an injected one (the same habit as
tests/support/sla_desk.py, whose `set_status` re-dates its status event).

The week, Mon 2026-11-02 to Sun 2026-11-08, office hours Mon-Fri 09:00-17:00 UTC; SUP tickets
under "standard" (first response 2h, resolution 8h, office hours), CARE under "care" (1h / 24h,
around the clock). tests/test_reports.py holds the figures worked out by hand from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

from conftest import make_mail, reply
from sqlalchemy import func, select, update

from mailgate.intake.accept import Acceptor, Envelope
from mailgate.store.models import Event, Message, OutboxItem, Ticket
from support.sla_desk import CUSTOMER, LEAD, TECH, Desk, make_desk

SLA = """
[calendars.office]
tz = "UTC"
hours = { mon-fri = ["09:00-17:00"] }

[[policies]]
name = "care"
match = { desk = "CARE" }
calendar = "24x7"
first_response = "1h"
resolution = "24h"

[[policies]]
name = "standard"
calendar = "office"
first_response = "2h"
resolution = "8h"

[timers]
calendar = "office"
unanswered_reminder_hours = 0
auto_close_resolved_days = 0
deferred_review_days = 0
digest_hour = false
"""

WEEK_START = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday


def at(day: int, hour: int, minute: int = 0) -> datetime:
    """Day 2 = Monday 2026-11-02."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


class History:
    """Deliver mail at a given instant of the story."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk

    def _deliver(self, raw: bytes, sender: str, when: datetime, source: str) -> None:
        db = self.desk.db
        with db.session() as s:
            e0 = s.execute(select(func.coalesce(func.max(Event.id), 0))).scalar_one()
            m0 = s.execute(select(func.coalesce(func.max(Message.id), 0))).scalar_one()
            t0 = s.execute(select(func.coalesce(func.max(Ticket.id), 0))).scalar_one()
        wall = datetime.now(UTC)
        msg = message_from_bytes(raw, policy=policy.default)
        rcpts = tuple(a for _, a in getaddresses([str(msg["To"])]))
        key = f"{source}:{msg['Message-ID']}" if source.startswith("imap") else None
        Acceptor(db, self.desk.config).accept(raw, Envelope(sender, rcpts, source, key))
        self.desk.runner.run_until_idle()
        with db.session() as s:
            s.execute(update(Event).where(Event.id > e0).values(created_at=when))  # type: ignore[arg-type]
            s.execute(update(Message).where(Message.id > m0).values(created_at=when))  # type: ignore[arg-type]
            s.execute(update(Ticket).where(Ticket.id > t0).values(created_at=when, updated_at=when))  # type: ignore[arg-type]
            for column in ("first_response_at", "resolved_at", "closed_at"):
                c = getattr(Ticket, column)
                s.execute(update(Ticket).where(c >= wall).values({column: when}))

    def new(
        self, subject: str, when: datetime, *, to: str = "support@example.com", source: str = "smtp"
    ) -> Ticket:
        self._deliver(make_mail(subject, sender=CUSTOMER, to=to), CUSTOMER, when, source)
        return self.desk.tickets()[-1]

    def _last_to(self, key: str, address: str) -> EmailMessage:
        with self.desk.db.session() as s:
            tid = s.execute(select(Ticket.id).where(Ticket.key == key)).scalar_one()  # type: ignore[call-overload]
            rows = s.execute(
                select(OutboxItem.raw, OutboxItem.recipients)  # type: ignore[call-overload]
                .where(OutboxItem.ticket_id == tid)
                .order_by(OutboxItem.id.desc())  # type: ignore[attr-defined]
            ).all()
        for raw, recipients in rows:
            if address in recipients:
                return message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]
        raise AssertionError(f"no mail to {address} on {key}")

    def agent(self, key: str, body: str, when: datetime, agent: str = TECH) -> None:
        """The agent answers the latest notification they got about the ticket."""
        self._deliver(reply(self._last_to(key, agent), agent, body), agent, when, "smtp")

    def customer(self, key: str, body: str, when: datetime) -> None:
        """The customer answers the latest mail they got about the ticket."""
        self._deliver(reply(self._last_to(key, CUSTOMER), CUSTOMER, body), CUSTOMER, when, "smtp")


def known_week(root: Path, database_url: str | None = None) -> Desk:
    """The desk after the week described in the module docstring (see tests/test_reports.py)."""
    desk = make_desk(root, sla=SLA, database_url=database_url)
    h = History(desk)
    # Monday
    h.new("Printer jams", at(2, 10))  # SUP-1, by SMTP
    h.agent("SUP-1", "Please open tray 2 and remove the paper.", at(2, 11))
    h.agent("SUP-1", "#status completed\nIt works again.", at(2, 15))
    h.new("VPN drops", at(2, 16), source="imap:support")  # SUP-2, fetched by IMAP
    # Tuesday
    h.new("Disk full", at(3, 9))  # SUP-3
    h.customer("SUP-1", "5 - Great service", at(3, 9, 30))  # rating, not a reopen
    h.agent("SUP-3", "#status completed\nI cleaned up the temp folder.", at(3, 10))
    h.agent("SUP-2", "#status pending\nPlease send the client logs.", at(3, 10, 30))  # first response late
    # Wednesday
    h.customer("SUP-3", "Still broken, the disk is full again.", at(4, 9))  # reopens
    h.new("Wifi slow", at(4, 14), source="pipe")  # SUP-4: nobody ever answers
    # Thursday
    h.customer("SUP-2", "Here are the logs you asked for.", at(5, 9))  # back to open
    h.agent("SUP-2", "#status completed\nNew VPN profile installed.", at(5, 12))
    h.new("Ramp broken", at(5, 20), to="care@example.com")  # CARE-1
    h.agent("CARE-1", "We will send someone tomorrow.", at(5, 20, 30), agent=LEAD)
    # Friday
    h.agent("SUP-3", "#status completed\nReplaced the disk.", at(6, 9))
    h.customer("SUP-3", "2 - Took too long", at(6, 10))
    return desk
