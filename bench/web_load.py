"""Does the web side slow the intake? SMTP round trips to `mailgate run` with its web listener
idle, then while a separate process keeps CLIENTS page clients busy (the request page, /metrics
and /healthz in turn, back to back). Prints the figures; asserts nothing.

The web side shares the intake process (and its interpreter lock) with the SMTP listener by
design (docs/web.md); this measures what that costs under a sustained page load.

    .venv/bin/python bench/web_load.py [--messages 100] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import re
import smtplib
import subprocess
import sys
import tempfile
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from common import PYTHON, free_port, header, mailgate_env, percentile, write_config

LOADER = """
import sys, threading, time, urllib.request, json
urls, clients = sys.argv[2:], int(sys.argv[1])
out, stop = [], threading.Event()
def run():
    while not stop.is_set():
        for u in urls:
            t = time.perf_counter(); urllib.request.urlopen(u, timeout=30).read()
            out.append((u.split("/")[3], (time.perf_counter() - t) * 1000))
threads = [threading.Thread(target=run) for _ in range(clients)]
[t.start() for t in threads]
sys.stdin.read(); stop.set(); [t.join() for t in threads]
print(json.dumps(out))
"""


def mail(i: int) -> bytes:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "customer1@acme.com", "support@localhost", f"bench {i}"
    m["Message-ID"] = f"<web-load-{time.time_ns()}-{i}@bench>"
    m.set_content("Cannot access the backend.\n")
    return m.as_bytes()


def round_trips(port: int, n: int, start: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("customer1@acme.com", ["support@localhost"], mail(start + i))
        out.append((time.perf_counter() - t) * 1000)
    return out


def line(what: str, xs: list[float]) -> str:
    return f"{what}: n={len(xs)} median {percentile(xs, 50):.1f} ms, p95 {percentile(xs, 95):.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    header("web_load.py")
    root = Path(tempfile.mkdtemp(prefix="mailgate-web-load-"))
    smtp, web = free_port(), free_port()
    config = write_config(root / "desk", smtp_port=smtp)
    env = mailgate_env({"MAILGATE_WEB_PORT": str(web)})
    daemon = subprocess.Popen([PYTHON, "-m", "mailgate", "--config", str(config), "run"], env=env, cwd=root)
    try:
        base = f"http://127.0.0.1:{web}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                round_trips(smtp, 1, 0)
                break
            except OSError:
                time.sleep(0.2)
        outgoing = root / "desk" / "state" / "outgoing"
        view = None
        while view is None and time.monotonic() < deadline:
            for f in outgoing.glob("*.eml") if outgoing.exists() else []:
                body = message_from_bytes(f.read_bytes(), policy=policy.default).get_body(("plain",))
                found = re.search(r"View request: (\S+)", body.get_content() if body else "")
                view = view or (found.group(1) if found else None)
            time.sleep(0.1)
        assert view, "no acknowledgement with a View request link"
        idle = round_trips(smtp, args.messages, 1)
        loader = subprocess.Popen(
            [PYTHON, "-c", LOADER, str(args.clients), view, f"{base}/metrics", f"{base}/healthz"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1)
        busy = round_trips(smtp, args.messages, 1 + args.messages)
        pages = json.loads(loader.communicate("")[0])
        print(line("SMTP round trip, web idle", idle))
        print(line(f"SMTP round trip, {args.clients} page clients busy", busy))
        for kind in ("r", "metrics", "healthz"):
            print(line(f"GET /{kind} under that load", [ms for k, ms in pages if k == kind]))
    finally:
        daemon.terminate()
        daemon.wait(60)


if __name__ == "__main__":
    sys.exit(main())
