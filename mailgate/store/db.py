"""Opening the database: engine, durability settings, schema migration.

SQLite runs in WAL mode with synchronous=FULL, so a commit that returned is on disk even after a
power cut: intakes acknowledge mail only after such a commit. PostgreSQL is durable by default.
The schema is always brought to the latest Alembic revision at open, never `create_all`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")


class Database:
    """One engine and a way to get sessions. Construct once per process and pass it in."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._gate: AbstractContextManager[object] = threading.RLock() if self.is_sqlite else nullcontext()
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=8, max_overflow=8
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        else:
            if url.startswith("postgresql://"):
                url = "postgresql+psycopg://" + url[len("postgresql://") :]
                self.url = url
            self.engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
        if upgrade:
            self.upgrade()

    def upgrade(self) -> None:
        from mailgate.store.migrate import upgrade_to_head

        upgrade_to_head(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        On SQLite every transaction takes the write lock (BEGIN IMMEDIATE); threads of this
        process queue for it on an in-process lock first, so the SMTP intake waits for one short
        pipeline transaction, not for SQLite's sleeping busy handler (which backs off in steps of
        many milliseconds and lets a busy writer starve the others)."""
        with self._gate, Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # Python's sqlite3 opens transactions lazily; take control so BEGIN IMMEDIATE is ours.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def _sqlite_begin_immediate(conn) -> None:  # type: ignore[no-untyped-def]
    # Take the write lock at BEGIN: two writers never deadlock on a read-to-write upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")
