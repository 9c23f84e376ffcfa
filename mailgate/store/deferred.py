"""Writes whose answer nobody reads, sent to PostgreSQL together (write-behind).

Every statement to PostgreSQL is a round trip to another process: on a busy machine each one
waits for the server to be scheduled and answer, and that wait, not the SQL, was most of the
pipeline's time there (bench/README.md, "PostgreSQL ingest"). Most of a message's writes are
INSERTs of audit events, outgoing mail and send-log rows, and UPDATEs of a ticket's times, whose
answer (row count, new id) is never read. `defer` keeps such a write on its connection, and
the writes kept are sent in psycopg's pipeline mode together with the next statement of any kind
on that connection (a read, a SAVEPOINT, an ORM flush), one sync for the lot, or before COMMIT
and before a SAVEPOINT's RELEASE. So every statement still runs, in the order
the code asked for it and in the same transaction: a read sees every write made before it, a
failed write fails the statement after it in the same SAVEPOINT, and nothing is committed that
would not have been. A rollback (of the transaction or of a SAVEPOINT) drops what was kept.

SQLite runs in this process: there is no round trip to save, and `defer` runs the write at once.
"""

from __future__ import annotations

from collections.abc import Callable
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
    """Make `engine` send kept writes with its next statement and at commit (PostgreSQL only)."""
    if not event.contains(Session, "before_commit", _before_commit):
        event.listen(Session, "before_commit", _before_commit)
    event.listen(engine, "do_execute", _with_statement)
    event.listen(engine, "do_execute_no_params", _with_bare_statement)
    event.listen(engine, "do_executemany", _before_executemany)
    event.listen(engine, "commit", flush)
    event.listen(engine, "rollback", _drop)
    event.listen(engine, "rollback_savepoint", _drop_savepoint)
    event.listen(engine.pool, "checkin", _checkin)


def flush(conn: Connection, then: Callable[[], None] | None = None) -> None:
    """Send the kept writes now: consecutive writes of one statement with the same columns as one
    executemany, all of them inside one pipeline and `then` (the statement that asked) last in
    it: one sync, so one wait for the server, however many writes there are."""
    kept: list[tuple[Any, dict[str, Any]]] | None = conn.info.pop(_KEY, None)
    if not kept:
        if then is not None:
            then()
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
            if then is not None:
                then()
    except Exception as exc:
        # Raised by the statement that asked for them: say which writes went with it.
        exc.add_note("with the writes sent before it: " + "; ".join(str(s).split("(")[0] for s, _ in runs))
        raise


def _before_commit(session: Session) -> None:
    # Also before a SAVEPOINT's RELEASE (Session.begin_nested().commit()): sent here, a write
    # that fails does so while its SAVEPOINT can still be rolled back to. Sent with the RELEASE
    # statement itself, the failure would leave the savepoint marked released and the
    # transaction lost.
    conn = session.info.pop(_KEY, None)
    if conn is not None and not conn.closed:
        flush(conn)


def _with_statement(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
    """The statement runs last in the pipeline of the kept writes (it waits for its answer
    anyway: they cost no wait of their own). The writes run through conn.execute, which comes
    back here with nothing kept any more."""
    conn = _keeping(context)
    if conn is None:
        return None
    flush(conn, lambda: cursor.execute(statement, parameters))
    return True


def _with_bare_statement(cursor: Any, statement: str, context: Any) -> bool | None:
    conn = _keeping(context)
    if conn is None:
        return None
    flush(conn, lambda: cursor.execute(statement))
    return True


def _before_executemany(_cursor: Any, _statement: str, _parameters: Any, context: Any) -> None:
    # psycopg runs an executemany in a pipeline of its own: the kept writes go first.
    conn = _keeping(context)
    if conn is not None:
        flush(conn)


def _keeping(context: Any) -> Connection | None:
    """The statement's connection when it keeps writes. Only a transaction keeps any (the
    dialect's first statements run on a connection without `info`, outside one)."""
    conn: Connection = context.root_connection
    return conn if conn.in_transaction() and conn.info.get(_KEY) else None


def _drop(conn: Connection) -> None:
    conn.info.pop(_KEY, None)


def _checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info.pop(_KEY, None)  # a connection back in the pool keeps nothing of its last user


def _drop_savepoint(conn: Connection, _name: str, _context: Any) -> None:
    # Every SAVEPOINT statement sent what was kept before it: what is kept now came after the
    # newest savepoint, which is the one rolled back to.
    conn.info.pop(_KEY, None)
