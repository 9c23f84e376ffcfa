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

`send` sends what is kept at once, into a pipeline left open, without waiting: the server works on
those writes while this process goes on (the runner parses the next message meanwhile), and the
next statement that waits leaves the pipeline, one sync for the lot, as before. A write the server
refuses is reported by that wait: the runner sends a message's last writes before its SAVEPOINT's
RELEASE, which waits first, so the refusal still fails inside the message's own SAVEPOINT. A
rollback leaves the pipeline, and the server's ROLLBACK (TO SAVEPOINT) undoes what was sent. A
read may go the same way (`ask`): sent now, its rows read after the next wait.

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

_KEY = "mailgate.deferred"  # in Connection.info: the writes kept, in order; in Session.info: the connection
# In Connection.info (the pool's record of the connection): psycopg's pipeline left open by `send`
# or `ask`, held by an ExitStack, and what was sent in it (named in a failure's notes).
_PIPE = "mailgate.pipeline"
_SENT = "mailgate.sent"


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


def send(session: Session) -> None:
    """Send the writes kept on the session's connection now, without waiting for the server
    (PostgreSQL; nothing is kept on SQLite): it works on them while this process does something
    else, and the next statement that waits (or the RELEASE or COMMIT) waits for them too."""
    conn = session.info.get(_KEY)
    if conn is None or conn.closed or not conn.info.get(_KEY):
        return
    _send_kept(conn, _open(conn))


def _open(conn: Connection) -> Any:
    """psycopg's connection of `conn`, in a pipeline entered once and left open until `flush`."""
    raw = conn.connection.dbapi_connection
    assert raw is not None
    if _PIPE not in conn.info:
        stack = ExitStack()
        stack.enter_context(raw.pipeline())
        conn.info[_PIPE] = stack
        conn.info[_SENT] = []
    return raw


def _send_kept(conn: Connection, raw: Any) -> None:
    """Send the kept writes into the open pipeline: consecutive writes of one statement with the
    same columns as one executemany."""
    kept: list[tuple[Any, dict[str, Any] | None]] = conn.info.pop(_KEY, None) or []
    runs: list[tuple[Any, list[dict[str, Any]]]] = []
    for stmt, params in kept:
        if params is None:  # a SAVEPOINT, as SQLAlchemy wrote it
            runs.append((stmt, []))
        elif runs and runs[-1][0] is stmt and runs[-1][1] and runs[-1][1][0].keys() == params.keys():
            runs[-1][1].append(params)
        else:
            runs.append((stmt, [params]))
    sent = conn.info[_SENT]
    for stmt, rows in runs:
        sent.append(stmt)
        if not rows:
            raw.execute(stmt)
            continue
        sql = named(stmt, conn.dialect, _columns(stmt, rows[0]))
        if len(rows) > 1:
            raw.cursor().executemany(sql.sql, [sql.args(r) for r in rows])
        else:
            raw.cursor().execute(sql.sql, sql.args(rows[0]))


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
        if _PIPE in self._conn.info and any(s is self._cursor for s in self._conn.info.get(_SENT, ())):
            flush(self._conn)
        return list(self._cursor.fetchall())


def ask(conn: Connection, stmt: Any, params: dict[str, Any]) -> Asked:
    """Send a prebuilt SELECT now, in the open pipeline of the connection's transaction, and
    read its rows when they are needed (`Asked.rows`): a read whose answer is not needed yet
    costs no wait of its own when a statement that waits comes first (PostgreSQL only)."""
    sql = named(stmt, conn.dialect, None)
    if conn.info.get(_KEY):
        _send_kept(conn, _open(conn))
    cursor = _open(conn).cursor()
    conn.info[_SENT].append(cursor)
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
    """Send the kept writes now, all of them inside one pipeline (the one `send` left open, if
    any) and `then` (the statement that asked) last in it: one sync, so one wait for the
    server, however many writes there are."""
    if not conn.info.get(_KEY) and _PIPE not in conn.info:
        if then is not None:
            then()
        return
    raw = _open(conn)
    stack: ExitStack = conn.info.pop(_PIPE)
    sent = conn.info.pop(_SENT)
    try:
        with stack:  # psycopg: the pipeline's sync, and every result of it
            conn.info[_SENT] = sent
            _send_kept(conn, raw)
            conn.info.pop(_SENT, None)
            if then is not None:
                then()
    except Exception as exc:
        # Raised by the statement that asked for them: say which writes went with it.
        exc.add_note("with the writes sent before it: " + "; ".join(str(s).split("(")[0] for s in sent))
        raise


def _close(info: dict[Any, Any]) -> None:
    """Leave an open pipeline without caring what came of it: the transaction, or its savepoint,
    is being rolled back (or the connection given back to the pool), which undoes what was sent."""
    stack: ExitStack | None = info.pop(_PIPE, None)
    info.pop(_SENT, None)
    if stack is not None:
        with suppress(Exception):  # a refused write of what is being rolled back
            stack.close()


def _before_commit(session: Session) -> None:
    # Also before a SAVEPOINT's RELEASE (Session.begin_nested().commit()): sent here, a write
    # that fails does so while its SAVEPOINT can still be rolled back to. Sent with the RELEASE
    # statement itself, the failure would leave the savepoint marked released and the
    # transaction lost.
    conn = session.info.pop(_KEY, None)
    if conn is not None and not conn.closed:
        flush(conn)


def _with_statement(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
    return _send(context.root_connection, statement, lambda: cursor.execute(statement, parameters))


def _with_bare_statement(cursor: Any, statement: str, context: Any) -> bool | None:
    return _send(context.root_connection, statement, lambda: cursor.execute(statement))


def _send(conn: Connection, statement: str, execute: Callable[[], None]) -> bool | None:
    """A statement about to be sent: the kept writes go with it, last in their pipeline (it
    waits for its answer anyway: they cost no wait of their own). A SAVEPOINT and its RELEASE,
    whose answers nobody reads, are kept themselves; rolling back to a savepoint that was never
    sent drops it and what was kept after it, and sends nothing. True: done here; None:
    SQLAlchemy sends it."""
    if not conn.in_transaction():  # only a transaction keeps anything (nor has `info` at the
        return None  # dialect's first connect)
    kept = conn.info.get(_KEY)
    if statement.startswith("SAVEPOINT ") or (
        # A RELEASE waits with the rest once no write is kept before it (Session.commit of the
        # savepoint sent them first: a refused one failed inside it, where it can be undone).
        statement.startswith("RELEASE SAVEPOINT ") and all(p is None for _, p in kept or ())
    ):
        conn.info.setdefault(_KEY, []).append((statement, None))
        return True
    if statement.startswith("ROLLBACK TO SAVEPOINT "):
        mark = statement[len("ROLLBACK TO ") :]
        at = next((i for i, (s, p) in enumerate(kept or ()) if p is None and s == mark), None)
        if kept:
            del kept[at or 0 :]  # sent before it, the savepoint's writes are undone by the server
        if at is not None:
            return True
        _close(conn.info)  # what `send` sent after the savepoint is undone by the server
        return None
    if not kept and _PIPE not in conn.info:
        return None
    flush(conn, execute)  # the writes run through conn.execute, which finds nothing kept here
    return True


def _before_executemany(_cursor: Any, _statement: str, _parameters: Any, context: Any) -> None:
    # psycopg runs an executemany in a pipeline of its own: the kept writes go first.
    conn = context.root_connection
    if conn.in_transaction() and (conn.info.get(_KEY) or _PIPE in conn.info):
        flush(conn)


def _drop(conn: Connection) -> None:
    conn.info.pop(_KEY, None)
    _close(conn.info)


def _checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info.pop(_KEY, None)  # a connection back in the pool keeps nothing of its last user
    _close(record.info)
