"""The pipeline's prebuilt statements, run straight on the SQLite driver.

A message costs about ten writes (its row, audit events, outgoing mail, thread references,
participants) and half as many small reads (ticket number, loop-limit counts, thread look-ups).
Through SQLAlchemy each one costs about 0.2 ms of bookkeeping around 0.05 ms of SQLite: a
quarter of the pipeline's time per message (cProfile of `mailgate ingest`, see bench/README.md).
Here each statement is compiled once by SQLAlchemy, for the dialect and the parameter names in
use; later runs bind its values with SQLAlchemy's own type processors (datetimes, JSON), hand
them to the driver's cursor, and convert what comes back with SQLAlchemy's own result processors:
the same SQL and the same values, on the same connection, inside the same transaction. Only for
module-level Core statements, and only on SQLite; PostgreSQL keeps the ordinary path. Python-side
column defaults are not run here (SQLAlchemy runs them in its execution context): callers give
every value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.sql import sqltypes

_Processor = Callable[[Any], Any] | None


@cache
def insert_for(dialect: str) -> Callable[..., Any]:
    """The dialect's INSERT (the one with ON CONFLICT), imported when first asked for: the
    PostgreSQL dialect costs 30-60 ms to import, and a SQLite daemon or MTA pipe never needs it."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _fast_datetime_bind(slow: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLite DATETIME's text for a datetime, by `isoformat` (SQLAlchemy formats a dict of its
    fields, 4 µs a value; a message binds about ten)."""

    def process(value: Any) -> Any:
        if value.__class__ is datetime:
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")
        return slow(value)

    return process


def _fast_datetime_result(slow: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A datetime from text in exactly SQLAlchemy's form ("2026-01-02 03:04:05.000006"); any
    other text (an offset, a date alone) goes to SQLAlchemy's own parser."""

    def process(value: Any) -> Any:
        if value.__class__ is str and len(value) == 26 and value[10] == " " and value[19] == ".":
            try:
                return datetime.fromisoformat(value)
            except ValueError:
                pass
        return slow(value)

    return process


_SAMPLE_TIMES = (
    datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 12, 31, 23, 59, 59),
    datetime(987, 6, 5, 4, 3, 2, 999_999, tzinfo=timezone(timedelta(hours=-5))),
)


# Texts as SQLite DATETIME columns hold them, and one without the fraction.
_SAMPLE_TEXTS = (
    *(t.replace(tzinfo=None).isoformat(" ", "microseconds") for t in _SAMPLE_TIMES),
    "2026-01-02 03:04:05",
)


def _faster(
    type_: Any,
    slow: _Processor,
    quick_of: Callable[[Callable[[Any], Any]], Callable[[Any], Any]],
    samples: Any,
) -> _Processor:
    """The quicker processor for a SQLite DATETIME, if it gives exactly what SQLAlchemy's gives
    on the samples (it would not for a column with its own storage format); else `slow`."""
    if slow is None or not isinstance(type_, sqltypes.DateTime):
        return slow
    quick = quick_of(slow)
    try:
        if all(quick(v) == slow(v) for v in samples):
            return quick
    except Exception:  # noqa: BLE001 - keep SQLAlchemy's own
        pass
    return slow


class _Entry:
    """A statement compiled for one set of parameter names, with how to bind each position."""

    __slots__ = ("binds", "compiled", "names", "plan", "results", "sql")

    def __init__(self, compiled: Any, results: tuple[_Processor, ...], params: Mapping[str, Any]) -> None:
        self.sql: str = compiled.string
        self.names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self.binds: Mapping[str, Callable[[Any], Any]] = dict(compiled._bind_processors)
        self.compiled = compiled  # keeps the statement alive, so its id is never reused
        self.results = results if any(results) else ()
        self.plan = self._plan(compiled, params)

    def _plan(
        self, compiled: Any, params: Mapping[str, Any]
    ) -> tuple[tuple[str | None, Any, _Processor], ...] | None:
        """Per position: the caller's parameter to take (or None and the statement's own value,
        a literal such as LIMIT 1 or `+ 1`, bound already) and its bind processor, worked out
        once as construct_params does it per call (a tenth of running a statement). None where
        that would not be the same: a bind whose value is computed per call, an IN list expanded
        per call, escaped names."""
        values = compiled.construct_params(dict(params))  # also raises now for a missing value
        by_name = {name: bind for bind, name in compiled.bind_names.items()}
        if compiled.escaped_bind_names or any(b.callable or b.expanding for b in by_name.values()):
            return None
        plan: list[tuple[str | None, Any, _Processor]] = []
        for name in self.names:
            bind = by_name[name]
            process = _faster(bind.type, self.binds.get(name), _fast_datetime_bind, _SAMPLE_TIMES)
            source = bind.key if bind.key in params else name if name in params else None
            if source is None:
                own = values[name]
                plan.append((None, process(own) if process is not None else own, None))
            else:
                plan.append((source, None, process))
        return tuple(plan)


_cache: dict[tuple[int, frozenset[str]], _Entry] = {}  # (statement, parameter names)


def _run(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> tuple[Any, _Entry]:
    key = (id(stmt), frozenset(params))
    entry = _cache.get(key)
    if entry is None:
        dialect = conn.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=list(params))
        results = tuple(
            _faster(
                c.type, c.type._cached_result_processor(dialect, None), _fast_datetime_result, _SAMPLE_TEXTS
            )
            for c in compiled._result_columns
        )
        entry = _cache[key] = _Entry(compiled, results, params)
    plan = entry.plan
    if plan is not None:
        args = [
            own if source is None else params[source] if process is None else process(params[source])
            for source, own, process in plan
        ]
    else:
        binds = entry.binds
        values = entry.compiled.construct_params(dict(params))
        args = [binds[n](values[n]) if n in binds else values[n] for n in entry.names]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(entry.sql, args)
    except BaseException:
        cursor.close()
        raise
    return cursor, entry


def run_sql(conn: Connection, sql: str) -> None:
    """Run a plain SQL command with no parameters and no rows (SAVEPOINT, RELEASE): on SQLite
    straight on the driver, which the transaction's own bookkeeping never sees either way."""
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql(sql)
        return
    conn.connection.dbapi_connection.execute(sql).close()  # type: ignore[union-attr]


def write(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> int:
    """Run `stmt` (a module-level INSERT or UPDATE without RETURNING) with `params`; the row count."""
    if conn.dialect.name != "sqlite":
        return int(conn.execute(stmt, dict(params)).rowcount)
    cursor, _ = _run(conn, stmt, params)
    try:
        return int(cursor.rowcount)
    finally:
        cursor.close()


def read(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> Rows:
    """Run `stmt` (a module-level SELECT, or a write with RETURNING) with `params`; all its rows."""
    if conn.dialect.name != "sqlite":
        return Rows([tuple(r) for r in conn.execute(stmt, dict(params))])
    cursor, entry = _run(conn, stmt, params)
    try:
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if entry.results:
        procs = entry.results
        rows = [tuple(p(v) if p else v for p, v in zip(procs, row, strict=True)) for row in rows]
    return Rows(rows)


class Rows:
    """The rows of `read`, with the accessors of SQLAlchemy's Result that the pipeline uses."""

    __slots__ = ("rows",)

    def __init__(self, rows: Sequence[tuple[Any, ...]]) -> None:
        self.rows = rows

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def one(self) -> tuple[Any, ...]:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0]

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar_one_or_none(self) -> Any:
        if len(self.rows) > 1:
            raise LookupError(f"expected at most one row, got {len(self.rows)}")
        return self.rows[0][0] if self.rows else None

    def scalars(self) -> list[Any]:
        return [r[0] for r in self.rows]
