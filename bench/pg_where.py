"""Benchmark: where PostgreSQL's ingest time goes — the mailgate process's CPU, the server
backends' CPU, and the rest (waiting: for the other process, for the disk, for a CPU).

N messages of the corpus are stored (the intake, timed apart), then processed in this process
as the daemon's worker processes them (`Runner(db, config).run_until_idle()`), on a fresh
database of its own on the server (dropped afterwards). The backends' CPU is read from
/proc/<pid>/stat of every connection's `pg_backend_pid()`, so the server must run on this
machine. `--log` sets `log_min_duration_statement = 0` for these sessions only (never the
server's configuration) and sums the server's own time per statement from its log file
(`--server-log`; logging itself slows the server: compare its figures only with each other).
`--sqlite` runs the same on SQLite (no server: its engine's work is in the mailgate CPU).
`--tree` measures another checkout's mailgate. Figures are printed, never asserted.

    .venv/bin/python bench/pg_where.py --n 1000
    .venv/bin/python bench/pg_where.py --n 1000 --sqlite
    .venv/bin/python bench/pg_where.py --n 1000 --log --tree /tmp/mg-before
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SERVER = "postgresql://postgres@127.0.0.1:5432/test"
_LOGGED = re.compile(r"\[\d+\] \S+@(\S+) LOG:  duration: ([\d.]+) ms  (\w+)(?: [^:]*)?: (.*)")


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_times(log: Path, dbname: str, start: int) -> dict[str, float]:
    """Milliseconds per statement (its first 90 characters) in the server log from byte `start`."""
    spent: dict[str, float] = defaultdict(float)
    with log.open(errors="replace") as f:
        f.seek(start)
        for line in f:
            m = _LOGGED.search(line)
            if m and m.group(1) == dbname:
                spent[f"{m.group(3):9} " + " ".join(m.group(4).split())[:90]] += float(m.group(2))
    return spent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="messages (default 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sqlite", action="store_true", help="the same run on SQLite")
    p.add_argument("--server", default=SERVER, help=f"PostgreSQL server (default {SERVER})")
    p.add_argument(
        "--log", action="store_true", help="log every statement of these sessions, sum per statement"
    )
    p.add_argument("--server-log", default="/var/log/postgresql/postgresql-15-main.log")
    p.add_argument("--tree", help="the checkout whose mailgate is measured (default: this one)")
    args = p.parse_args(argv)
    if args.tree:
        sys.path.insert(0, str(Path(args.tree).resolve()))
    common.header("pg_where.py")
    import psycopg

    mbox, _ = common.corpus(max(args.n, 2000), args.seed)
    dbname = f"mailgate_bench_where_{os.getpid()}"
    if not args.sqlite:
        with psycopg.connect(args.server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    try:
        with tempfile.TemporaryDirectory(prefix="mailgate-bench-where-") as tmp:
            url = (
                f"sqlite:///{tmp}/state/mailgate.db"
                if args.sqlite
                else args.server.rsplit("/", 1)[0] + "/" + dbname
            )
            run(args, mbox, url, dbname, Path(tmp))
    finally:
        if not args.sqlite:
            with psycopg.connect(args.server, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return 0


def run(args: argparse.Namespace, mbox: Path, url: str, dbname: str, tmp: Path) -> None:
    from sqlalchemy import event

    import mailgate
    from mailgate.config import load_config
    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.intake.pipe import mbox_messages
    from mailgate.pipeline.runner import Runner
    from mailgate.store.db import Database

    print(f"mailgate from {Path(mailgate.__file__).parent}")
    config = load_config(common.write_config(tmp, database_url=url), env={"MAILGATE_SECRET": "bench"})
    os.chdir(tmp)
    db = Database(config.database_url)
    backends: set[int] = set()
    if not db.is_sqlite:

        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            backends.add(dbapi_conn.execute("SELECT pg_backend_pid()").fetchone()[0])
            if args.log:
                dbapi_conn.execute("SET log_min_duration_statement = 0")  # this session only
            dbapi_conn.commit()

        event.listen(db.engine, "connect", on_connect)
        db.engine.dispose()  # the connections made from now on are counted
    log = Path(args.server_log)
    log_start = log.stat().st_size if args.log and log.exists() else 0
    messages = [bytes(m) for _, m in zip(range(args.n), mbox_messages(mbox), strict=False)]

    def now() -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), sum(proc_cpu(b) for b in backends)

    t0 = now()
    Acceptor(db, config).accept_many([(m, Envelope(source="mbox")) for m in messages])
    t1 = now()
    done = Runner(db, config).run_until_idle()
    t2 = now()
    db.dispose()
    print(f"processed {done} of {args.n}; load average {os.getloadavg()[0]:.1f}")
    for name, a, b in (("intake", t0, t1), ("pipeline", t1, t2)):
        wall, cpu, server = b[0] - a[0], b[1] - a[1], b[2] - a[2]
        print(
            f"{name:>8}: wall {wall:.2f} s = {args.n / wall:.1f} msg/s; mailgate CPU {cpu:.2f} s, "
            f"server backends' CPU {server:.2f} s, the rest (waiting) {wall - cpu - server:.2f} s"
        )
    if args.log and log.exists():
        spent = server_times(log, dbname, log_start)
        print(f"server time logged: {sum(spent.values()):.0f} ms; the costliest statements:")
        for what, ms in sorted(spent.items(), key=lambda kv: -kv[1])[:15]:
            print(f"  {ms:9.1f} ms  {what}")


if __name__ == "__main__":
    sys.exit(main())
