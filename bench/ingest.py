"""Benchmark: `mailgate ingest --mbox` of the corpus into a fresh SQLite state, verified.

Each run is a separate `mailgate` process (startup and schema creation included, as an admin would
see it) on a new temporary desk directory with the file transport. Prints messages/s, the child's
CPU seconds and peak RSS (wait4 rusage of that child only), then checks the database against the
manifest: every message on its ticket, one acknowledgement queued per new ticket. Timings are
printed, never asserted; this script does not change mailgate.

    .venv/bin/python bench/ingest.py --n 2000 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def run_once(
    mbox: Path, manifest: dict[str, object], *, check: bool = True
) -> tuple[common.Measured, list[str]]:
    """One `mailgate ingest --mbox` into a fresh state directory; returns the measure and problems."""
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-ingest-") as tmp:
        config = common.write_config(Path(tmp))
        m = common.run_measured(common.ingest_argv(config, mbox), env=common.mailgate_env(), cwd=Path(tmp))
        problems = [] if m.rc == 0 else [f"exit {m.rc}: {m.stderr[-2000:]}"]
        if m.rc == 0 and check:
            problems += common.verify(f"sqlite:///{Path(tmp) / 'state' / 'mailgate.db'}", manifest)
        return m, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="messages in the corpus (default 2000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--runs", type=int, default=1, help="repeat the run this many times (default 1)")
    args = p.parse_args(argv)
    common.header("ingest.py")
    mbox, manifest = common.corpus(args.n, args.seed)
    print(
        f"corpus: {manifest['count']} messages, {manifest['new_tickets']} new, {manifest['replies']} replies, "
        f"{manifest['with_attachment']} with attachment, {manifest['bytes'] / 1e6:.1f} MB ({mbox})"
    )
    rates: list[float] = []
    failed = False
    for i in range(args.runs):
        m, problems = run_once(mbox, manifest)
        rate = args.n / m.wall
        rates.append(rate)
        print(
            f"run {i + 1}: {args.n} messages in {m.wall:.2f}s = {rate:.1f} msg/s; "
            f"CPU {m.cpu:.2f}s (user {m.user:.2f}, sys {m.sys:.2f}); peak RSS {m.maxrss_mb:.0f} MB; "
            f"verified: {'OK' if not problems else 'FAILED'}"
        )
        for line in problems:
            print(f"  problem: {line}")
        failed = failed or bool(problems)
        sys.stdout.flush()
    if len(rates) > 1:
        print(f"median {statistics.median(rates):.1f} msg/s over {len(rates)} runs")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
