"""A desk with SLA rules, a controllable clock and a scheduler, for the scheduler and SLA tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path

from conftest import make_mail, write_config
from sqlalchemy import select

from mailgate.config import Config, load_config
from mailgate.intake.accept import Acceptor, Envelope
from mailgate.pipeline.apply import change_status
from mailgate.pipeline.runner import Runner
from mailgate.scheduler import JOBS, Scheduler
from mailgate.store.db import Database
from mailgate.store.models import Event, OutboxItem, Ticket
from mailgate.store.repo import Repo

CUSTOMER = "ann@acme.example"


LEAD = "lead@example.com"


TECH = "tech@example.com"


ANGEL = "angel@example.com"


TEAM = f"""
triage = "{ANGEL}"
[[agents]]
address = "{ANGEL}"
name = "Angel"
[[agents]]
address = "{LEAD}"
name = "Lea Lead"
[[agents]]
address = "{TECH}"
name = "Tom Tech"
[[groups]]
name = "Service Desk"
members = ["{LEAD}", "{TECH}"]
lead = "{LEAD}"
"""


ROUTING = f"""
[[rules]]
name = "support"
when.to = "support@example.com"
then = {{ group = "Service Desk", assignee = "{TECH}" }}

[[rules]]
name = "care"
when.to = "care@example.com"
then = {{ group = "Service Desk" }}
"""


SLA = """
[[policies]]
name = "standard"
calendar = "24x7"
first_response = "4h"
resolution = "8h"

[timers]
unanswered_reminder_hours = 2
auto_close_resolved_days = 5
waiting_customer_reminder_days = 2
waiting_customer_close_days = 5
deferred_review_days = 14
digest_hour = false
"""


class Clock:
    """The scheduler's `now`: starts at the real time (when the Runner stamps tickets) and moves
    only when a test says so."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


@dataclass
class Desk:
    config: Config
    db: Database
    runner: Runner
    clock: Clock
    scheduler: Scheduler

    def mail(self, subject: str, to: str = "support@example.com", sender: str = CUSTOMER) -> Ticket:
        raw = make_mail(subject, sender=sender, to=to)
        Acceptor(self.db, self.config).accept(raw, Envelope(sender, (to,), "pipe"))
        self.runner.run_until_idle()
        return self.tickets()[-1]

    def deliver(self, raw: bytes, sender: str) -> None:
        msg = message_from_bytes(raw, policy=policy.default)
        rcpts = tuple(a for _, a in getaddresses([str(msg["To"])]))
        Acceptor(self.db, self.config).accept(raw, Envelope(sender, rcpts, "pipe"))
        self.runner.run_until_idle()

    def tickets(self) -> list[Ticket]:
        with self.db.session() as s:
            return list(s.execute(select(Ticket).order_by(Ticket.id)).scalars())

    def ticket(self, key: str) -> Ticket:
        with self.db.session() as s:
            t = Repo(s).ticket_by_key(key)
            assert t is not None
            return t

    def set_status(self, key: str, status: str) -> datetime:
        """An agent moves the ticket at the clock's time (what `#status …` by mail does)."""
        at = self.clock()
        with self.db.session() as s:
            repo = Repo(s)
            t = repo.ticket_by_key(key)
            assert t is not None
            desk = self.config.desk_by_key(t.desk)
            assert desk is not None
            wf = self.runner.rules.current.workflow(desk)
            change_status(repo, t, wf, wf.status(status), TECH, "test")
            # change_status stamps the wall clock; this test lives on the injected clock.
            ev = (
                s.execute(
                    select(Event)
                    .where(Event.ticket_id == t.id, Event.kind == "status")
                    .order_by(Event.id.desc())  # type: ignore[attr-defined]
                )
                .scalars()
                .first()
            )
            assert ev is not None
            ev.created_at = at
        return at

    def sent(self, kind: str | None = None) -> list[tuple[str, str, str]]:
        """(kind, recipient, ticket key) of every queued mail, oldest first."""
        with self.db.session() as s:
            keys = dict(s.execute(select(Ticket.id, Ticket.key)).all())  # type: ignore[call-overload]
            rows = s.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars()  # type: ignore[arg-type]
            return [
                (o.kind, o.recipients[0], keys.get(o.ticket_id, ""))
                for o in rows
                if kind is None or o.kind == kind
            ]

    def mails(self, kind: str) -> list[EmailMessage]:
        with self.db.session() as s:
            rows = s.execute(
                select(OutboxItem).where(OutboxItem.kind == kind).order_by(OutboxItem.id)
            ).scalars()  # type: ignore[arg-type]
            return [message_from_bytes(o.raw, policy=policy.default) for o in rows]  # type: ignore[misc]

    def run(self, *jobs: str) -> int:
        """Run jobs for every desk once; the number of actions carried out."""
        return sum(r.actions for r in self.scheduler.run_all(jobs or JOBS))


def make_desk(root: Path, *, sla: str = SLA, database_url: str | None = None, team: str = TEAM) -> Desk:
    path = write_config(root)
    text = path.read_text()
    head, _, tail = text.partition("[[desks]]")
    tail = tail.split("\n\n", 1)[1]
    desks = (
        '[[desks]]\naddress = "support@example.com"\nkey = "SUP"\nname = "Support"\nworkflow = "jira"\n\n'
        '[[desks]]\naddress = "care@example.com"\nkey = "CARE"\nname = "Care"\nworkflow = "caredesk"\n\n'
    )
    path.write_text(head + desks + tail)
    (root / "rules" / "team.toml").write_text(team)
    (root / "rules" / "routing.toml").write_text(ROUTING)
    (root / "rules" / "sla.toml").write_text(sla)
    env = {"MAILGATE_SECRET": "test-secret"}
    if database_url:
        env["MAILGATE_DATABASE_URL"] = database_url
    config = load_config(path, env=env)
    db = Database(config.database_url)
    runner = Runner(db, config)
    clock = Clock()
    return Desk(config, db, runner, clock, Scheduler(runner, clock=clock))
