"""The pipeline's prebuilt INSERTs and UPDATEs, run straight on the SQLite driver.

A message costs about ten such writes (its row, audit events, outgoing mail, thread references,
participants). Through SQLAlchemy each one costs about 0.2 ms of bookkeeping around 0.07 ms of
SQLite: a quarter of the pipeline's time per message (cProfile of `mailgate ingest`, see
bench/README.md). Here each statement is compiled once by SQLAlchemy, for the dialect and the
parameter names in use, and later runs bind its values with SQLAlchemy's own type processors
(datetimes, JSON) and hand them to the driver's cursor: the same SQL and the same values, on the
same connection, inside the same transaction. Only for writes that return nothing but a row
count, and only on SQLite; PostgreSQL keeps the ordinary path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Connection

_Compiled = tuple[str, tuple[str, ...], Mapping[str, Callable[[Any], Any]], Any]
_cache: dict[tuple[int, frozenset[str]], _Compiled] = {}  # (statement, parameter names)


def write(conn: Connection, stmt: Any, params: Mapping[str, Any]) -> int:
    """Run `stmt` (a module-level INSERT or UPDATE without RETURNING) with `params`; the row count."""
    if conn.dialect.name != "sqlite":
        return int(conn.execute(stmt, dict(params)).rowcount)
    key = (id(stmt), frozenset(params))  # the compiled entry keeps `stmt` alive: ids never reused
    entry = _cache.get(key)
    if entry is None:
        compiled = stmt.compile(dialect=conn.dialect, column_keys=list(params))
        entry = (
            compiled.string,
            tuple(compiled.positiontup or ()),
            dict(compiled._bind_processors),
            compiled,
        )
        _cache[key] = entry
    sql, names, processors, compiled = entry
    values = compiled.construct_params(dict(params))  # adds the statement's own literal binds
    args = [processors[n](values[n]) if n in processors else values[n] for n in names]
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, args)
        return int(cursor.rowcount)
    finally:
        cursor.close()
