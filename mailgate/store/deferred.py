"""Writes whose answer nobody reads, sent to PostgreSQL together (write-behind).

Every statement to PostgreSQL is a round trip to another process: on a busy machine each one
waits for the server to be scheduled and answer, and that wait, not the SQL, was most of the
pipeline's time there (bench/README.md, "PostgreSQL ingest"). Most of a message's writes are
INSERTs of audit events, outgoing mail and send-log rows, and UPDATEs of a ticket's times, whose
answer (row count, new id) is never read. `defer` keeps such a write on its connection, and
the writes kept are sent in one batch of round trips — psycopg's pipeline mode, one sync for the
lot — right before the next statement of any kind runs on that connection (a read, a SAVEPOINT
or its RELEASE, an ORM flush) and before COMMIT. So every statement still runs, in the order
the code asked for it and in the same transaction: a read sees every write made before it, a
failed write fails the statement after it in the same SAVEPOINT, and nothing is committed that
would not have been. A rollback (of the transaction or of a SAVEPOINT) drops what was kept.

SQLite runs in this process: there is no round trip to save, and `defer` runs the write at once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

_KEY = "mailgate.deferred"  # in Connection.info: the writes kept, in order; in Session.info: the connection


def defer(session: Session, stmt: Any, params: dict[str, Any]) -> None:
    """Run `stmt` with `params` in the session's transaction before its next statement
    (PostgreSQL), or now (SQLite). Only for a write without RETURNING whose result the caller
    does not read."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        conn.execute(stmt, params)
        return
    conn.info.setdefault(_KEY, []).append((stmt, params))
    session.info[_KEY] = conn


def install(engine: Engine) -> None:
    """Make `engine` send kept writes before each statement and at commit (PostgreSQL only)."""
    if not event.contains(Session, "before_commit", _before_commit):
        event.listen(Session, "before_commit", _before_commit)
    event.listen(engine, "before_cursor_execute", _before_statement)
    event.listen(engine, "commit", flush)
    event.listen(engine, "rollback", _drop)
    event.listen(engine, "rollback_savepoint", _drop_savepoint)
    event.listen(engine.pool, "checkin", _checkin)


def flush(conn: Connection) -> None:
    """Send the kept writes now: consecutive writes of one statement with the same columns as one
    executemany, all of them inside one pipeline (one sync: one wait for the server, however
    many writes there are)."""
    kept: list[tuple[Any, dict[str, Any]]] | None = conn.info.pop(_KEY, None)
    if not kept:
        return
    runs: list[tuple[Any, list[dict[str, Any]]]] = []
    for stmt, params in kept:
        if runs and runs[-1][0] is stmt and runs[-1][1][0].keys() == params.keys():
            runs[-1][1].append(params)
        else:
            runs.append((stmt, [params]))
    raw = conn.connection.dbapi_connection
    assert raw is not None
    try:
        with raw.pipeline():  # psycopg: send everything, then wait once
            for stmt, rows in runs:
                conn.execute(stmt, rows if len(rows) > 1 else rows[0])
    except Exception as exc:
        # Raised where the next statement was asked for: say which writes it was.
        exc.add_note(
            "in writes sent before this statement: " + "; ".join(str(s).split("(")[0] for s, _ in runs)
        )
        raise


def _before_commit(session: Session) -> None:
    # Also before a SAVEPOINT's RELEASE (Session.begin_nested().commit()): sent here, a write
    # that fails does so while its SAVEPOINT can still be rolled back to. Sent by the RELEASE
    # statement itself, the failure would leave the savepoint released and the transaction lost.
    conn = session.info.pop(_KEY, None)
    if conn is not None and not conn.closed:
        flush(conn)


def _before_statement(conn: Connection, *_args: Any) -> None:
    # The writes run through conn.execute, which comes back here with nothing kept any more.
    if conn.info.get(_KEY):
        flush(conn)


def _drop(conn: Connection) -> None:
    conn.info.pop(_KEY, None)


def _checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info.pop(_KEY, None)  # a connection back in the pool keeps nothing of its last user


def _drop_savepoint(conn: Connection, _name: str, _context: Any) -> None:
    # Every SAVEPOINT statement sent what was kept before it: what is kept now came after the
    # newest savepoint, which is the one rolled back to.
    conn.info.pop(_KEY, None)
