"""Benchmark: SMTP load on loopback against a real `mailgate run`, and receipt-to-acknowledgement time.

Starts `mailgate run` as a child process on its own temporary desk directory (SQLite state, free
loopback ports) whose outgoing relay is an aiosmtpd sink inside this process. Concurrent smtplib
clients (one persistent connection each) offer new requests at fixed rates — 50, 100, 200, 400
msg/s — and then flat out. For each step it prints messages accepted per second, p50/p99/max time
from MAIL FROM to the 250 after DATA (which mailgate sends only after the commit), and p50/p99/max
time from that 250 to the acknowledgement arriving at the relay, matched by In-Reply-To = the
Message-ID we sent. Every loop is bounded in count and time; traffic goes only to 127.0.0.1.
Figures are printed, never asserted.

    .venv/bin/python bench/smtp_load.py --seconds 5 --clients 32
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import gen_corpus  # noqa: E402

_headers = BytesHeaderParser(policy=compat32)


class SinkHandler:
    """aiosmtpd handler of the relay sink: reports (In-Reply-To, arrival time, is-ack) for each mail."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process of this machine
        h = _headers.parsebytes(envelope.original_content)
        irt = str(h.get("In-Reply-To", "") or "").strip().strip("<>")
        self.conn.send((irt, now, str(h.get("Auto-Submitted", "")).startswith("auto-replied")))
        return "250 OK"


def _sink_main(port: int, conn: Any) -> None:
    """The relay sink in a process of its own, so that it answers mailgate's sender at once rather
    than waiting for the interpreter lock of this script's client threads (a real relay answers
    in well under a millisecond; a sink that doesn't would be measured as mailgate's delay)."""
    controller = Controller(SinkHandler(conn), hostname="127.0.0.1", port=port)
    controller.start()
    conn.send("ready")
    with contextlib.suppress(EOFError, OSError):
        conn.recv()  # until the parent closes its end
    controller.stop()


class AckSink:
    """The outgoing relay, run in a child process; this side keeps when each ack arrived."""

    def __init__(self, port: int) -> None:
        self.cond = threading.Condition()
        self.arrived: dict[str, float] = {}  # In-Reply-To id -> arrival time (monotonic)
        self.total = 0
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_sink_main, args=(port, child), daemon=True)
        self.proc.start()
        if not self.conn.poll(60) or self.conn.recv() != "ready":
            raise RuntimeError("the relay sink did not start")
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        while True:
            try:
                irt, now, is_ack = self.conn.recv()
            except (EOFError, OSError):
                return
            with self.cond:
                self.total += 1
                if irt and is_ack:
                    self.arrived.setdefault(irt, now)
                self.cond.notify_all()

    def stop(self) -> None:
        self.conn.close()
        self.proc.join(10)

    def wait_for(self, ids: list[str], timeout: float) -> int:
        """Wait (bounded) until acks for all `ids` arrived; returns how many did."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                got = sum(1 for i in ids if i in self.arrived)
                left = deadline - time.monotonic()
                if got == len(ids) or left <= 0:
                    return got
                self.cond.wait(min(left, 0.5))


@dataclass
class Step:
    rate: float | None  # offered msg/s; None = flat out
    count: int
    sent: list[tuple[str, float, float]] = field(default_factory=list)  # (msgid, start, end-at-250)
    refused: int = 0
    errors: list[str] = field(default_factory=list)


def make_messages(
    base: list[bytes], entries: list[gen_corpus.Entry], step_no: int, count: int
) -> list[tuple[str, str, bytes]]:
    """`count` distinct new requests from the base corpus: fresh Message-ID and a sender of their own,
    so no duplicate is dropped and no flood or loop limit holds an acknowledgement back."""
    out = []
    for i in range(count):
        j = i % len(base)
        e = entries[j]
        mid = f"load.{os.getpid()}.{step_no}.{i}@client.example"
        sender = f"load{step_no}x{i}@customers.example"
        raw = base[j].replace(f"<{e.message_id}>".encode(), f"<{mid}>".encode(), 1)
        raw = raw.replace(f"<{e.sender}>".encode(), f"<{sender}>".encode(), 1)
        # SMTP lines end in CRLF (RFC 5321 2.3.8); smtplib sends bytes as they are.
        out.append((mid, sender, raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")))
    return out


def drive(
    port: int, step: Step, messages: list[tuple[str, str, bytes]], clients: int, max_seconds: float
) -> None:
    """Offer `messages` at step.rate (open loop: message i is due at t0 + i/rate) from `clients`
    threads, each on one persistent SMTP connection. Stops at the count or after max_seconds."""
    lock = threading.Lock()
    nxt = [0]
    t0 = time.monotonic() + 0.2
    deadline = t0 + max_seconds

    def worker() -> None:
        conn: smtplib.SMTP | None = None
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(messages):
                    return
                due = t0 + (i / step.rate if step.rate else 0.0)
                now = time.monotonic()
                if due > deadline or now > deadline:
                    return
                if due > now:
                    time.sleep(due - now)
                mid, sender, raw = messages[i]
                try:
                    if conn is None:
                        conn = smtplib.SMTP("127.0.0.1", port, timeout=30)
                    start = time.monotonic()
                    refused = conn.sendmail(sender, ["support@localhost"], raw)
                    end = time.monotonic()
                except (smtplib.SMTPException, OSError) as exc:
                    with lock:
                        step.refused += 1
                        if len(step.errors) < 5:
                            step.errors.append(f"{type(exc).__name__}: {exc}")
                    conn = None
                    continue
                with lock:
                    if refused:
                        step.refused += 1
                    else:
                        step.sent.append((mid, start, end))
        finally:
            if conn is not None:
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    conn.quit()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max_seconds + 60)


@dataclass
class CpuSnapshot:
    """CPU seconds used so far by each party of the run, and by the whole machine."""

    intake: float  # `mailgate run` itself: the SMTP listener and its group commit
    worker: float  # its worker process: pipeline and sender
    clients: float  # this process: the SMTP clients (and the sink's reader thread)
    sink: float  # the relay sink's process
    busy: float  # the machine, all CPUs
    total: float
    wall: float


def cpu_snapshot(mailgate: int, sink: int) -> CpuSnapshot:
    busy, total = common.machine_busy()
    return CpuSnapshot(
        intake=common.cpu_seconds(mailgate),
        worker=sum(common.cpu_seconds(c) for c in common.children(mailgate)),
        clients=common.cpu_seconds(os.getpid()),
        sink=common.cpu_seconds(sink),
        busy=busy,
        total=total,
        wall=time.monotonic(),
    )


def cpu_line(a: CpuSnapshot, b: CpuSnapshot, messages: int) -> str:
    """Where a step's CPU went, a message: what 300 msg/s asks of a machine is this sum times 300
    CPU seconds a second, and the last figure says how much of the machine was busy meanwhile
    (with other work on it, more than these parties)."""
    n = max(messages, 1)
    parts = {
        "intake": b.intake - a.intake,
        "worker": b.worker - a.worker,
        "clients": b.clients - a.clients,
        "relay sink": b.sink - a.sink,
    }
    each = ", ".join(f"{k} {v / n * 1000:.2f}" for k, v in parts.items())
    wall = b.wall - a.wall
    cpus = (b.total - a.total) / wall if wall > 0 else 0.0
    busy = (b.busy - a.busy) / (b.total - a.total) if b.total > a.total else 0.0
    return (
        f"{'':>20}CPU ms a message: {each} (all {sum(parts.values()) / n * 1000:.2f}); "
        f"the machine {busy:.0%} busy of {cpus:.0f} CPUs over the step's {wall:.1f} s, to its last ack"
    )


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mailgate run exited {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mailgate run did not open its SMTP port")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", default="50,100,200,400,0", help="offered msg/s per step; 0 = flat out")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each fixed-rate step (default 5)")
    p.add_argument(
        "--flat-count", type=int, default=1500, help="messages in the flat-out step (default 1500)"
    )
    p.add_argument("--clients", type=int, default=32, help="concurrent SMTP clients (default 32)")
    p.add_argument("--ack-timeout", type=float, default=90.0, help="longest wait for acks after a step")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", help="run in this directory and keep it (state, log) for a look afterwards")
    p.add_argument(
        "--entry",
        help="run this Python file instead of `-m mailgate` (to measure a patch before it lands)",
    )
    args = p.parse_args(argv)
    common.header("smtp_load.py")
    corpus = gen_corpus.generate(
        600, args.seed, new_ratio=1.0, id_prefix="loadbase", max_tickets_per_sender=5
    )
    print(f"base corpus: {len(corpus.messages)} new requests, {sum(map(len, corpus.messages)) / 1e6:.1f} MB")
    # The client threads below measure the time to each 250: a short switch interval keeps a
    # thread that got its reply from waiting long for the interpreter lock (measuring error).
    sys.setswitchinterval(0.0005)
    relay_port = common.free_port()
    sink = AckSink(relay_port)
    failed = False
    sink_floor = 0  # mails the harness-floor step sent to the sink itself
    with contextlib.ExitStack() as stack:
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            d = args.keep
        else:
            d = stack.enter_context(tempfile.TemporaryDirectory(prefix="mailgate-bench-smtp-"))
        smtp_port = common.free_port()
        config = common.write_config(Path(d), relay_port=relay_port, smtp_port=smtp_port)
        log = open(Path(d) / "mailgate.log", "wb")  # noqa: SIM115 - closed below
        proc = common.start_run(d, config, log, args.entry)
        try:
            wait_port(smtp_port, proc)
            print(
                f"mailgate run pid {proc.pid} on 127.0.0.1:{smtp_port}, relay sink on 127.0.0.1:{relay_port}"
            )
            # One message first, answered end to end: the steps measure a daemon that is up (its
            # worker process started), not its start-up.
            warm = make_messages(corpus.messages, corpus.entries, 99, 1)
            drive(smtp_port, Step(None, 1), warm, 1, max_seconds=60)
            if not sink.wait_for([warm[0][0]], 60):
                print("warm-up message was never acknowledged")
                return 1
            floor_rate = next((float(r) for r in args.rates.split(",") if float(r)), None)
            if floor_rate:
                # The harness's own floor, in the same run: the same clients and mail at the first
                # rate against the relay sink, the same SMTP server as mailgate's (aiosmtpd and
                # mailgate's DATA reader) answering 250 at once. Time to 250 above this is the
                # commit's; below it mailgate's listener cannot go.
                floor = Step(floor_rate, int(floor_rate * args.seconds))
                drive(
                    relay_port,
                    floor,
                    make_messages(corpus.messages, corpus.entries, 90, floor.count),
                    args.clients,
                    max_seconds=args.seconds * 3,
                )
                lat = [end - start for _, start, end in floor.sent]
                if lat:
                    print(
                        f"{'harness floor':>18}: {len(lat)}/{floor.count} at {floor_rate:.0f} msg/s to the relay sink "
                        f"(mailgate's SMTP server answering 250 at once, same clients and mail): to 250: p50 "
                        f"{common.percentile(lat, 50) * 1000:.1f} ms, p99 {common.percentile(lat, 99) * 1000:.1f} ms, "
                        f"max {max(lat) * 1000:.1f} ms"
                    )
                sink_floor = sink.total
            for step_no, rate_s in enumerate(args.rates.split(",")):
                rate = float(rate_s) or None
                count = int(rate * args.seconds) if rate else args.flat_count
                step = Step(rate, count)
                messages = make_messages(corpus.messages, corpus.entries, step_no, count)
                before = cpu_snapshot(proc.pid, sink.proc.pid)
                drive(
                    smtp_port, step, messages, args.clients, max_seconds=(args.seconds * 3 if rate else 120)
                )
                if not step.sent:
                    print(f"step {rate_s}: nothing accepted; errors {step.errors}")
                    failed = True
                    continue
                lat = [end - start for _, start, end in step.sent]
                span = max(e for _, _, e in step.sent) - min(s for _, s, _ in step.sent)
                ids = [mid for mid, _, _ in step.sent]
                got = sink.wait_for(ids, args.ack_timeout)
                ack = [sink.arrived[mid] - end for mid, _, end in step.sent if mid in sink.arrived]
                label = f"{rate:.0f} msg/s offered" if rate else "flat out"
                print(
                    f"{label:>18}: {len(step.sent)}/{count} accepted in {span:.2f}s = {len(step.sent) / span:.1f} msg/s, "
                    f"{step.refused} refused; to 250: p50 {common.percentile(lat, 50) * 1000:.1f} ms, "
                    f"p99 {common.percentile(lat, 99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms; "
                    f"250 -> ack at relay ({got}/{len(ids)}): p50 {common.percentile(ack, 50) * 1000:.0f} ms, "
                    f"p99 {common.percentile(ack, 99) * 1000:.0f} ms, max {max(ack, default=float('nan')) * 1000:.0f} ms"
                )
                print(cpu_line(before, cpu_snapshot(proc.pid, sink.proc.pid), len(step.sent)))
                if step.errors:
                    print(f"  client errors, e.g. {step.errors}")
                failed = failed or got < len(ids) or bool(step.refused)
                sys.stdout.flush()
        finally:
            # Before it exits (ru_maxrss would include ours): the daemon and its worker process.
            hwm_kb = common.vm_hwm_kb(proc.pid)
            worker_kb = max((common.vm_hwm_kb(c) for c in common.children(proc.pid)), default=0)
            proc.send_signal(signal.SIGTERM)
            try:
                _, status, usage = os.wait4(proc.pid, 0) if proc.poll() is None else (0, 0, None)
            except ChildProcessError:
                usage = None
            proc.returncode = proc.returncode if proc.returncode is not None else 0
            log.close()
            sink.stop()
            if usage is not None:
                print(
                    f"mailgate run: CPU {usage.ru_utime + usage.ru_stime:.1f}s (with its worker), peak RSS "
                    f"{hwm_kb / 1024:.0f} MB intake + {worker_kb / 1024:.0f} MB worker; "
                    f"relay got {sink.total - sink_floor} mails from mailgate in all"
                )
            tail = (Path(d) / "mailgate.log").read_text(errors="replace").strip().splitlines()
            errors = [ln for ln in tail if " ERROR " in ln]
            if errors:
                print(f"mailgate logged {len(errors)} error(s), e.g. {errors[:2]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
