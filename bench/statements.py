"""Benchmark: the SQL statements and commits the worker issues, per message (pipeline) and per mail
(sender), counted by SQLite's trace callback on every connection (BEGIN, SAVEPOINT, PRAGMA and
each row of an executemany included), and the calls through SQLAlchemy (`before_cursor_execute`:
an executemany is one call; the per-call Python is what costs, about 25 µs each). With
`--database postgresql://…` the same run goes to a fresh database of its own on that server
(dropped afterwards), counted by SQLAlchemy's `before_cursor_execute` event (an executemany counts
once; BEGIN and COMMIT are not statements there; the statements psycopg's own cursor runs are
counted by wrapping its `Cursor.execute` and `executemany`), and the statements sent on their own — each one
a round trip that waits for the server — are told apart from the ones sent in a psycopg pipeline
with others (store/deferred.py).

N messages of the corpus are stored first (not counted), then processed as the daemon's worker
processes them (`Runner(db, config).run_until_idle()`), then sent by a `Sender` with the file
transport. `--tree` measures another checkout with the same script (e.g. `git archive` of an
older commit): its own mailgate is imported. Counts are printed, never asserted; so is the
pipeline's CPU time (this process's, tracing included: compare it only in alternating runs).

    .venv/bin/python bench/statements.py --n 200
    .venv/bin/python bench/statements.py --n 200 --tree /tmp/mg-before
    .venv/bin/python bench/statements.py --n 200 --database postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="messages (default 200)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tree", help="the checkout whose mailgate is measured (default: this one)")
    p.add_argument("--database", help="a PostgreSQL server URL: measure there, in a database of its own")
    args = p.parse_args(argv)
    if args.tree:
        sys.path.insert(0, str(Path(args.tree).resolve()))
    common.header("statements.py")
    importlib.import_module("mailgate")
    print(f"mailgate from {Path(sys.modules['mailgate'].__file__ or '').parent}")
    mbox, _ = common.corpus(max(args.n, 2000), args.seed)
    dbname = f"mailgate_bench_statements_{os.getpid()}" if args.database else None
    if dbname:
        pg_database(args.database, dbname, create=True)
    try:
        return run(args, mbox, None if dbname is None else args.database.rsplit("/", 1)[0] + "/" + dbname)
    finally:
        if dbname:
            pg_database(args.database, dbname, create=False)


def pg_database(server: str, name: str, create: bool) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        )


def count_psycopg(counted: Any) -> None:
    """Count every statement psycopg sends, through SQLAlchemy or on its own cursor (the kept
    writes and the Repo's reads, store/deferred.py `Named`), by wrapping psycopg's cursor
    methods in this process (a measurement only; an executemany counts once)."""
    import psycopg

    for name in ("execute", "executemany"):
        original = getattr(psycopg.Cursor, name)

        def wrapped(self: Any, query: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            counted(None, self, query if isinstance(query, str) else str(query))
            return _original(self, query, *args, **kwargs)

        setattr(psycopg.Cursor, name, wrapped)
    pipeline = psycopg.Connection.pipeline

    def counted_pipeline(self: Any) -> Any:
        counted(None, self.cursor(), "(pipeline)")  # each one is left with a sync: one wait
        return pipeline(self)

    psycopg.Connection.pipeline = counted_pipeline  # type: ignore[method-assign]


def run(args: argparse.Namespace, mbox: Path, url: str | None) -> int:
    from sqlalchemy import event

    from mailgate.config import load_config
    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.outbox.sender import Sender
    from mailgate.pipeline.runner import Runner
    from mailgate.store.db import Database

    try:  # where the mbox reader lives: intake/pipe.py now, cli/ingest.py before
        mbox_messages = importlib.import_module("mailgate.intake.pipe").mbox_messages
    except ImportError:
        mbox_messages = importlib.import_module("mailgate.cli.ingest").mbox_messages
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-statements-") as tmp:
        cfg = common.write_config(Path(tmp), database_url=url)
        os.chdir(tmp)
        config = load_config(cfg, env={"MAILGATE_SECRET": "bench"})
        db = Database(config.database_url)
        messages = [bytes(m) for _, m in zip(range(args.n), mbox_messages(mbox), strict=False)]
        Acceptor(db, config).accept_many([(m, Envelope(source="mbox")) for m in messages])
        counts: Counter[tuple[str, str]] = Counter()
        phase = ["pipeline"]

        def trace(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.set_trace_callback(lambda sql: counts.update([(phase[0], sql.split()[0].upper())]))

        calls: Counter[str] = Counter()  # statements handed to the driver: an executemany is one

        def call(*_args: Any) -> None:
            calls[phase[0]] += 1

        def counted(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
            # psycopg's public pgconn: in a pipeline, the statement waits for no answer of its own
            if statement == "(pipeline)":
                counts.update([(phase[0], "(pipelines)")])
                return
            together = bool(cursor.connection.pgconn.pipeline_status)
            counts.update(
                [
                    (phase[0], statement.split()[0].upper()),
                    (phase[0], "(alone)" if not together else "(together)"),
                ]
            )

        event.listen(db.engine, "before_cursor_execute", call)
        if db.is_sqlite:
            event.listen(db.engine, "connect", trace)
        else:
            count_psycopg(counted)
        db.engine.dispose()  # the connections made from now on are traced
        cpu = time.process_time()
        done = Runner(db, config).run_until_idle()
        cpu = time.process_time() - cpu
        phase[0] = "sender"
        sender, sent = Sender(db, config), 0
        while k := sender.run_once():
            sent += k
        db.dispose()
    print(
        f"pipeline CPU: {cpu:.2f} s for {done} messages = {cpu / done * 1000:.2f} ms a message (tracing on)"
    )
    for name, per, unit in (("pipeline", done, "message"), ("sender", sent, "mail")):
        mine = {k: v for (ph, k), v in counts.items() if ph == name}
        alone, together = mine.pop("(alone)", 0), mine.pop("(together)", 0)
        pipelines = mine.pop("(pipelines)", 0)
        total = sum(mine.values())
        kinds = ", ".join(f"{k} {v / per:.2f}" for k, v in sorted(mine.items()))
        print(f"{name}: {per} {unit}s, {total} statements = {total / per:.1f} a {unit} ({kinds})")
        print(f"  {calls[name] / per:.1f} calls through SQLAlchemy a {unit} (an executemany counts once)")
        if alone or together:
            print(
                f"  {name} on PostgreSQL: sent alone (a round trip each) {alone / per:.1f} a {unit}, "
                f"in a pipeline {together / per:.1f}, pipelines (one wait each) {pipelines / per:.1f}: "
                f"waits for the server {(alone + pipelines) / per:.1f} a {unit}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
