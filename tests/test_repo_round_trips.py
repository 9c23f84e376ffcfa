"""The Repo's one-statement paths on PostgreSQL answer what the two-statement paths answer on
SQLite (store/repo.py `open_ticket`, `mail_checks`, the people a Repo knows), and the kept
writes sent on psycopg's own cursor (store/deferred.py `Named`) store what SQLAlchemy stores.
Each test runs on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pg import database_on
from sqlalchemy import select, text

from mailgate.store import deferred
from mailgate.store.db import Database
from mailgate.store.kinds import EventKind, Role
from mailgate.store.models import Event, OutboxItem, Participant, Ticket
from mailgate.store.repo import _INSERT_EVENT, _INSERT_OUTBOX, Repo

WHEN = datetime(2026, 12, 7, 17, 5, 9, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_on(request.param, tmp_path) as database:
        yield database


def _values(subject: str) -> dict[str, Any]:
    return {
        "subject": subject, "requester": "ann@x.example", "requester_name": "Ann", "status": "open",
        "status_category": "open", "priority": None, "type": None, "category": None, "group": "it",
        "assignee": None, "tags": ["a"], "fields": {"k": 1}, "created_at": WHEN, "updated_at": WHEN,
    }  # fmt: skip


def test_open_ticket_numbers_each_desk_from_one_and_keys_it(db: Database) -> None:
    with db.session() as s:
        repo = Repo(s)  # (the pipeline's Repo on SQLite keeps the references, and does not ask)
        first = repo.open_ticket("SUP", "<m1@x>", **_values("printer"))  # no counter row yet
        second = repo.open_ticket("SUP", "<m1@x>", **_values("scanner"))  # the desk has it already
        other = repo.open_ticket("OPS", "<m1@x>", **_values("disk"))  # another desk's
        third = repo.open_ticket("SUP", None, **_values("fax"))
        assert [(t.key, t.number, t.desk) for t in (first, second, other, third)] == [
            ("SUP-1", 1, "SUP"), ("SUP-2", 2, "SUP"), ("OPS-1", 1, "OPS"), ("SUP-3", 3, "SUP"),
        ]  # fmt: skip
        threads = [repo.thread_ids(t.id, "ann@x.example") for t in (first, second, other, third)]  # type: ignore[arg-type]
        assert threads == [["<m1@x>"], [], ["<m1@x>"], []]
        assert first in s and first.id is not None  # the session's own object, as a load makes it
        assert repo.ticket_by_key("sup-2") is second
        assert (second.tags, second.fields, second.group) == (["a"], {"k": 1}, "it")
    with db.reading() as s:
        stored = s.execute(select(Ticket).order_by(Ticket.id)).scalars().all()  # type: ignore[arg-type]
        assert [(t.key, t.subject, t.created_at.replace(tzinfo=UTC)) for t in stored] == [
            ("SUP-1", "printer", WHEN), ("SUP-2", "scanner", WHEN), ("OPS-1", "disk", WHEN),
            ("SUP-3", "fax", WHEN),
        ]  # fmt: skip
        refs = s.execute(text("SELECT desk, message_id, ticket_id FROM threadref ORDER BY id")).all()
        assert [tuple(r) for r in refs] == [("SUP", "<m1@x>", first.id), ("OPS", "<m1@x>", other.id)]


def test_the_people_a_repo_knows_are_the_people_stored(db: Database) -> None:
    with db.session() as s:
        repo = Repo(s, buffered=True)
        ticket = repo.open_ticket("SUP", "<p1@x>", **_values("printer"))
        assert ticket.id is not None
        assert repo.participants(ticket.id) == []  # made here: nobody yet, and not asked
        assert repo.add_participant(ticket.id, "Ann@X.example", Role.REQUESTER, "Ann")
        assert not repo.add_participant(ticket.id, "ann@x.example", Role.WATCHER)  # one row an address
        assert repo.add_participant(ticket.id, "bob@x.example", Role.WATCHER)
        known = repo.participants(ticket.id)
        assert [(p.address, p.role, p.name, p.notify) for p in known] == [
            ("ann@x.example", "requester", "Ann", True),
            ("bob@x.example", "watcher", "", True),
        ]
        tid = ticket.id
    with db.session() as s:
        repo = Repo(s, buffered=True)  # a later message's Repo reads them, once, and keeps them
        assert repo.participants(tid) == known
        assert not repo.add_participant(tid, "BOB@x.example", Role.AGENT)
        assert repo.add_participant(tid, "cy@x.example", Role.AGENT)
        assert repo.remove_participant(tid, "bob@x.example", Role.WATCHER)  # forgets, reads again
        assert [p.address for p in repo.participants(tid)] == ["ann@x.example", "cy@x.example"]
        repo.mute(tid, ["ann@x.example"])
        assert [(p.address, p.notify) for p in repo.participants(tid)] == [
            ("ann@x.example", False), ("cy@x.example", True),
        ]  # fmt: skip
    with db.reading() as s:
        rows = s.execute(select(Participant.address, Participant.role).order_by(Participant.id)).all()  # type: ignore[call-overload]
        assert [tuple(r) for r in rows] == [("ann@x.example", "requester"), ("cy@x.example", "agent")]


def test_mail_checks_answer_what_bounced_and_automatic_mails_answer(db: Database) -> None:
    now = datetime.now(UTC)
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)
    with db.session() as s:
        repo = Repo(s)
        repo.record_bounce("dead@x.example", until=now + timedelta(days=3), status="5.1.1",
                           diagnostic="no such user", ticket_id=None)  # fmt: skip
        repo.record_bounce("was@x.example", until=now - timedelta(days=1), status="5.1.1",
                           diagnostic="no such user", ticket_id=None)  # fmt: skip
        for recipient, ticket_id in [("ann@x.example", 7), ("ann@x.example", 7), ("ann@x.example", 8)]:
            repo.log_send(recipient, ticket_id)
    with db.session() as s:
        repo = Repo(s)
        for address in ("dead@x.example", "was@x.example", "ann@x.example", "new@x.example"):
            bounced, counts = repo.mail_checks(address, 7, now, day, hour)
            alone = repo.bounced(address, now)
            assert bounced == alone
            if bounced is None:
                assert counts == repo.automatic_mails(address, 7, day, hour)
        dead, _ = repo.mail_checks("Dead@x.example", 7, now, day, hour)
        assert dead is not None and (dead.status, dead.diagnostic) == ("5.1.1", "no such user")
        assert repo.mail_checks("ann@x.example", 7, now, day, hour) == (None, (3, 2))


def test_kept_writes_store_what_sqlalchemy_stores(db: Database) -> None:
    event = {"ticket_id": 7, "kind": EventKind.CREATED, "actor": "a@x.example", "created_at": WHEN}
    mail = {
        "ticket_id": None, "desk": "SUP", "kind": "acknowledgement", "mail_from": "support@x.example",
        "recipients": ["Ann <ann@x.example>", "bob@x.example"], "raw": b"Subject: \xe4\r\n\r\nbody\x00",
        "state": "pending", "attempts": 0, "next_attempt_at": WHEN, "created_at": WHEN, "claimed_by": None,
        "claimed_at": None, "last_error": None, "sent_at": None,
    }  # fmt: skip
    with db.session() as s:  # through SQLAlchemy
        conn = s.connection()
        conn.execute(_INSERT_EVENT, {**event, "data": {"status": "open", "ü": [1, None]}})
        conn.execute(_INSERT_EVENT, {**event, "data": None})
        conn.execute(_INSERT_OUTBOX, {**mail, "message_id": "a@x"})
    with db.session() as s:  # kept (PostgreSQL: psycopg's cursor at the commit; SQLite: at once)
        deferred.defer(s, _INSERT_EVENT, {**event, "data": {"status": "open", "ü": [1, None]}})
        deferred.defer(s, _INSERT_EVENT, {**event, "data": None})
        deferred.defer(s, _INSERT_OUTBOX, {**mail, "message_id": "b@x"})
    with db.reading() as s:
        cast = "" if db.is_sqlite else "::text"
        events = [tuple(r) for r in s.execute(text(f"SELECT data{cast}, created_at FROM event ORDER BY id"))]
        assert len(events) == 4 and events[:2] == events[2:]
        read = s.execute(select(Event).order_by(Event.id)).scalars().all()  # type: ignore[arg-type]
        assert [e.data for e in read] == [{"status": "open", "ü": [1, None]}, None] * 2
        out = s.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars().all()  # type: ignore[arg-type]
        assert [(o.recipients, o.raw, o.next_attempt_at.replace(tzinfo=UTC)) for o in out] == [
            (mail["recipients"], mail["raw"], WHEN)
        ] * 2
