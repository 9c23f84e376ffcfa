"""Writes whose answer nobody reads, sent to PostgreSQL together (write-behind).

Every statement to PostgreSQL is a round trip to another process: on a busy machine each one
waits for the server to be scheduled and answer, and that wait, not the SQL, was most of the
pipeline's time there (bench/README.md, "PostgreSQL ingest"). Most of a message's writes are
INSERTs of audit events, outgoing mail and send-log rows, and UPDATEs of a ticket's times, whose
answer (row count, new id) is never read. `defer` keeps such a write on its connection, and
the writes kept are sent in psycopg's pipeline mode together with the next statement of any
kind on that connection (a read, an ORM flush), one sync for the lot, or before COMMIT and
before a SAVEPOINT's RELEASE. SAVEPOINT and RELEASE statements are kept the same way. So every
statement still runs, in the order the code asked for it and in the same transaction: a read
sees every write made before it, a failed write fails the statement after it in the same
SAVEPOINT, and nothing is committed that would not have been. A rollback drops what was kept
(to a SAVEPOINT: what was kept after it).

The kept writes, and the Repo's small reads that go with them (`read`), run on psycopg's own
cursor as SQL compiled once per statement (`Named`): SQLAlchemy's per-call work cost more of this
process's time than the statements' way to the server.

SQLite runs in this process: there is no round trip to save, and `defer` runs the write at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack, suppress
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.orm import Session

# In Session.info: the connection whose pipeline has writes of this session's not waited for.
_KEY = "mailgate.deferred"
# In Connection.info (the pool's record of the connection): psycopg's open pipeline, held by an
# ExitStack, and what was sent in it since the last wait (named in a failure's notes).
_PIPE = "mailgate.pipeline"
_SENT = "mailgate.sent"


def defer(session: Session, stmt: Any, params: dict[str, Any]) -> None:
    """Run `stmt` with `params` in the session's transaction: sent now on PostgreSQL, in the
    connection's open pipeline, without waiting for its answer (the server works on it while
    this process goes on), or run now (SQLite). Only for a write without RETURNING whose result
    the caller does not read."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        conn.execute(stmt, params)
        return
    sql = named(stmt, conn.dialect, _columns(stmt, params))
    _open(conn, stmt).cursor().execute(sql.sql, sql.args(params))
    session.info[_KEY] = conn


def _open(conn: Connection, what: Any) -> Any:
    """psycopg's connection of `conn`, in pipeline mode (entered once and left open until the
    next statement that waits: `flush`), with `what` noted among the statements sent since the
    last wait."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    info = conn.info
    if _PIPE not in info:
        stack = ExitStack()
        stack.enter_context(raw.pipeline())
        info[_PIPE] = stack
        info[_SENT] = []
    info[_SENT].append(what)
    return raw


class Named:
    """A prebuilt statement as the SQL text SQLAlchemy compiles for PostgreSQL (named parameters,
    `%(name)s`) with each parameter's value when not given and its type's bind processor (a JSON
    column's value wrapped for psycopg), run on psycopg's own cursor: the same SQL and the same
    values as `Connection.execute` sends, without its per-call work, which cost more than the
    rest of a kept write's way to the server (bench/README.md, "PostgreSQL ingest, third
    round"). All public API: `compile`, `binds`, `dialect_impl`, `bind_processor`; store/repo.py
    `Plain` is SQLite's counterpart."""

    def __init__(self, stmt: Any, dialect: Dialect, keys: tuple[str, ...] | None) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        self.sql = str(compiled)
        self.slots: list[tuple[str, Any, Any]] = []  # (name, value when not given, processor)
        for name, bind in compiled.binds.items():
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.slots.append((name, bind.value, proc))

    def args(self, params: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, fixed, proc in self.slots:
            value = params.get(name, fixed)
            out[name] = proc(value) if proc is not None else value  # as SQLAlchemy: None too
        return out


_NAMED: dict[tuple[int, tuple[str, ...] | None], tuple[Any, Named]] = {}


def named(stmt: Any, dialect: Dialect, keys: tuple[str, ...] | None = None) -> Named:
    """`stmt` compiled once per set of columns (`keys`: an INSERT's or UPDATE's). For
    module-level statements only: the cache keeps every statement it is given."""
    found = _NAMED.get((id(stmt), keys))
    if found is None or found[0] is not stmt:
        found = _NAMED[(id(stmt), keys)] = (stmt, Named(stmt, dialect, keys))
    return found[1]


def _columns(stmt: Any, params: dict[str, Any]) -> tuple[str, ...] | None:
    """INSERT and UPDATE compile their column list from the keys given; others do not."""
    if getattr(stmt, "is_dml", False) and not getattr(stmt, "is_delete", False):
        return tuple(sorted(params))
    return None


def read(session: Session, stmt: Any, params: dict[str, Any]) -> Any:
    """Run a prebuilt SELECT (or write with RETURNING) as `Named` SQL on psycopg's cursor in the
    session's transaction, the kept writes sent with it; the cursor, its rows as psycopg gives
    them, which is what SQLAlchemy's psycopg dialect gives for integers, text, booleans, times
    and JSON (it leaves their loading to psycopg), not for every type."""
    return read_on(session.connection(), stmt, params)


def read_on(conn: Connection, stmt: Any, params: dict[str, Any]) -> Any:
    """`read` on a Connection (a module-level statement: `named` keeps it)."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    sql = named(stmt, conn.dialect, _columns(stmt, params))
    cursor = raw.cursor()
    flush(conn, lambda: cursor.execute(sql.sql, sql.args(params)))
    return cursor


class Asked:
    """A prebuilt SELECT sent in the open pipeline (`ask`), its rows read later (`rows`): it
    waits for no answer of its own, but goes with the next statement that waits."""

    def __init__(self, conn: Connection, cursor: Any) -> None:
        self._conn = conn
        self._cursor = cursor

    def rows(self) -> list[Any]:
        """Its rows, as `read` gives them; waits for the server now if nothing has since."""
        if _PIPE in self._conn.info and self._cursor in self._conn.info.get(_SENT, ()):
            flush(self._conn)
        return list(self._cursor.fetchall())


def ask(conn: Connection, stmt: Any, params: dict[str, Any]) -> Asked:
    """Send a prebuilt SELECT now, in the open pipeline of the connection's transaction, and
    read its rows when they are needed (`Asked.rows`): a read whose answer is not needed yet
    costs no wait of its own when a statement that waits comes first (PostgreSQL only)."""
    sql = named(stmt, conn.dialect, None)
    raw = conn.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    _open(conn, cursor)
    cursor.execute(sql.sql, sql.args(params))
    return Asked(conn, cursor)


def install(engine: Engine) -> None:
    """Make `engine` send kept writes with its next statement and at commit (PostgreSQL only)."""
    if not event.contains(Session, "before_commit", _before_commit):
        event.listen(Session, "before_commit", _before_commit)
    event.listen(engine, "do_execute", _with_statement)
    event.listen(engine, "do_execute_no_params", _with_bare_statement)
    event.listen(engine, "do_executemany", _before_executemany)
    event.listen(engine, "commit", flush)
    event.listen(engine, "rollback", _drop)
    event.listen(engine.pool, "checkin", _checkin)


def flush(conn: Connection, then: Callable[[], None] | None = None) -> None:
    """Wait for what was sent: `then` (the statement that asked) sent last in the open pipeline,
    and the pipeline left, one sync, so one wait for the server however many writes went before
    it (which it has mostly done by now). A write the server refused fails here, raised by the
    statement that waits, with the writes sent since the last wait named in its notes."""
    stack: ExitStack | None = conn.info.pop(_PIPE, None)
    sent = conn.info.pop(_SENT, ())
    if stack is None:
        if then is not None:
            then()
        return
    try:
        with stack:  # psycopg: the pipeline's sync, and every result of it
            if then is not None:
                then()
    except Exception as exc:
        exc.add_note("with the writes sent before it: " + "; ".join(str(s).split("(")[0] for s in sent))
        raise


def _close(conn_info: dict[Any, Any]) -> None:
    """Leave the pipeline without caring what came of it: the transaction is being rolled back
    (or the connection given back to the pool), so whatever was sent is undone anyway."""
    stack: ExitStack | None = conn_info.pop(_PIPE, None)
    conn_info.pop(_SENT, None)
    if stack is not None:
        with suppress(Exception):  # a refused write of a transaction being rolled back
            stack.close()


def _before_commit(session: Session) -> None:
    # Also before a SAVEPOINT's RELEASE (Session.begin_nested().commit()): waited for here, a
    # write that fails does so while its SAVEPOINT can still be rolled back to. Failing with the
    # RELEASE statement itself, it would leave the savepoint marked released and the transaction
    # lost.
    conn = session.info.pop(_KEY, None)
    if conn is not None and not conn.closed:
        flush(conn)


def _with_statement(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
    return _send(context.root_connection, statement, lambda: cursor.execute(statement, parameters))


def _with_bare_statement(cursor: Any, statement: str, context: Any) -> bool | None:
    return _send(context.root_connection, statement, lambda: cursor.execute(statement))


def _send(conn: Connection, statement: str, execute: Callable[[], None]) -> bool | None:
    """A statement about to be sent. A SAVEPOINT and its RELEASE, whose answers nobody reads,
    go into the open pipeline like the kept writes (a RELEASE comes after `_before_commit`
    waited for the savepoint's writes). A ROLLBACK TO SAVEPOINT leaves the pipeline first,
    dropping what failed in it (the savepoint's writes are undone by it). Any other statement
    waits for its answer anyway: it goes last in the pipeline, and the pipeline is left.
    True: done here; None: SQLAlchemy sends it."""
    if not conn.in_transaction():  # only a transaction keeps anything (nor has `info` at the
        return None  # dialect's first connect)
    if statement.startswith(("SAVEPOINT ", "RELEASE SAVEPOINT ")):
        _open(conn, statement).execute(statement)
        return True
    if _PIPE not in conn.info:
        return None
    if statement.startswith("ROLLBACK TO SAVEPOINT "):
        _close(conn.info)
        return None
    flush(conn, execute)
    return True


def _before_executemany(_cursor: Any, _statement: str, _parameters: Any, context: Any) -> None:
    # psycopg runs an executemany in a pipeline of its own: what was sent is waited for first.
    conn = context.root_connection
    if conn.in_transaction() and _PIPE in conn.info:
        flush(conn)


def _drop(conn: Connection) -> None:
    _close(conn.info)


def _checkin(_dbapi_conn: Any, record: Any) -> None:
    _close(record.info)  # a connection back in the pool keeps nothing of its last user
