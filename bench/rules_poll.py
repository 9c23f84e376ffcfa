"""What watching the rules costs the pipeline: one `RulesSource.poll()` per batch.

On a copy of the shipped rules/ and templates/ (4 rules files, 32 templates): the mean cost of a
poll that finds nothing changed, measured over a few seconds of back-to-back polls so the
once-a-second look at the templates is counted at its real share; the cost of the templates'
stat signature alone; the cost of a poll that finds an edit and swaps in a new snapshot; and the
first load at start.

Run:  .venv/bin/python bench/rules_poll.py
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from mailgate.ruleset import RulesSource
from mailgate.ruleset.files import templates_signature

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rules, templates = Path(tmp) / "rules", Path(tmp) / "templates"
        shutil.copytree(ROOT / "rules", rules)
        shutil.copytree(ROOT / "templates", templates)

        t0 = time.perf_counter()
        source = RulesSource(rules, templates)
        print(f"first load:                 {(time.perf_counter() - t0) * 1e3:8.1f} ms")
        time.sleep(2.5)  # past the racily-clean window of the files just copied
        source.poll()

        polls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3.0:
            source.poll()
            polls += 1
        per = (time.perf_counter() - t0) / polls
        print(f"poll, nothing changed:      {per * 1e6:8.1f} µs (mean of {polls} polls over 3 s)")

        n, t0 = 200, time.perf_counter()
        for _ in range(n):
            templates_signature(templates)
        print(f"templates' stat signature:  {(time.perf_counter() - t0) / n * 1e6:8.1f} µs (once a second)")

        routing = rules / "routing.toml"
        text = routing.read_text()
        times = []
        for i in range(10):
            routing.write_text(text + f"\n# edit {i}\n")
            t0 = time.perf_counter()
            source.poll()
            times.append(time.perf_counter() - t0)
        times.sort()
        print(f"poll that swaps an edit in: {times[len(times) // 2] * 1e3:8.1f} ms (median of 10)")


if __name__ == "__main__":
    main()
