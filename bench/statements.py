"""Benchmark: the SQL statements and commits the worker issues, per message (pipeline) and per mail
(sender), counted by SQLite's trace callback on every connection (BEGIN, SAVEPOINT, PRAGMA and
each row of an executemany included), and the calls through SQLAlchemy (`before_cursor_execute`:
an executemany is one call; the per-call Python is what costs, about 25 µs each).

N messages of the corpus are stored first (not counted), then processed as the daemon's worker
processes them (`Runner(db, config).run_until_idle()`), then sent by a `Sender` with the file
transport. `--tree` measures another checkout with the same script (e.g. `git archive` of an
older commit): its own mailgate is imported. Counts are printed, never asserted; so is the
pipeline's CPU time (this process's, tracing included: compare it only in alternating runs).

    .venv/bin/python bench/statements.py --n 200
    .venv/bin/python bench/statements.py --n 200 --tree /tmp/mg-before
"""

from __future__ import annotations

import argparse
import importlib
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
    args = p.parse_args(argv)
    if args.tree:
        sys.path.insert(0, str(Path(args.tree).resolve()))
    common.header("statements.py")
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
    print(f"mailgate from {Path(sys.modules['mailgate'].__file__ or '').parent}")
    mbox, _ = common.corpus(max(args.n, 2000), args.seed)
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-statements-") as tmp:
        cfg = common.write_config(Path(tmp))
        os.chdir(tmp)
        config = load_config(cfg, env={"MAILGATE_SECRET": "bench"})
        db = Database(config.database_url)
        messages = [bytes(m) for _, m in zip(range(args.n), mbox_messages(mbox), strict=False)]
        Acceptor(db, config).accept_many([(m, Envelope(source="mbox")) for m in messages])
        counts: Counter[tuple[str, str]] = Counter()
        phase = ["pipeline"]

        def trace(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.set_trace_callback(lambda sql: counts.update([(phase[0], sql.split()[0].upper())]))

        event.listen(db.engine, "connect", trace)
        calls: Counter[str] = Counter()  # statements handed to the driver: an executemany is one

        def call(*_args: Any) -> None:
            calls[phase[0]] += 1

        event.listen(db.engine, "before_cursor_execute", call)
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
        total = sum(mine.values())
        kinds = ", ".join(f"{k} {v / per:.2f}" for k, v in sorted(mine.items()))
        print(f"{name}: {per} {unit}s, {total} statements = {total / per:.1f} a {unit} ({kinds})")
        print(f"  {calls[name] / per:.1f} calls through SQLAlchemy a {unit} (an executemany counts once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
