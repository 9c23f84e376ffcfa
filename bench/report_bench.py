"""Benchmark: `mailgate report --since 365d` and `mailgate tickets export` on a year of a busy desk.

A fresh database (a temporary SQLite file, or a database of its own on the local PostgreSQL,
dropped afterwards) is brought to head by mailgate and filled with bulk SQL inserts — never
through the pipeline, it is a benchmark: N tickets over the last 365 days with about 5 messages
each and the audit trail the pipeline would write (created, comment, reply, first-response,
status changes: resolved, closed, waiting on the customer and back, reopened; ratings). The desk
uses the shipped rules (the default workflow; sla.toml's office calendar in Europe/Berlin with
holidays, so every SLA figure is business-hours arithmetic).

Then, each as the installed command in a child process (wall, CPU, peak RSS):
- with `--before DIR`, `mailgate report --since 365d` (text) and `--by month --format json` of
  that checkout first, on the same database;
- `mailgate report --since 365d` (text) twice: the first run measures every ticket and keeps its
  figures (mailgate/reports/facts.py), the second reads them back; then `--by month --format
  json` of a fixed year (compared with the --before tree's), `--by agent --format csv`, and
  `--since 30d --by day`;
- `mailgate tickets export --format csv` of about a tenth of the tickets (`--since 36d`) and of
  all of them, and `--format json --with-messages` of all: the peak RSS of the three shows
  whether memory stays flat as the export grows.

Figures are printed, never asserted.

    .venv/bin/python bench/report_bench.py --tickets 100000 --backends sqlite,postgresql \\
        --before /tmp/mg-report-before
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
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
AGENTS = [f"agent{i}@example.com" for i in range(12)]
GROUPS = ["Service Desk", "Network", "Facilities"]
SOURCES = ["smtp"] * 6 + ["imap:support"] * 3 + ["pipe"]
TEXT = "Thank you for the details, we are looking into it and will come back to you soon. " * 3


def _config(root: Path, url: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("rules", "templates"):
        shutil.copytree(common.REPO / name, root / name)
    path = root / "config.toml"
    path.write_text(
        'admin_address = "admin@example.com"\n\n'
        f'[database]\nurl = "{url}"\n\n'
        '[[desks]]\naddress = "support@example.com"\nkey = "SUP"\nname = "Support"\n\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {common.free_port()}\n\n[outgoing]\ntransport = "file"\n'
    )
    return path


def prefill(url: str, tickets: int, messages_per_ticket: int = 5, seed: int = 11) -> tuple[float, int, int]:
    """Bulk-insert the year; returns (seconds, messages, events)."""
    from sqlalchemy import insert, text

    from mailgate.store.db import Database
    from mailgate.store.models import Counter, Event, Message, Ticket

    t0 = time.perf_counter()
    db = Database(url)
    rng = random.Random(seed)
    now = datetime.now(UTC)
    start = now - timedelta(days=365)
    tt, mt, et = Ticket.__table__, Message.__table__, Event.__table__  # type: ignore[attr-defined]
    n_msg = n_ev = 0
    try:
        for first in range(1, tickets + 1, CHUNK):
            t_rows: list[dict[str, Any]] = []
            m_rows: list[dict[str, Any]] = []
            e_rows: list[dict[str, Any]] = []
            for n in range(first, min(tickets, first + CHUNK - 1) + 1):
                created = start + timedelta(seconds=365 * 86400 * (n - 1) / tickets + rng.random() * 600)
                requester = f"customer{rng.randrange(20000)}@acme.example"
                agent, group = rng.choice(AGENTS), rng.choice(GROUPS)
                t = created
                e_rows.append(_ev(n, "created", requester, t, source=rng.choice(SOURCES), status="open"))
                m_rows.append(_msg(n, "in", requester, t))
                status, category = "open", "open"
                first_response = resolved = closed = None
                rating = comment = None
                for i in range(1, messages_per_ticket + rng.randrange(-1, 2)):
                    t = t + timedelta(minutes=rng.expovariate(1 / 600))
                    if t > now:
                        break
                    if i % 2:  # the agent
                        m_rows.append(_msg(n, "in", agent, t))
                        e_rows.append(_ev(n, "comment", agent, t, internal=False))
                        if first_response is None:
                            first_response = t
                            e_rows.append(_ev(n, "first-response", agent, t))
                        roll = rng.random()
                        new = "pending" if roll < 0.15 else "resolved" if roll < 0.7 else None
                    else:  # the customer
                        m_rows.append(_msg(n, "in", requester, t))
                        e_rows.append(_ev(n, "reply", requester, t))
                        new = "open" if status in ("pending", "resolved") else None
                    if new and new != status:
                        cat = {"open": "open", "pending": "waiting", "resolved": "closed"}[new]
                        e_rows.append(_ev(n, "status", agent, t, old=status, new=new, category=cat))
                        status, category = new, cat
                        resolved = t if new == "resolved" else None
                if status == "resolved" and rng.random() < 0.4:
                    t = t + timedelta(hours=rng.uniform(1, 48))
                    rating = rng.choice([5, 5, 5, 4, 4, 3, 2, 1])
                    comment = "Quick and friendly" if rating >= 4 else ("Took too long" if rating < 3 else "")
                    e_rows.append(_ev(n, "rating", requester, t, rating=rating, comment=comment))
                if status == "resolved" and t + timedelta(days=5) < now:
                    t = t + timedelta(days=5)
                    e_rows.append(
                        _ev(n, "status", "system", t, old="resolved", new="closed", category="closed")
                    )
                    status, closed = "closed", t
                t_rows.append(
                    {
                        "id": n,
                        "key": f"SUP-{n}",
                        "desk": "SUP",
                        "number": n,
                        "subject": f"Request {n}",
                        "requester": requester,
                        "requester_name": "",
                        "status": status,
                        "status_category": category,
                        "group": group,
                        "assignee": agent,
                        "priority": rng.choice(["high", "medium", "low", None]),
                        "tags": [],
                        "fields": {"plan": "enterprise"} if rng.random() < 0.2 else {},
                        "created_at": created,
                        "updated_at": t,
                        "first_response_at": first_response,
                        "resolved_at": resolved,
                        "closed_at": closed,
                        "rating": rating,
                        "rating_comment": comment or None,
                    }
                )
            n_msg += len(m_rows)
            n_ev += len(e_rows)
            with db.session() as s:
                s.execute(insert(tt), t_rows)
                s.execute(insert(mt), m_rows)
                s.execute(insert(et), e_rows)
        with db.session() as s:
            s.execute(insert(Counter.__table__), [{"desk": "SUP", "next_number": tickets + 1}])  # type: ignore[attr-defined]
        with db.engine.connect() as c:
            if db.is_sqlite:
                c.exec_driver_sql("ANALYZE")
            else:
                for table in ("ticket", "message", "event"):
                    c.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"(SELECT COALESCE(MAX(id), 0) + 1 FROM {table}), false)"
                        )
                    )
                c.commit()
                c.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    finally:
        db.dispose()
    return time.perf_counter() - t0, n_msg, n_ev


_MSG_ID = [0]


def _msg(ticket: int, direction: str, author: str, at: datetime) -> dict[str, Any]:
    _MSG_ID[0] += 1
    return {
        "ticket_id": ticket,
        "direction": direction,
        "kind": "public",
        "author": author,
        "message_id": f"<m{_MSG_ID[0]}@bench.example>",
        "subject": f"Re: Request {ticket}",
        "text": TEXT,
        "reply_text": TEXT[:120],
        "attachments": [],
        "created_at": at,
    }


def _ev(ticket: int, kind: str, actor: str, at: datetime, **data: Any) -> dict[str, Any]:
    return {"ticket_id": ticket, "kind": kind, "actor": actor, "data": data, "created_at": at}


def _back_to(url: str, revision: str, drop: tuple[str, ...]) -> None:
    """Take the filled database back to an older schema, for `--before`'s tree: the newer
    tables dropped, the older revision stored (the newer tree migrates it up again)."""
    from sqlalchemy import text

    from mailgate.store.db import Database

    db = Database(url, upgrade=False)
    try:
        with db.engine.begin() as c:
            for table in drop:
                c.execute(text(f"DROP TABLE IF EXISTS {table}"))
            c.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        db.dispose()


def _pg(name: str, create: bool) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def _run(config: Path, *args: str, tree: Path | None = None) -> common.Measured:
    argv = [common.PYTHON, "-m", "mailgate", "--config", str(config), "--log-level", "WARNING", *args]
    env = common.mailgate_env({"PYTHONPATH": str(tree)} if tree is not None else None)
    m = common.run_measured(argv, env=env, cwd=config.parent)
    if m.rc != 0:
        raise SystemExit(f"{' '.join(args)} failed ({m.rc}): {m.stderr[-2000:]}")
    return m


def _report(config: Path, args: tuple[str, ...], label: str, tree: Path | None = None) -> str:
    m = _run(config, *args, tree=tree)
    print(
        f"  {label}mailgate {' '.join(args)}: {m.wall:.2f} s wall, {m.cpu:.2f} s CPU,"
        f" peak RSS {m.maxrss_mb:.0f} MB"
    )
    if args[-1] == "365d":
        total = next(line for line in m.stdout.splitlines() if line.startswith("total"))
        print(f"    {total}")
    return m.stdout


def bench(backend: str, tickets: int, root: Path, before: Path | None = None) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{root / 'state' / 'mailgate.db'}"
        name = None
    else:
        name = f"mailgate_report_bench_{os.getpid()}"
        _pg(name, create=True)
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        config = _config(root, url)
        took, n_msg, n_ev = prefill(url, tickets)
        print(f"{backend}: filled {tickets} tickets, {n_msg} messages, {n_ev} events in {took:.1f} s")
        end = datetime.now(UTC).replace(microsecond=0)
        # A fixed year for comparing the figures: "--since 365d" moves with the clock between runs.
        window = ("--since", f"{end - timedelta(days=365)}", "--until", f"{end}")
        year = ("report", "--since", "365d")
        by_month = ("report", *window, "--by", "month", "--format", "json")
        if before is not None:  # the same database, first with the other tree (it knows no newer schema)
            _back_to(url, "0010_ladder", drop=("reportfacts",))
            _report(config, year, "before: ", tree=before)
            seen = _report(config, by_month, "before: ", tree=before)
        _report(config, year, "first run (measures every ticket, keeps the figures): ")
        _report(config, year, "again (reads the kept figures back): ")
        now = _report(config, by_month, "")
        if before is not None:
            print(
                f"  the same figures (--by month --format json of a fixed year) before and after: {seen == now}"
            )
        _report(config, ("report", "--since", "365d", "--by", "agent", "--format", "csv"), "")
        _report(config, ("report", "--since", "30d", "--by", "day"), "")
        for args in (
            ("tickets", "export", "--format", "csv", "--since", "36d"),
            ("tickets", "export", "--format", "csv"),
            ("tickets", "export", "--format", "json", "--with-messages"),
        ):
            out = root / "export.out"
            m = _run(config, *args, "-o", str(out))
            print(
                f"  mailgate {' '.join(args)}: {m.stderr.strip().splitlines()[-1].split(' written')[0]},"
                f" {out.stat().st_size / 1e6:.0f} MB,"
                f" {m.wall:.2f} s wall, peak RSS {m.maxrss_mb:.0f} MB"
            )
            out.unlink()
    finally:
        if name:
            _pg(name, create=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tickets", type=int, default=100_000)
    ap.add_argument("--backends", default="sqlite", help="sqlite,postgresql")
    ap.add_argument(
        "--before",
        type=Path,
        help="another checkout (git archive REV | tar -x -C DIR): its reports run first on the same data",
    )
    args = ap.parse_args(argv)
    common.header("report_bench.py")
    for backend in args.backends.split(","):
        with tempfile.TemporaryDirectory(prefix="mailgate-report-bench-") as tmp:
            bench(backend.strip(), args.tickets, Path(tmp) / "desk", args.before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
