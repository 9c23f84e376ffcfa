"""Opening the database: engine, durability settings, schema migration.

SQLite runs in WAL mode with synchronous=FULL, so a commit that returned is on disk even after a
power cut: intakes acknowledge mail only after such a commit. PostgreSQL is durable by default.
Both let the pipeline's own transactions commit without waiting for the disk (`Database.session`).
SQLite copies the WAL back into the database file itself (its automatic checkpoint).
The schema is always brought to the latest Alembic revision at open; an empty database is made at
that revision in one go (store.migrate._create_fresh).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

MIGRATIONS = Path(__file__).with_name("migrations")
# PostgreSQL's commit of a `durable=False` session: see `Database.session`.
_NOT_WAITING_FOR_DISK = text("SET LOCAL synchronous_commit = off")


@cache
def insert_for(dialect: str) -> Callable[..., Any]:
    """The dialect's INSERT (the one with ON CONFLICT), imported when first asked for: the
    PostgreSQL dialect costs 30-60 ms to import, and a SQLite daemon or MTA pipe never needs it."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


class Database:
    """One engine and a way to get sessions. Construct once per process and pass it in."""

    def __init__(self, url: str, *, upgrade: bool = True) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._gate: AbstractContextManager[object] = nullcontext()
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            on_disk = bool(path) and path != ":memory:"
            if on_disk:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._gate = WriteGate(f"{path}-writer.lock" if on_disk else None)
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
            from mailgate.store import deferred

            deferred.install(self.engine)  # writes nobody reads the answer of go out together
        if upgrade:
            self.upgrade()

    def upgrade(self, on_step: Callable[[str], None] | None = None) -> None:
        from mailgate.store.migrate import upgrade_to_head

        upgrade_to_head(self.engine, on_step=on_step)

    @contextmanager
    def session(self, *, durable: bool = True) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on error.

        On SQLite every transaction takes the write lock (BEGIN IMMEDIATE); writers queue for it
        on the `WriteGate` first, so the SMTP intake waits for one short pipeline transaction,
        not for SQLite's sleeping busy handler (which backs off in steps of many milliseconds and
        lets a busy writer starve the others).

        `durable=False` commits without waiting for the disk: on SQLite synchronous=NORMAL, on
        PostgreSQL `SET LOCAL synchronous_commit = off` (this transaction only). The commit
        survives a crash of the mailgate process, and reaches the disk with the next durable
        commit of any connection, since the WAL is written and flushed in order; a power cut
        (or, on PostgreSQL, a crash of the server) may lose it, and only it with what came
        after it, never a part of it. It is for work that can be done again from durable rows —
        the pipeline's, redone from the inbox — and only when every outside effect of it waits
        for a durable commit first: the 250 (intake), the sender's claim before it hands mail
        to the relay. A crash then loses no accepted mail and sends nothing twice; the last
        pipeline work is redone."""
        with self._gate:
            if durable or not self.is_sqlite:
                with Session(self.engine, expire_on_commit=False) as session, session.begin():
                    if not durable:
                        from mailgate.store import deferred

                        # sent with the transaction's first statement: no round trip of its own
                        deferred.defer(session, _NOT_WAITING_FOR_DISK, {})
                    yield session
            else:
                with self.engine.connect() as conn:
                    raw = conn.connection.dbapi_connection
                    assert raw is not None
                    raw.execute("PRAGMA synchronous=NORMAL")  # not allowed inside a transaction
                    try:
                        with Session(bind=conn, expire_on_commit=False) as session, session.begin():
                            yield session
                    finally:
                        raw.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def writer(self, while_waiting: Callable[[], bool]) -> Iterator[None]:
        """Hold SQLite's write gate for the sessions opened inside (the gate is re-entrant). While
        another writer holds it, `while_waiting()` runs (other work that needs no lock: the
        pipeline parses its next message), again and again until it says there is nothing more
        to do (False); then this waits as `session` does. PostgreSQL has no gate."""
        gate = self._gate
        if isinstance(gate, WriteGate):
            while not gate.enter_if_free():
                if not while_waiting():
                    gate.__enter__()
                    break
        try:
            yield
        finally:
            if isinstance(gate, WriteGate):
                gate.__exit__(None, None, None)

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session that only reads. On SQLite it neither queues on the gate nor takes the write
        lock (a WAL reader never waits for the writer), so reading a batch of raw mail does not
        keep the SMTP intake from committing."""
        # Closing the session rolls its transaction back: there is nothing to commit.
        if not self.is_sqlite:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
            return
        with (
            self.engine.connect().execution_options(mailgate_read=True) as conn,
            Session(bind=conn, expire_on_commit=False) as session,
        ):
            yield session

    def dispose(self) -> None:
        self.engine.dispose()


class WriteGate:
    """Queue for SQLite's single writer. Threads of one process queue on an RLock; processes on
    one database file (the daemon's intake and its worker process, a CLI command) queue on an
    flock of a lock file beside it. Both wake the next writer the moment the lock is free, where
    SQLite's busy handler would sleep 1, 2, 5, 10 … ms between tries. Re-entrant per thread."""

    def __init__(self, lock_path: str | None) -> None:
        self._lock = threading.RLock()
        self._path = lock_path
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> WriteGate:
        self._lock.acquire()
        if self._depth == 0 and self._path is not None:
            try:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1
        return self

    def enter_if_free(self) -> bool:
        """Enter as `__enter__` does when no other thread or process holds the gate; False, at
        once, when one does."""
        if not self._lock.acquire(blocking=False):
            return False
        if self._depth == 0 and self._path is not None:
            try:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock.release()
                return False
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1
        return True

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._depth -= 1
        try:
            if self._depth == 0 and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # Python's sqlite3 opens transactions lazily; take control so BEGIN IMMEDIATE is ours.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.close()


def _sqlite_begin_immediate(conn) -> None:
    # Take the write lock at BEGIN: two writers never deadlock on a read-to-write upgrade.
    # `Database.reading` sessions only read: a plain BEGIN, no lock.
    conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("mailgate_read") else "BEGIN IMMEDIATE")
