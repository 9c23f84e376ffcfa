"""`mailgate run` as a child process on a loopback port, and waiting until it has worked off
everything (shared by the crash, hostile-input and worker-process tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select


class DaemonProcess:
    """`python -m mailgate --config CFG run` as a child process, restartable on the same port."""

    def __init__(
        self, config_path: Path, port: int, env: dict[str, str] | None = None, *, prefix: tuple[str, ...] = ()
    ) -> None:
        """`prefix` runs the command under another, e.g. `unshare --pid --fork --mount-proc` (a
        container restart); the daemon then gets a process group of its own, which `kill_all`
        kills with everything in it."""
        self.config_path = config_path
        self.prefix = prefix
        self.port = port
        self.env = {**os.environ, "MAILGATE_SECRET": "test-secret", **(env or {})}
        self.env.pop("MAILGATE_CONFIG", None)
        self.log = config_path.parent / "daemon.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "mailgate", "--config", str(self.config_path), "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=bool(self.prefix),
            )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"daemon exited: {self.log.read_text()[-3000:]}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"daemon did not listen in {timeout}s: {self.log.read_text()[-3000:]}")

    def signal(self, sig: int, timeout: float = 40.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill_all(self, sig: int | None = None) -> None:
        """`sig` (SIGKILL) to the daemon's whole process group (with a `prefix`): daemon and
        worker at once."""
        assert self.proc is not None and self.prefix
        os.killpg(self.proc.pid, signal.SIGKILL if sig is None else sig)
        self.proc.wait(timeout=40)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.prefix:
                self.kill_all(signal.SIGTERM)
            else:
                self.signal(signal.SIGTERM)


def settled(db: Any) -> bool:
    from mailgate.store.models import InboxItem, OutboxItem

    with db.session() as s:
        busy = s.execute(
            select(func.count()).select_from(InboxItem).where(InboxItem.state.in_(["new", "processing"]))
        ).scalar_one()
        busy += s.execute(
            select(func.count())
            .select_from(OutboxItem)
            .where(or_(OutboxItem.state.in_(["pending", "sending"])))
        ).scalar_one()
    return not busy


def wait_settled(db: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if settled(db):
            return
        time.sleep(0.2)
    raise AssertionError("the restarted daemon did not finish the work left behind")
