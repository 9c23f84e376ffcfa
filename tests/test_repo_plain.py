"""The pipeline's plain SQL path on SQLite (store/repo.py `Plain`, `write_kept`) stores exactly what
SQLAlchemy stores: the same text for a time, the same JSON (a None too), the same booleans and
bytes, so every other reader (the ORM, reports, `tickets show`) reads the rows the pipeline wrote
as it reads any others. And what the pipeline's Repo keeps until the end of a message is seen by
the Repo's own reads before that."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from mailgate.store.db import Database, insert_for
from mailgate.store.kinds import EventKind, Role
from mailgate.store.models import Event, OutboxItem, Participant
from mailgate.store.repo import _INSERT_EVENT, _INSERT_OUTBOX, Repo, write_kept

WHEN = datetime(2026, 12, 7, 17, 5, 9, 123456, tzinfo=UTC)
MAIL: dict[str, Any] = {
    "ticket_id": None,
    "desk": "SUP",
    "kind": "acknowledgement",
    "mail_from": "support@x.example",
    "recipients": ["Ann <ann@x.example>", "bob@x.example"],
    "raw": b"Subject: \xe4\r\n\r\nbody\x00",
    "state": "pending",
    "attempts": 0,
    "next_attempt_at": WHEN,
    "created_at": WHEN,
    "claimed_by": None,
    "claimed_at": None,
    "last_error": None,
    "sent_at": None,
}


def _stored(db: Database, sql: str) -> list[tuple[Any, ...]]:
    with db.reading() as s:
        return [tuple(r) for r in s.execute(text(sql))]


def test_plain_writes_store_what_sqlalchemy_stores(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/desk.db")
    event = {"ticket_id": 7, "kind": EventKind.CREATED, "actor": "a@x.example", "created_at": WHEN}
    people = insert_for("sqlite")(Participant.__table__).on_conflict_do_nothing()  # type: ignore[attr-defined]
    person = {
        "ticket_id": 7,
        "address": "ann@x.example",
        "role": Role.WATCHER,
        "name": "Ann",
        "notify": False,
    }
    with db.session() as s:
        conn = s.connection()  # through SQLAlchemy
        conn.execute(_INSERT_EVENT, {**event, "data": {"status": "open", "ü": [1, None]}})
        conn.execute(_INSERT_EVENT, {**event, "data": None})
        conn.execute(_INSERT_OUTBOX, {**MAIL, "message_id": "a@x"})
        conn.execute(people, person)
    with db.session() as s:  # as plain SQL
        write_kept(s, _INSERT_EVENT, {**event, "data": {"status": "open", "ü": [1, None]}})
        write_kept(s, _INSERT_EVENT, {**event, "data": None})
        write_kept(s, _INSERT_OUTBOX, {**MAIL, "message_id": "b@x"})
        write_kept(s, people, {**person, "address": "bob@x.example"})
    events = _stored(
        db, "SELECT ticket_id, actor, kind, data, created_at, typeof(data) FROM event ORDER BY id"
    )
    assert len(events) == 4 and events[:2] == events[2:]
    mails = _stored(
        db,
        "SELECT recipients, raw, next_attempt_at, created_at, claimed_at, typeof(claimed_at) "
        "FROM outboxitem ORDER BY id",
    )
    assert len(mails) == 2 and mails[0] == mails[1]
    assert (
        _stored(db, "SELECT notify, typeof(notify), role FROM participant") == [(0, "integer", "watcher")] * 2
    )
    with db.reading() as s:  # and the ORM reads them back as it reads its own rows
        read = s.execute(select(Event).order_by(Event.id)).scalars().all()  # type: ignore[arg-type]
        assert [(e.data, e.created_at.replace(tzinfo=UTC)) for e in read][2:] == [
            ({"status": "open", "ü": [1, None]}, WHEN),
            (None, WHEN),
        ]
        out = s.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars().all()  # type: ignore[arg-type]
        assert [(o.recipients, o.raw, o.next_attempt_at.replace(tzinfo=UTC)) for o in out] == [
            (MAIL["recipients"], MAIL["raw"], WHEN)
        ] * 2


def test_an_update_of_a_ticket_through_plain_sql_reads_back_as_aware_time(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/desk.db")
    with db.session() as s:
        repo = Repo(s, buffered=True)
        number = repo.next_ticket_number("SUP")
        ticket = repo.create_ticket(
            key=f"SUP-{number}", desk="SUP", number=number, subject="printer", requester="ann@x.example",
            requester_name="Ann", status="open", status_category="open", priority=None, type=None,
            category=None, group=None, assignee=None, tags=[], fields={}, created_at=WHEN, updated_at=WHEN,
        )  # fmt: skip
        repo.set_ticket(ticket, first_response_due=WHEN + timedelta(hours=4), resolution_due=None)
        assert ticket.first_response_due is not None  # expired, read back from the row
        assert ticket.first_response_due.replace(tzinfo=UTC) == WHEN + timedelta(hours=4)
        assert [number, repo.next_ticket_number("SUP")] == [1, 2]
    assert _stored(db, "SELECT first_response_due, resolution_due FROM ticket") == [
        ("2026-12-07 21:05:09.123456", None)
    ]


def test_what_the_pipelines_repo_keeps_is_seen_by_its_own_reads(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/desk.db")
    with db.session() as s:
        repo = Repo(s, buffered=True)
        repo.event(7, EventKind.STATUS, actor="a@x.example", new="waiting")
        repo.add_message(ticket_id=7, direction="in", kind="public", author="ann@x.example",
                         message_id="m1@x", subject="printer", text="it jams", reply_text="it jams",
                         attachments=[])  # fmt: skip
        # nothing written yet: one executemany per table at the end of the message
        assert _stored_in(s, "SELECT count(*) FROM event") == 0
        assert [d["new"] for d in repo.recent_events(7, EventKind.STATUS, WHEN - timedelta(days=3650))] == [
            "waiting"
        ]
        assert repo.ticket_of_message("SUP", "m1@x", "ann@x.example") is None  # no ticket 7: but it was read
        assert _stored_in(s, "SELECT count(*) FROM message") == 1


def _stored_in(session: Any, sql: str) -> int:
    return int(session.connection().exec_driver_sql(sql).scalar_one())
