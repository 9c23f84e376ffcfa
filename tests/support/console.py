"""The installed `mailgate` console script, run as a person runs it: a new process, a clean
environment, in a pipe (`mailgate`) or on a terminal (`on_terminal`, a pseudo-terminal on
standard error, where progress bars are drawn). Shared by the README commands test and the
command-line views test (issue 25)."""

from __future__ import annotations

import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

MAILGATE = shutil.which("mailgate", path=str(Path(sys.executable).parent))
# No MAILGATE_* setting of the developer's shell reaches the command, except the web port: every
# daemon a test starts listens on a free one, never on the default 8025 that another desk or a
# parallel test run may hold (a fixed port made a test fail beside a running `mailgate run`).
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")} | {
    "MAILGATE_WEB_PORT": "0"
}


@dataclass
class Run:
    args: tuple[str, ...]
    code: int
    out: str
    err: str
    raw: bytes = field(repr=False)


def mailgate(
    cwd: Path,
    *args: str,
    stdin: bytes | None = None,
    ok: tuple[int, ...] = (0,),
    env: dict[str, str] | None = None,
) -> Run:
    """Run the console script in a new process; it must exit with one of `ok` and no traceback."""
    assert MAILGATE, f"no mailgate console script next to {sys.executable}"
    proc = subprocess.run(
        [MAILGATE, *args],
        cwd=cwd,
        env={**CLEAN_ENV, **(env or {})},
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    run = Run(
        args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
        proc.stdout,
    )
    assert "Traceback" not in run.err and "Traceback" not in run.out, run
    assert run.code in ok, run
    return run


def on_terminal(cwd: Path, *args: str, ok: tuple[int, ...] = (0,)) -> Run:
    """Run the console script with standard error on a pseudo-terminal (as in a person's
    terminal) and standard output in a pipe; `err` is everything drawn on the terminal."""
    assert MAILGATE
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [MAILGATE, *args], cwd=cwd, env=CLEAN_ENV, stdout=subprocess.PIPE, stderr=follower
    )
    os.close(follower)
    drawn = read_terminal(leader)
    assert proc.stdout is not None
    with proc.stdout:
        out = proc.stdout.read()
    code = proc.wait(120)
    run = Run(args, code, out.decode(errors="replace"), drawn.decode(errors="replace"), out)
    assert "Traceback" not in run.err and "Traceback" not in run.out, run
    assert run.code in ok, run
    return run


def read_terminal(leader: int) -> bytes:
    """Everything drawn on a pseudo-terminal until the process closes it; closes `leader`."""
    drawn = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(leader)
    return bytes(drawn)


def wait_for_db(db: Path, query: str, want: object, timeout: float = 60.0) -> None:
    """Wait until `query` on the SQLite database returns the row `want` (read-only)."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            got = conn.execute(query).fetchone()
        if got == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"{query}: {got}, waited for {want}")


class InitDesk:
    """A desk made by `mailgate init` in `root`/desk (SUP at support@localhost), its SMTP port a
    free one, `extra_config` appended to its config.toml; run with the console script, its SQLite
    database read directly (read-only) for what no command prints."""

    def __init__(self, root: Path, *, extra_config: str = "") -> None:
        from conftest import free_port

        self.root = root
        mailgate(root, "init", "desk", "--desk-address", "support@localhost", "--key", "SUP")
        self.dir = root / "desk"
        self.config = self.dir / "config.toml"
        self.port = free_port()
        text = re.sub(r"(?m)^port = 2525$", f"port = {self.port}", self.config.read_text(), count=1)
        self.config.write_text(text + extra_config)
        self.db = self.dir / "state" / "mailgate.db"
        self._mails = 0

    def cli(self, *args: str, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None) -> Run:
        return mailgate(self.root, "--config", str(self.config), *args, ok=ok, env=env)

    def ingest(self, raw: bytes) -> Run:
        """One message, from a file: stored and processed by `mailgate ingest FILE`."""
        self._mails += 1
        path = self.root / f"mail-{self._mails}.eml"
        path.write_bytes(raw)
        return self.cli("ingest", str(path))

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql, params).fetchall()
