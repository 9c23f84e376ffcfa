"""Benchmark: ingest rate and peak RSS with 0, 10,000 and 100,000 tickets already stored,
on SQLite and on the local PostgreSQL.

For each backend and level: a fresh database (a temporary SQLite file, or a database of its own
`mailgate_bench_<pid>_<level>` on the PostgreSQL server, dropped afterwards), the schema brought to
head by mailgate, then pre-filled fast with bulk SQL inserts through SQLAlchemy core — tickets,
their messages, thread references and requesters, with the desk counter moved past them — never
through the pipeline. Then `mailgate ingest --mbox` of a corpus whose ticket numbers start after
the pre-filled ones, measured as a child process (wall, CPU, peak RSS) and verified against the
manifest. Figures are printed, never asserted; only the benchmark's own databases are written.

    .venv/bin/python bench/scale.py --n 1000 --levels 0,10000,100000 --backends sqlite,postgresql
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
CHUNK = 5000


def _filler(table: Any, row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Give every NOT NULL column without a default a plain value, so the pre-fill keeps working when
    someone adds a column (the values that matter are set explicitly by the caller)."""
    from sqlalchemy import JSON, Boolean, DateTime, Integer, LargeBinary

    for col in table.columns:
        if col.name in row or col.nullable or col.primary_key or col.default is not None:
            continue
        t = col.type
        row[col.name] = (
            {}
            if isinstance(t, JSON)
            else 0
            if isinstance(t, Integer)
            else False
            if isinstance(t, Boolean)
            else now
            if isinstance(t, DateTime)
            else b""
            if isinstance(t, LargeBinary)
            else ""
        )
    return row


def prefill(url: str, tickets: int, seed: int = 7) -> float:
    """Bulk-insert `tickets` tickets with 1-2 messages each; returns seconds taken."""
    from sqlalchemy import insert

    from mailgate.store.db import Database
    from mailgate.store.models import Counter, Message, Participant, ThreadRef, Ticket

    t0 = time.perf_counter()
    db = Database(url)  # brings the schema to head
    rng = random.Random(seed)
    now = datetime.now(UTC)
    old = now - timedelta(days=60)  # outside every flood and loop window
    text = "Old conversation text. " * 40
    tt, mt, rt, pt = Ticket.__table__, Message.__table__, ThreadRef.__table__, Participant.__table__  # type: ignore[attr-defined]
    try:
        msg_id = 0
        for start in range(1, tickets + 1, CHUNK):
            numbers = range(start, min(tickets, start + CHUNK - 1) + 1)
            t_rows, m_rows, r_rows, p_rows = [], [], [], []
            for n in numbers:
                requester = f"old{n % 40000}@past.example"
                t_rows.append(
                    _filler(
                        tt,
                        {
                            "id": n,
                            "key": f"SUP-{n}",
                            "desk": "SUP",
                            "number": n,
                            "subject": f"Old request {n}",
                            "requester": requester,
                            "requester_name": "",
                            "status": "closed" if rng.random() < 0.8 else "open",
                            "status_category": "closed",
                            "tags": [],
                            "fields": {},
                            "created_at": old,
                            "updated_at": old,
                        },
                        old,
                    )
                )
                p_rows.append(
                    _filler(
                        pt,
                        {
                            "ticket_id": n,
                            "address": requester,
                            "name": "",
                            "role": "requester",
                            "notify": True,
                        },
                        old,
                    )
                )
                for _ in range(1 + (rng.random() < 0.5)):
                    msg_id += 1
                    mid = f"old.{msg_id}@past.example"
                    m_rows.append(
                        _filler(
                            mt,
                            {
                                "id": msg_id,
                                "ticket_id": n,
                                "direction": "in",
                                "kind": "public",
                                "author": requester,
                                "message_id": mid,
                                "subject": f"Old request {n}",
                                "text": text,
                                "reply_text": text[:200],
                                "attachments": [],
                                "created_at": old,
                            },
                            old,
                        )
                    )
                    r_rows.append({"desk": "SUP", "message_id": mid, "ticket_id": n})
            with db.session() as s:
                s.execute(insert(tt), t_rows)
                s.execute(insert(mt), m_rows)
                s.execute(insert(rt), r_rows)
                s.execute(insert(pt), p_rows)
        with db.session() as s:
            s.execute(insert(Counter.__table__), [{"desk": "SUP", "next_number": tickets + 1}])  # type: ignore[attr-defined]
        if not db.is_sqlite:
            # Sequences do not move when ids are given explicitly.
            with db.session() as s:
                for table in ("ticket", "message"):
                    s.exec(  # type: ignore[call-overload]
                        __import__("sqlalchemy").text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                        )
                    )
            with db.engine.connect() as c:
                c.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    finally:
        db.dispose()
    return time.perf_counter() - t0


def pg_database(name: str, create: bool) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')
        else:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="messages ingested at each level (default 1000)")
    p.add_argument(
        "--levels", default="0,10000,100000", help="tickets already stored (default 0,10000,100000)"
    )
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    common.header("scale.py")
    levels = [int(x) for x in args.levels.split(",")]
    failed = False
    for backend in args.backends.split(","):
        base_rate: float | None = None
        for level in levels:
            mbox, manifest = common.corpus(args.n, args.seed, first_number=level + 1)
            with tempfile.TemporaryDirectory(prefix="mailgate-bench-scale-") as d:
                if backend == "sqlite":
                    url = f"sqlite:///{Path(d) / 'state' / 'mailgate.db'}"
                    dbname = None
                else:
                    dbname = f"mailgate_bench_{os.getpid()}_{level}"
                    pg_database(dbname, create=True)
                    url = PG_ADMIN.rsplit("/", 1)[0] + "/" + dbname
                try:
                    fill = prefill(url, level) if level else 0.0
                    config = common.write_config(Path(d))
                    env = common.mailgate_env({"MAILGATE_DATABASE_URL": url})
                    m = common.run_measured(common.ingest_argv(config, mbox), env=env, cwd=Path(d))
                    problems = [] if m.rc == 0 else [f"exit {m.rc}: {m.stderr[-1500:]}"]
                    if not m.rc:
                        problems += common.verify(url, manifest)
                finally:
                    if dbname:
                        pg_database(dbname, create=False)
            rate = args.n / m.wall
            base_rate = base_rate or rate
            print(
                f"{backend:>10} with {level:>7,} tickets stored (pre-fill {fill:.0f}s): {args.n} messages in "
                f"{m.wall:.2f}s = {rate:.1f} msg/s ({rate / base_rate:.0%} of the rate at {levels[0]:,}); "
                f"CPU {m.cpu:.2f}s; peak RSS {m.maxrss_mb:.0f} MB; verified {'OK' if not problems else 'FAILED'}"
            )
            for line in problems:
                print(f"  problem: {line}")
            failed = failed or bool(problems)
            sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
