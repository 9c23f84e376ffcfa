"""Benchmark: peak memory of `mailgate run` under a burst of large mail (issue 24: peak RSS ≤ 200 MB).

A desk's worst ordinary day is not a flood of small requests but a burst of big ones: a scanner
that mails every page as a PDF, a customer who sends the same 20 MB video to every address, an
attacker who sends the largest mail the listener allows as fast as it can. This starts `mailgate
run` on its own temporary desk (SQLite, free loopback ports, its outgoing relay an aiosmtpd sink)
and sends `--count` new requests, each carrying one attachment of `--mb` MiB of random bytes
(base64 on the wire: just under the default 25 MB `max_message_size` at 18 MiB), from
`--clients` concurrent SMTP clients. It waits until every acknowledgement reached the relay and
prints the peak resident set (VmHWM) of the daemon (the SMTP intake) and of its worker process,
and how long the burst took. Figures are printed, never asserted.

    .venv/bin/python bench/big_mail.py --count 30 --mb 18 --clients 4
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from smtp_load import AckSink, Step, drive, wait_port  # noqa: E402


def big_request(i: int, mb: float, rng: random.Random) -> tuple[str, str, bytes]:
    """(Message-ID, sender, raw) of a new request with one attachment of `mb` MiB, CRLF lines."""
    mid = f"big.{os.getpid()}.{i}@client.example"
    sender = f"big{i}@customers.example"
    blob = rng.randbytes(int(mb * 2**20))
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")  # 76-character lines
    head = (
        f"From: Big Sender {i} <{sender}>\r\nTo: support@localhost\r\nSubject: scan {i} attached\r\n"
        f"Message-ID: <{mid}>\r\nDate: Mon, 07 Dec 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="BIG"\r\n\r\n'
        "--BIG\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease see the scan attached.\r\n"
        "--BIG\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        f'Content-Disposition: attachment; filename="scan-{i}.pdf"\r\n\r\n'
    ).encode()
    return mid, sender, head + b64 + b"--BIG--\r\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=30, help="large requests in the burst (default 30)")
    p.add_argument("--mb", type=float, default=18.0, help="attachment size in MiB (default 18)")
    p.add_argument("--clients", type=int, default=4, help="concurrent SMTP clients (default 4)")
    p.add_argument("--ack-timeout", type=float, default=300.0)
    p.add_argument("--entry", help="run this Python file instead of `-m mailgate`")
    args = p.parse_args(argv)
    common.header("big_mail.py")
    rng = random.Random(1)
    messages = [big_request(i, args.mb, rng) for i in range(args.count)]
    wire_mb = sum(len(raw) for _, _, raw in messages) / 2**20
    print(
        f"burst: {args.count} requests of {len(messages[0][2]) / 2**20:.1f} MiB on the wire ({wire_mb:.0f} MiB)"
    )
    relay_port = common.free_port()
    sink = AckSink(relay_port)
    failed = False
    with tempfile.TemporaryDirectory(prefix="mailgate-bench-big-") as d:
        smtp_port = common.free_port()
        config = common.write_config(Path(d), relay_port=relay_port, smtp_port=smtp_port)
        log_path = Path(d) / "mailgate.log"
        with open(log_path, "wb") as log:
            proc = common.start_run(d, config, log, args.entry)
            try:
                wait_port(smtp_port, proc)
                base_intake = common.vm_hwm_kb(proc.pid) / 1024
                t0 = time.monotonic()
                step = Step(None, len(messages))
                drive(smtp_port, step, messages, args.clients, max_seconds=args.ack_timeout)
                accepted = time.monotonic() - t0
                ids = [mid for mid, _, _ in step.sent]
                got = sink.wait_for(ids, args.ack_timeout)
                done = time.monotonic() - t0
                intake_mb = common.vm_hwm_kb(proc.pid) / 1024
                worker_mb = max((common.vm_hwm_kb(c) for c in common.children(proc.pid)), default=0) / 1024
                intake_cpu = common.cpu_seconds(proc.pid)
                worker_cpu = sum(common.cpu_seconds(c) for c in common.children(proc.pid))
                print(
                    f"accepted {len(step.sent)}/{len(messages)} in {accepted:.1f} s, {step.refused} refused"
                    f"{f' (e.g. {step.errors[0]})' if step.errors else ''}; acknowledged {got}/{len(ids)}"
                    f" after {done:.1f} s"
                )
                print(
                    f"peak RSS: intake {intake_mb:.0f} MB (at start {base_intake:.0f} MB), worker {worker_mb:.0f} MB"
                )
                print(f"CPU: intake {intake_cpu:.1f} s, worker {worker_cpu:.1f} s")
                failed = got < len(ids) or not ids
            finally:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(60)
                if proc.poll() is None:
                    proc.kill()
                sink.stop()
        if failed:
            print("log tail:\n" + log_path.read_text(errors="replace")[-3000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
