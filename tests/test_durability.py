"""What the intake acknowledges is on disk; the pipeline's own commits may skip the wait.

`Database.session(durable=False)` commits with synchronous=NORMAL (PostgreSQL: synchronous_commit
off) for pipeline work that can be redone from the inbox; every other session — the intake's
before its 250, the sender's claim before it hands mail to the relay — must wait for the disk
(synchronous=FULL; synchronous_commit on). Connections are pooled, so the one thing that must
never happen is a pipeline session leaving its connection undurable for the next intake commit,
even when it fails half-way. And the guarantee rests on the log being flushed in order: the
intake's or the sender's durable commit puts every pipeline commit before it on disk too."""

from __future__ import annotations

import threading
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pg import pg_url  # noqa: F401  (fixture)
from sqlalchemy import select, text

from mailgate.store.db import Database
from mailgate.store.models import SendLog

_DBS: dict[str, Any] = {}  # one database for all the examples of a property test
_INSERT_SENT = SendLog.__table__.insert()  # type: ignore[attr-defined]

FULL, NORMAL = 2, 1


def _level(session) -> int:  # type: ignore[no-untyped-def]
    return int(session.execute(text("PRAGMA synchronous")).scalar_one())


def test_a_pipeline_session_never_leaves_a_pooled_connection_undurable(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'state' / 'mailgate.db'}")
    try:
        with db.session() as s:
            s.execute(text("CREATE TABLE note (x INTEGER)"))
        for i in range(20):
            with db.session(durable=False) as s:
                assert _level(s) == NORMAL
                s.execute(text("INSERT INTO note VALUES (:x)"), {"x": i})
            with pytest.raises(RuntimeError), db.session(durable=False) as s:
                s.execute(text("INSERT INTO note VALUES (-1)"))
                raise RuntimeError("a message that crashed the pipeline")

        seen: list[int] = []

        def intake() -> None:  # other threads take other pooled connections
            for _ in range(10):
                with db.session() as s:
                    seen.append(_level(s))

        threads = [threading.Thread(target=intake) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(seen) == {FULL}
        with db.session() as s:
            rows = [r[0] for r in s.execute(text("SELECT x FROM note ORDER BY x"))]
        assert rows == list(range(20))  # committed and visible; the failed ones rolled back
    finally:
        db.dispose()


@pytest.mark.postgres
def test_postgres_pipeline_commits_skip_the_wait_and_the_next_durable_commit_flushes_them(
    pg_url: str,  # noqa: F811
) -> None:
    db = Database(pg_url)

    def setting(s) -> str:  # type: ignore[no-untyped-def]
        return str(s.execute(text("SHOW synchronous_commit")).scalar_one())

    try:
        with db.session() as s:
            s.execute(text("CREATE TABLE note (x INTEGER)"))
        flushed_after: list[tuple[str, str]] = []
        for i in range(20):
            with db.session(durable=False) as s:
                s.execute(text("INSERT INTO note VALUES (:x)"), {"x": i})
                assert setting(s) == "off"
            with db.session() as s:  # where the pipeline's commit went in the log
                pipeline_end = str(s.execute(text("SELECT pg_current_wal_insert_lsn()")).scalar_one())
            with pytest.raises(RuntimeError), db.session(durable=False) as s:
                s.execute(text("INSERT INTO note VALUES (-1)"))
                raise RuntimeError("a message that crashed the pipeline")
            with db.session() as s:  # the intake's commit before its 250
                assert setting(s) == "on"
                s.execute(text("INSERT INTO note VALUES (1000)"))
            with db.session() as s:
                flushed = str(s.execute(text("SELECT pg_current_wal_flush_lsn()")).scalar_one())
                flushed_after.append((pipeline_end, flushed))

        seen: list[str] = []

        def intake() -> None:  # other threads take other pooled connections
            for _ in range(10):
                with db.session() as s:
                    seen.append(setting(s))

        threads = [threading.Thread(target=intake) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(seen) == {"on"}
        with db.session() as s:
            for pipeline_end, flushed in flushed_after:
                assert s.execute(
                    text("SELECT CAST(:f AS pg_lsn) >= CAST(:p AS pg_lsn)"), {"f": flushed, "p": pipeline_end}
                ).scalar_one()
            rows = [r[0] for r in s.execute(text("SELECT x FROM note WHERE x < 1000 ORDER BY x"))]
        assert rows == list(range(20))  # committed and visible; the failed ones rolled back
    finally:
        db.dispose()


@settings(max_examples=100, deadline=None)
@given(when=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), None])))
def test_times_written_by_core_read_back_as_the_orm_reads_them(tmp_path_factory, when) -> None:  # type: ignore[no-untyped-def]
    """The pipeline writes its rows with prebuilt Core statements and the ORM reads some of them
    back: a time must come back the same either way, to the microsecond (SLA due times,
    loop-limit windows and the audit trail depend on it)."""
    db = _DBS.get("db")
    if db is None:
        db = _DBS["db"] = Database(f"sqlite:///{tmp_path_factory.mktemp('times') / 'm.db'}")
    table = SendLog.__table__  # type: ignore[attr-defined]
    with db.session(durable=False) as s:
        s.execute(table.delete())
        s.connection().execute(table.insert(), {"recipient": "a@b", "ticket_id": None, "created_at": when})
        s.add(SendLog(recipient="c@d", created_at=when))
        s.flush()
        stmt = select(table.c.created_at).order_by(table.c.id)
        core = list(s.connection().execute(stmt).scalars())
        orm = list(s.execute(select(SendLog.created_at).order_by(SendLog.id)).scalars())  # type: ignore[arg-type]
    assert core == orm == [when.replace(tzinfo=None)] * 2
