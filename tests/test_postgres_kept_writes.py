"""Writes sent late on PostgreSQL (store/deferred.py) fail where they belong.

On PostgreSQL the audit events, outgoing mail and send-log rows of a message are kept and sent
together with the message's next statement, so the server reports a failing one later than the
code asked for it. The message that made it must still be the one quarantined, its own writes
(ticket, number, acknowledgement) rolled back, and the messages of the same batch before and
after it ticketed as usual — exactly what SQLite, which writes at once, does with the same mail.

The failure comes from the database itself: a trigger refuses a write that carries the word
"BOOMWORD" (it lands in the acknowledgement and in the ticket through the subject).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import make_mail, write_config
from pg import backend, config_env  # noqa: F401  (fixtures)
from sqlalchemy import select, text

from mailgate.store.db import Database

# Two places of the refusal: the acknowledgement, kept mid-message (reads follow it), and the
# ticket's SLA times, the message's last write (only its SAVEPOINT's RELEASE follows it).
_REFUSED = {
    "mail": (
        "outboxitem",
        "INSERT",
        "instr(NEW.raw, 'BOOMWORD') > 0",
        "position('BOOMWORD'::bytea IN NEW.raw) > 0",
    ),
    "sla": ("ticket", "UPDATE", "NEW.subject LIKE '%BOOMWORD%'", "NEW.subject LIKE '%BOOMWORD%'"),
}


def _refuse(db: Database, where: str) -> list[str]:
    table, op, sqlite_when, pg_when = _REFUSED[where]
    if db.is_sqlite:
        return [
            f"CREATE TRIGGER refuse_boom BEFORE {op} ON {table} WHEN {sqlite_when} "
            "BEGIN SELECT RAISE(ABORT, 'refused by refuse_boom'); END"
        ]
    return [
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF {pg_when} THEN RAISE EXCEPTION 'refused by refuse_boom'; END IF; RETURN NEW; END $$",
        f"CREATE TRIGGER refuse_boom BEFORE {op} ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("where", sorted(_REFUSED))
def test_a_write_refused_late_fails_only_its_own_message(
    where: str,
    backend: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    from mailgate.config import load_config
    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.pipeline.runner import Runner
    from mailgate.store.models import Event, InboxItem, OutboxItem, Ticket

    config = load_config(write_config(tmp_path / "desk"), env=config_env(backend))
    db = Database(config.database_url)
    try:
        with db.session() as s:
            for sql in _refuse(db, where):
                s.execute(text(sql))
        mails = [
            make_mail("printer on fire", sender="ann@acme.com"),
            make_mail("BOOMWORD in the subject", sender="bob@acme.com"),
            make_mail("screen is blank", sender="cid@acme.com"),
        ]
        Acceptor(db, config).accept_many([(m, Envelope(source="mbox")) for m in mails])
        runner = Runner(db, config)
        assert runner.run_once() == 3  # one batch: the three go through one transaction
        runner.stop()
        with db.session() as s:
            rows = s.execute(select(InboxItem).order_by(InboxItem.id)).scalars().all()  # type: ignore[arg-type]
            assert [r.state for r in rows] == ["done", "failed", "done"]
            assert "refuse_boom" in (rows[1].reason or "")
            tickets = s.execute(select(Ticket.key, Ticket.subject).order_by(Ticket.id)).all()  # type: ignore[arg-type]
            # The refused message's ticket, and the number it took, were rolled back with it.
            assert [tuple(t) for t in tickets] == [("SUP-1", "printer on fire"), ("SUP-2", "screen is blank")]
            acked = s.execute(
                select(OutboxItem.recipients).where(OutboxItem.kind == "acknowledgement")
            ).scalars()
            assert sorted(r[0] for r in acked) == ["ann@acme.com", "cid@acme.com"]
            assert rows[0].ticket_id is not None and rows[2].ticket_id is not None
            ticket_ids = {int(t) for t in s.execute(select(Event.ticket_id)).scalars()}
            assert ticket_ids == {rows[0].ticket_id, rows[2].ticket_id}  # no audit rows of the refused one
    finally:
        db.dispose()


@pytest.mark.postgres
def test_a_message_stopped_before_its_first_statement_leaves_the_batch_whole(
    backend: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """A mail that screen stops before any statement (one copied to the no-reply system sender)
    is rolled back to a savepoint that was never sent; the batch goes on as on SQLite."""
    from mailgate.config import load_config
    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.pipeline.runner import Runner
    from mailgate.store.models import InboxItem, Ticket

    config = load_config(write_config(tmp_path / "desk"), env=config_env(backend))
    db = Database(config.database_url)
    try:
        mails = [
            make_mail("printer on fire", sender="ann@acme.com"),
            make_mail("answering a digest", sender="dan@acme.com", cc="mailgate-noreply@localhost"),
            make_mail("screen is blank", sender="cid@acme.com"),
        ]
        Acceptor(db, config).accept_many([(m, Envelope(source="mbox")) for m in mails])
        runner = Runner(db, config)
        assert runner.run_once() == 3
        runner.stop()
        with db.session() as s:
            rows = s.execute(select(InboxItem).order_by(InboxItem.id)).scalars().all()  # type: ignore[arg-type]
            assert [(r.state, r.disposition) for r in rows] == [
                ("done", "ticket-created"),
                ("done", "ignored:system-mail"),
                ("done", "ticket-created"),
            ]
            subjects = s.execute(select(Ticket.subject).order_by(Ticket.id)).scalars().all()  # type: ignore[arg-type]
            assert subjects == ["printer on fire", "screen is blank"]
    finally:
        db.dispose()


@pytest.mark.postgres
def test_rolling_back_to_a_savepoint_never_sent(
    backend: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """On PostgreSQL a SAVEPOINT waits to go with the next statement; rolled back to before
    any, it is dropped with what was kept after it, and the writes kept before it still commit."""
    from mailgate.config import load_config
    from mailgate.store.kinds import EventKind
    from mailgate.store.models import Event
    from mailgate.store.repo import Repo

    config = load_config(write_config(tmp_path / "desk"), env=config_env(backend))
    db = Database(config.database_url)
    try:
        with db.session() as s:
            repo = Repo(s)
            repo.event(1, EventKind.COMMENT, n=1)  # kept (PostgreSQL)
            conn = s.connection()
            inner = conn.begin_nested()  # SAVEPOINT: kept behind the event
            repo.event(1, EventKind.COMMENT, n=2)  # kept after the SAVEPOINT
            inner.rollback()  # drops n=2 and the SAVEPOINT; sends nothing
            repo.event(1, EventKind.COMMENT, n=3)
        with db.session() as s:
            kept = [e["n"] for e in s.execute(select(Event.data).order_by(Event.id)).scalars()]  # type: ignore[arg-type]
        assert kept == [1, 3]
    finally:
        db.dispose()
