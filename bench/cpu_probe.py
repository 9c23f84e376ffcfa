"""How independent this machine's cores are: a CPU-bound loop (unpickling and JSON, as the worker
does) timed alone, then with one and with two other processes burning CPU beside it.

On two vCPUs that are really two cores, one neighbour costs nothing and two halve the speed. On
vCPUs that share a physical core, one neighbour already slows the loop: a second process (the
parse helper) then helps less than a core's worth, and what it does slows the worker.

    .venv/bin/python bench/cpu_probe.py
"""

from __future__ import annotations

import json
import multiprocessing
import pickle
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def _burn(until: float) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1


def _loop_ms(rounds: int = 15) -> float:
    data = [{f"k{i}": ("v" * 50, i, [1, 2, 3]) for i in range(200)} for _ in range(50)]
    blobs = [pickle.dumps(d) for d in data]
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for b in blobs:
            pickle.loads(b)
        for d in data:
            json.dumps(d)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def main() -> int:
    common.header("cpu_probe.py")
    ctx = multiprocessing.get_context("spawn")
    results = {}
    for neighbours in (0, 1, 2):
        procs = [ctx.Process(target=_burn, args=(time.monotonic() + 30,)) for _ in range(neighbours)]
        for p in procs:
            p.start()
        time.sleep(0.5 if procs else 0)
        results[neighbours] = _loop_ms()
        for p in procs:
            p.terminate()
            p.join()
    alone = results[0]
    for n, ms in results.items():
        print(f"{n} busy neighbour(s): {ms:.1f} ms a round ({ms / alone:.2f}x alone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
