"""Upgrading a database made by the first schema loses nothing, on SQLite and on PostgreSQL.

A database is built at revision 0001 with Alembic, filled with plain SQL written for THAT schema
(not through today's models, which may have more columns), then opened with `Database(url)` —
what `mailgate run` and `mailgate db upgrade` do — and read back through today's models.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from pg import fresh_database
from sqlalchemy import create_engine, inspect, select, text

T0 = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def old_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state' / 'mailgate.db'}"
        return
    with fresh_database() as url:
        yield url


def _fill_0001(url: str) -> None:
    from mailgate.store.migrate import current_revision, upgrade_to_head

    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    upgrade_to_head(engine, revision="0001")
    assert current_revision(engine) == "0001"
    js = json.dumps
    with engine.begin() as c:
        c.execute(text("INSERT INTO counter (desk, next_number) VALUES ('SUP', 3)"))
        for n, (subject, requester, status) in enumerate(
            [("printer on fire", "a@acme.com", "open"), ("VPN down", "b@acme.com", "resolved")], start=1
        ):
            c.execute(
                text(
                    "INSERT INTO ticket (id, key, desk, number, subject, requester, requester_name, status,"
                    " status_category, tags, fields, created_at, updated_at, rating)"
                    " VALUES (:id, :key, 'SUP', :n, :subject, :req, '', :status, :cat, :tags, :fields,"
                    " :t, :t, :rating)"
                ),
                {
                    "id": n,
                    "key": f"SUP-{n}",
                    "n": n,
                    "subject": subject,
                    "req": requester,
                    "status": status,
                    "cat": "closed" if status == "resolved" else "open",
                    "tags": js(["vip"] if n == 1 else []),
                    "fields": js({"plan": "enterprise"} if n == 1 else {}),
                    "t": T0,
                    "rating": 5 if n == 2 else None,
                },
            )
            c.execute(
                text(
                    "INSERT INTO inboxitem (id, desk, message_id, source, mail_from, rcpt_tos, raw, size, state,"
                    " disposition, attempts, trace, ticket_id, received_at)"
                    " VALUES (:id, 'SUP', :mid, 'smtp', :req, :rcpt, :raw, :size, 'done', 'ticket-created',"
                    " 1, '[]', :id, :t)"
                ),
                {
                    "id": n,
                    "mid": f"m{n}@acme.com",
                    "req": requester,
                    "rcpt": js(["support@localhost"]),
                    "raw": f"Subject: {subject}\r\n\r\nhelp\r\n".encode(),
                    "size": 30,
                    "t": T0,
                },
            )
            c.execute(
                text(
                    "INSERT INTO message (ticket_id, direction, kind, author, message_id, inbox_id, subject,"
                    " text, reply_text, attachments, created_at)"
                    " VALUES (:id, 'in', 'public', :req, :mid, :id, :subject, 'help', 'help', '[]', :t)"
                ),
                {"id": n, "req": requester, "mid": f"m{n}@acme.com", "subject": subject, "t": T0},
            )
            c.execute(
                text("INSERT INTO threadref (desk, message_id, ticket_id) VALUES ('SUP', :mid, :id)"),
                {"mid": f"m{n}@acme.com", "id": n},
            )
            c.execute(
                text(
                    "INSERT INTO participant (ticket_id, address, name, role, notify)"
                    " VALUES (:id, :req, '', 'requester', :yes)"
                ),
                {"id": n, "req": requester, "yes": True},
            )
        c.execute(
            text(
                "INSERT INTO outboxitem (ticket_id, desk, kind, message_id, mail_from, recipients, raw, state,"
                " attempts, next_attempt_at, created_at) VALUES (1, 'SUP', 'acknowledgement', 'ack1@localhost',"
                " 'support@localhost', :r, :raw, 'pending', 0, :t, :t)"
            ),
            {"r": js(["a@acme.com"]), "raw": b"Subject: [SUP-1] printer on fire\r\n\r\nok\r\n", "t": T0},
        )
        if c.dialect.name == "postgresql":  # explicit ids: move the sequences past them, as a dump would
            for table in ("ticket", "inboxitem"):
                c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), 2)"))
    engine.dispose()


@pytest.mark.postgres
def test_upgrade_from_the_first_schema_keeps_every_ticket_and_message(old_db: str, tmp_path: Path) -> None:
    from mailgate.config import load_config
    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.pipeline.runner import Runner
    from mailgate.store.db import Database
    from mailgate.store.migrate import current_revision, head_revision
    from mailgate.store.models import (
        InboxItem,
        InboxRaw,
        Message,
        OutboxItem,
        Participant,
        ThreadRef,
        Ticket,
        utc,
    )

    _fill_0001(old_db)
    # `mailgate db upgrade`, the operator's command, as a subprocess against this database.
    cfg = write_config(tmp_path / "desk")
    env = {"MAILGATE_DATABASE_URL": old_db, "MAILGATE_SECRET": "s", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "mailgate", "--config", str(cfg), "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    db = Database(old_db)
    assert current_revision(db.engine) == head_revision() != "0001"
    with db.session() as s:
        tickets = s.execute(select(Ticket).order_by(Ticket.id)).scalars().all()
        assert [(t.key, t.subject, t.requester, t.status, t.rating) for t in tickets] == [
            ("SUP-1", "printer on fire", "a@acme.com", "open", None),
            ("SUP-2", "VPN down", "b@acme.com", "resolved", 5),
        ]
        assert tickets[0].tags == ["vip"] and tickets[0].fields == {"plan": "enterprise"}
        assert utc(tickets[0].created_at) == T0
        assert [m.subject for m in s.execute(select(Message).order_by(Message.id)).scalars()] == [
            "printer on fire",
            "VPN down",
        ]
        assert len(s.execute(select(ThreadRef)).scalars().all()) == 2
        assert len(s.execute(select(Participant)).scalars().all()) == 2
        raws = list(s.execute(select(InboxRaw.raw).order_by(InboxRaw.id)).scalars())
        assert raws[0].startswith(b"Subject: printer on fire") and len(raws) == 2
        [ack] = s.execute(select(OutboxItem)).scalars().all()
        assert (ack.state, ack.recipients) == ("pending", ["a@acme.com"])
        # 0011 indexed the messages already stored: the old tickets are found by their words
        from mailgate.store.search import search

        assert [h.key for h in search(s, "printer fire")] == ["SUP-1"]
        assert [h.key for h in search(s, "vpn")] == ["SUP-2"]

    # And the upgraded database keeps working: a reply threads onto the old ticket by In-Reply-To,
    # a new mail gets the next number from the old counter.
    config = load_config(cfg, env={"MAILGATE_DATABASE_URL": old_db, "MAILGATE_SECRET": "s"})
    reply = b"From: a@acme.com\r\nTo: support@localhost\r\nSubject: still\r\nMessage-ID: <r1@acme.com>\r\n"
    reply += b"In-Reply-To: <m1@acme.com>\r\n\r\nstill burning\r\n"
    fresh = b"From: c@acme.com\r\nTo: support@localhost\r\nSubject: new one\r\nMessage-ID: <n1@acme.com>\r\n\r\nhi\r\n"
    Acceptor(db, config).accept_many([(reply, Envelope()), (fresh, Envelope())])
    Runner(db, config).run_until_idle()
    with db.session() as s:
        rows = s.execute(select(InboxItem).order_by(InboxItem.id)).scalars().all()
        keys = {t.id: t.key for t in s.execute(select(Ticket)).scalars()}
    assert [(r.disposition, keys.get(r.ticket_id)) for r in rows[2:]] == [
        ("reply", "SUP-1"),
        ("ticket-created", "SUP-3"),
    ]
    db.dispose()


def test_the_head_written_in_code_is_alembics_head() -> None:
    """`Database()` skips Alembic when the stored revision equals migrate.HEAD: keep them equal."""
    from mailgate.store.migrate import HEAD, head_revision

    assert head_revision() == HEAD


def _schema(engine: Any) -> dict[str, Any]:
    insp = inspect(engine)
    return {
        t: {
            # By name: migrations append columns, the models list them where they belong, and
            # mailgate names every column it reads or writes.
            "columns": sorted(
                (c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in insp.get_columns(t)
            ),
            "primary key": insp.get_pk_constraint(t)["constrained_columns"],
            "foreign keys": sorted(
                (fk["constrained_columns"], fk["referred_table"], fk["referred_columns"])
                for fk in insp.get_foreign_keys(t)
            ),
            "indexes": sorted((i["name"], i["column_names"], i["unique"]) for i in insp.get_indexes(t)),
            "unique": sorted((u["name"], u["column_names"]) for u in insp.get_unique_constraints(t)),
        }
        for t in sorted(insp.get_table_names())
    }


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_new_database_gets_exactly_the_schema_the_migrations_give(backend: str, tmp_path: Path) -> None:
    """An empty database is made from the models in one transaction, not by running every
    migration (migrate._create_fresh): both ways must give the same tables, columns, keys and
    indexes, and Alembic must see nothing to change, or the next migration would meet two schemas."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    from mailgate.store.migrate import HEAD, _create_fresh, current_revision, upgrade_to_head
    from mailgate.store.search import is_search_object

    with ExitStack() as stack:
        if backend == "sqlite":
            urls = [f"sqlite:///{tmp_path / name}" for name in ("migrated.db", "fresh.db")]
        else:
            urls = [stack.enter_context(fresh_database()) for _ in range(2)]
        migrated, fresh = (create_engine(u.replace("postgresql://", "postgresql+psycopg://")) for u in urls)
        stack.callback(migrated.dispose)
        stack.callback(fresh.dispose)
        upgrade_to_head(migrated, revision=HEAD)  # a revision by name: Alembic runs every migration
        assert _create_fresh(fresh)
        assert not _create_fresh(fresh)  # not empty any more: touches nothing
        assert current_revision(fresh) == current_revision(migrated) == HEAD
        assert _schema(fresh) == _schema(migrated)
        with migrated.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    # the full-text index is plain DDL (store/search.py), as env.py tells Alembic
                    "include_name": lambda name, type_, _parent: not is_search_object(name, type_),
                },
            )
            assert compare_metadata(ctx, SQLModel.metadata) == []
