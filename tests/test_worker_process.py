"""`mailgate run` works mail off in a worker process of its own (daemon.py): the intake answers
SMTP while the worker, in another interpreter, makes tickets and sends mail. These tests run the
real command and hold it to what an operator relies on: mail flows end to end, a worker that
dies is replaced and its mail still processed, a killed daemon leaves no worker behind, and
SIGTERM stops both cleanly."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from pathlib import Path

from conftest import Sink, body_of, deliver, free_port, make_mail, reply, write_config
from support.daemon_process import DaemonProcess


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def _worker_pids(log: Path, timeout: float = 30.0, count: int = 1) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [int(p) for p in re.findall(r"worker process (\d+) started", log.read_text())]
        if len(pids) >= count:
            return pids
        time.sleep(0.1)
    raise AssertionError(f"no worker process started:\n{log.read_text()[-3000:]}")


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _outbox_settled(db: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db, timeout=30) as conn:
            (busy,) = conn.execute(
                "SELECT count(*) FROM outboxitem WHERE state IN ('pending', 'sending')"
            ).fetchone()
        if not busy:
            return
        time.sleep(0.05)
    raise AssertionError("outbox did not settle")


def test_the_worker_process_does_the_work_is_replaced_when_it_dies_and_dies_with_the_daemon(
    tmp_path: Path, sink: Sink
) -> None:
    port = free_port()
    daemon = DaemonProcess(write_config(tmp_path / "desk", relay_port=sink.port, smtp_port=port), port)
    daemon.start()
    try:
        [worker] = _worker_pids(daemon.log)
        assert worker != daemon.proc.pid and _alive(worker)  # type: ignore[union-attr]

        # A new request: ticket and acknowledgement, made by the worker process.
        deliver(port, make_mail("Printer on fire", "Third floor.\n", message_id="<w1@acme.com>"))
        [ack] = sink.wait_to("customer1@acme.com", 1, timeout=30)
        assert str(ack["Subject"]) == "[SUP-1] Printer on fire"
        # The requester's reply threads onto it: no new ticket, no second acknowledgement.
        [notice] = [m for m in sink.wait_for(2, timeout=30) if "customer1@acme.com" not in str(m["To"])]
        agent = str(notice["To"])
        deliver(port, reply(ack, "customer1@acme.com", "It is out now.\n"))
        [note] = sink.wait_to(agent, 2, timeout=30)[1:]
        assert "[SUP-1]" in str(note["Subject"]) and "It is out now." in body_of(note)
        assert len(sink.to("customer1@acme.com")) == 1

        # The worker dies on its own (a bug, the OOM killer): the intake keeps accepting, and a new
        # worker takes the mail that arrived meanwhile.
        os.kill(worker, signal.SIGKILL)
        assert _gone(worker)
        deliver(
            port, make_mail("VPN down", "Since noon.\n", sender="bob@acme.com", message_id="<w2@acme.com>")
        )
        [ack2] = sink.wait_to("bob@acme.com", 1, timeout=30)
        assert str(ack2["Subject"]) == "[SUP-2] VPN down"
        replacement = _worker_pids(daemon.log, count=2)[-1]
        assert replacement != worker and _alive(replacement)
        assert "exited with code -9: starting a new one" in daemon.log.read_text()

        # SIGKILL of the daemon takes its worker with it: no orphan left to race the next start.
        # (First let the sender record what it sent: the one mail in flight at a SIGKILL may go
        # twice, which tests/test_crash.py counts; here we count only clean work.)
        _outbox_settled(tmp_path / "desk" / "state" / "mailgate.db")
        assert daemon.signal(signal.SIGKILL) == -signal.SIGKILL
        assert _gone(replacement), "the worker outlived the daemon"

        # A clean restart: SIGTERM stops intake and worker, exit 0, nothing sent twice.
        daemon.start()
        [third] = _worker_pids(daemon.log, count=3)[2:]
        deliver(port, make_mail("Mouse broken", "Left button.\n", sender="carol@acme.com"))
        sink.wait_to("carol@acme.com", 1, timeout=30)
        assert daemon.signal(signal.SIGTERM) == 0
        assert _gone(third)
        assert f"worker process {third} stopped" in daemon.log.read_text()
        assert len(sink.to("customer1@acme.com")) == 1 and len(sink.to("bob@acme.com")) == 1
    finally:
        daemon.stop()


def test_a_taken_port_is_a_clear_error_and_leaves_no_worker_behind(tmp_path: Path) -> None:
    """The listener starts after the worker process: when the port is taken, `mailgate run` must
    say so and exit, stopping the worker it had started (multiprocessing would otherwise wait for
    it at exit, and the command would hang for ever)."""
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path / "desk", smtp_port=port)
        env = {**os.environ, "MAILGATE_SECRET": "test-secret"}
        env.pop("MAILGATE_CONFIG", None)
        proc = subprocess.run(
            [sys.executable, "-m", "mailgate", "--config", str(config), "run"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 71, proc.stderr[-2000:]
    assert "mailgate: cannot run:" in proc.stderr and "address already in use" in proc.stderr
    started = [int(p) for p in re.findall(r"worker process (\d+) started", proc.stderr)]
    assert all(not _alive(pid) for pid in started)
