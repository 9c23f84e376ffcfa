"""Benchmark: the bare floor — what the hardware and libraries allow — against `mailgate ingest`.

The floor takes the same mbox through the minimum a durable mail gateway must do, per message:
parse it with mail-parser, store it with ONE durable commit through SQLModel (SQLite WAL,
synchronous=FULL, so a power cut loses nothing that was committed), and render an acknowledgement
with jinja2 (one Environment for the process, templates compiled once). No threading, no rules,
no outbox. It runs as its own child process so its CPU and peak RSS are measured like mailgate's,
and the two are alternated in pairs: every ratio is taken inside a pair on this noisy machine.
Figures are printed, never asserted; this script does not touch mailgate's code.

    .venv/bin/python bench/floor.py --n 1000 --pairs 3
"""

from __future__ import annotations

import argparse
import mailbox
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ACK = """Hello{% if name %} {{ name }}{% endif %},

Just confirming that we got your request. We're on it.

Your request is {{ key }}: {{ subject }}
Reply to this mail to add anything; keep [{{ key }}] in the subject.

--
{{ desk_name }} <{{ desk_address }}>
"""


def floor_worker(mbox_path: str, db_path: str) -> int:
    """The floor itself (run in a child process): parse, one durable commit, render, per message."""
    import mailparser
    from jinja2 import DictLoader, Environment, StrictUndefined
    from sqlalchemy import Column, LargeBinary, event
    from sqlmodel import Field, Session, SQLModel, create_engine

    class FloorMessage(SQLModel, table=True):
        id: int | None = Field(default=None, primary_key=True)
        message_id: str = Field(index=True, unique=True)
        sender: str
        subject: str
        text: str
        ack: str
        raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))

    engine = create_engine(f"sqlite:///{db_path}")

    @event.listens_for(engine, "connect")
    def _pragmas(conn, _record):  # type: ignore[no-untyped-def]
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")

    SQLModel.metadata.create_all(engine)
    env = Environment(
        loader=DictLoader({"ack.txt": ACK}), undefined=StrictUndefined, keep_trailing_newline=True
    )
    template = env.get_template("ack.txt")
    box = mailbox.mbox(mbox_path, create=False)
    n = 0
    try:
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            mail = mailparser.parse_from_bytes(raw)
            sender = mail.from_[0][1] if mail.from_ else ""
            name = mail.from_[0][0] if mail.from_ else ""
            n += 1
            ack = template.render(
                name=name,
                key=f"SUP-{n}",
                subject=mail.subject,
                desk_name="Support",
                desk_address="support@localhost",
            )
            with Session(engine) as s:
                s.add(
                    FloorMessage(
                        message_id=mail.message_id or f"none-{n}",
                        sender=sender,
                        subject=mail.subject or "",
                        text=mail.body or "",
                        ack=ack,
                        raw=raw,
                    )
                )
                s.commit()  # one durable commit per message
    finally:
        box.close()
    with Session(engine) as s:
        stored = s.query(FloorMessage).count()
    print(f"floor stored {stored}")
    return 0 if stored == n else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="messages in the corpus (default 1000)")
    p.add_argument("--pairs", type=int, default=3, help="alternating floor/mailgate pairs (default 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--worker", nargs=2, metavar=("MBOX", "DB"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return floor_worker(*args.worker)
    common.header("floor.py")
    mbox, manifest = common.corpus(args.n, args.seed)
    print(
        f"corpus: {manifest['count']} messages, {manifest['new_tickets']} new, {manifest['replies']} replies, "
        f"{manifest['with_attachment']} with attachment, {manifest['bytes'] / 1e6:.1f} MB"
    )
    ratios: list[float] = []
    failed = False
    for i in range(args.pairs):
        with tempfile.TemporaryDirectory(prefix="mailgate-bench-floor-") as d:
            f = common.run_measured(
                [common.PYTHON, __file__, "--worker", str(mbox), str(Path(d) / "floor.db")], cwd=Path(d)
            )
        with tempfile.TemporaryDirectory(prefix="mailgate-bench-floor-mg-") as d:
            config = common.write_config(Path(d))
            m = common.run_measured(common.ingest_argv(config, mbox), env=common.mailgate_env(), cwd=Path(d))
            problems = [] if m.rc == 0 else [f"exit {m.rc}: {m.stderr[-1500:]}"]
            if not m.rc:
                problems += common.verify(f"sqlite:///{Path(d) / 'state' / 'mailgate.db'}", manifest)
        fr, mr = args.n / f.wall, args.n / m.wall
        ratios.append(mr / fr)
        print(
            f"pair {i + 1}: floor {fr:.1f} msg/s ({f.wall:.2f}s, CPU {f.cpu:.2f}s, RSS {f.maxrss_mb:.0f} MB, "
            f"exit {f.rc}) | mailgate {mr:.1f} msg/s ({m.wall:.2f}s, CPU {m.cpu:.2f}s, RSS {m.maxrss_mb:.0f} MB, "
            f"verified {'OK' if not problems else 'FAILED'}) | mailgate/floor {mr / fr:.2f}"
        )
        for line in problems:
            print(f"  mailgate problem: {line}")
        if f.rc:
            print(f"  floor problem: {f.stdout[-500:]} {f.stderr[-1500:]}")
        failed = failed or bool(problems) or bool(f.rc)
        sys.stdout.flush()
    print(
        f"N={args.n}: mailgate/floor per pair {', '.join(f'{r:.2f}' for r in ratios)} "
        f"(median {statistics.median(ratios):.2f}; target >= 1.0)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
