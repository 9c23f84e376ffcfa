"""Shared helpers for the bench scripts: a desk directory, a cached corpus, a measured child
process, the manifest check against the database, and the lines every script prints.

Benchmarks print figures and the exact command that reproduces them; they never assert timings.
Nothing here changes mailgate: the database is only read (to verify the work was done), except by
the scripts that pre-fill a fresh benchmark database on purpose (scale.py).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = (
    str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() else sys.executable
)
CACHE = Path(tempfile.gettempdir()) / "mailgate-bench-cache"

# The checkout first: an editable install made before mailgate/__init__.py existed maps `mailgate`
# to a namespace package (no __file__) when the working directory is elsewhere.
sys.path[:0] = [str(BENCH), str(REPO)]
import gen_corpus  # noqa: E402  (a sibling script, imported as a module)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def header(script: str) -> None:
    """The first lines of every report: the command that reproduces it, when, and on what commit."""
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", f"bench/{script}", *sys.argv[1:]])
    print(f"command: cd {REPO} && {cmd}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, {os.cpu_count()} cores")
    precompile()
    sys.stdout.flush()


def precompile() -> None:
    """Byte-compile the checkout's mailgate and bench code before anything is measured, as
    `pip install` does for an installed package and for the libraries in .venv. The checkout is
    an editable install, and where PYTHONDONTWRITEBYTECODE is set (this machine's shells) Python
    never writes the .pyc files: every measured start compiled some fifty modules again, about
    0.1 s that an installed mailgate never pays, while the floor's libraries came compiled."""
    import compileall

    for tree in (REPO / "mailgate", BENCH):
        compileall.compile_dir(str(tree), quiet=1)
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        print("bytecode: mailgate/ and bench/ compiled ahead (PYTHONDONTWRITEBYTECODE is set here)")


def write_config(
    root: Path,
    *,
    relay_port: int | None = None,
    smtp_port: int | None = None,
    database_url: str | None = None,
) -> Path:
    """A desk directory as an admin would have it (the format of tests/conftest.py write_config)."""
    import shutil

    root.mkdir(parents=True, exist_ok=True)
    for name in ("rules", "templates"):
        if not (root / name).exists():
            shutil.copytree(REPO / name, root / name)
    outgoing = (
        f'[outgoing]\ntransport = "smtp"\nhost = "127.0.0.1"\nport = {relay_port}\n'
        "retry_base_seconds = 0.2\nretry_max_seconds = 1.0\n"
        if relay_port
        else '[outgoing]\ntransport = "file"\n'
    )
    db = f'[database]\nurl = "{database_url}"\n\n' if database_url else ""
    text = (
        'admin_address = "admin@example.com"\n\n'
        f"{db}"
        f'[[desks]]\naddress = "{gen_corpus.DESK_ADDRESS}"\nkey = "{gen_corpus.DESK_KEY}"\nname = "Support"\n\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port or free_port()}\n\n'
        f"{outgoing}"
    )
    path = root / "config.toml"
    path.write_text(text)
    return path


def corpus(
    n: int, seed: int = 1, *, first_number: int = 1, tag: str = "[{key}]", eml: bool = False
) -> tuple[Path, dict[str, Any]]:
    """The mbox and manifest for these parameters, generated once and kept in the temp directory."""
    flavour = "" if tag == "[{key}]" else "-" + "".join(c for c in tag if c.isalnum())
    out = CACHE / f"corpus-n{n}-s{seed}-f{first_number}{flavour}{'-eml' if eml else ''}"
    mbox, manifest = out / "corpus.mbox", out / "manifest.json"
    if not manifest.exists():
        gen_corpus.write(gen_corpus.generate(n, seed, first_number=first_number, tag=tag), out, eml=eml)
    return mbox, json.loads(manifest.read_text())


def children(pid: int) -> list[int]:
    """The child processes of a running process (Linux /proc)."""
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
    except OSError:
        pass
    return out


def vm_hwm_kb(pid: int) -> int:
    """The peak resident set of a running process (VmHWM, reset at exec).

    Not ru_maxrss: Linux carries the parent's high-water mark into a forked child across exec, so
    a child of a big benchmark process would report the parent's size."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) a running process has used so far, its own threads only
    (/proc/<pid>/stat utime and stime; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    """One child process: wall time, its own CPU time (wait4 rusage) and peak RSS (VmHWM, sampled)."""

    argv: list[str]
    rc: int
    wall: float
    user: float
    sys: float
    maxrss_mb: float
    stdout: str
    stderr: str

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def run_measured(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 900
) -> Measured:
    """Run a child to completion; its rusage comes from wait4 on its pid, so only it is counted."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd)
        deadline = t0 + timeout
        hwm_kb = 0
        while True:
            hwm_kb = max(hwm_kb, vm_hwm_kb(proc.pid))
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
        out.seek(0)
        err.seek(0)
        return Measured(
            argv,
            proc.returncode,
            wall,
            usage.ru_utime,
            usage.ru_stime,
            hwm_kb / 1024,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def start_run(directory: str, config: Path, log: Any, entry: str | None = None) -> subprocess.Popen[bytes]:
    """`mailgate run` on the desk in `directory` (or `entry`, a Python file run instead of
    `-m mailgate`, to measure a patch before it lands), its output to `log`."""
    return subprocess.Popen(
        [PYTHON, *([entry] if entry else ["-m", "mailgate"])]
        + ["--config", str(config), "--log-level", "WARNING", "run"],
        env=mailgate_env(),
        cwd=directory,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def mailgate_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env["MAILGATE_SECRET"] = "bench-secret"
    env["MAILGATE_WEB_PORT"] = "0"  # the web listener on any free port (web_load.py sets its own)
    env["PYTHONHASHSEED"] = "0"
    env["PYTHONPATH"] = str(REPO)  # see the note at the top: the checkout's package, not a namespace
    env.update(extra or {})
    return env


def ingest_argv(config: Path, mbox: Path) -> list[str]:
    return [
        PYTHON,
        "-m",
        "mailgate",
        "--config",
        str(config),
        "--log-level",
        "WARNING",
        "ingest",
        "--mbox",
        str(mbox),
    ]


def verify(database_url: str, manifest: dict[str, Any]) -> list[str]:
    """Check the database against the manifest; returns the problems (empty when all is right).

    Every message is stored on the ticket the manifest names, the number of tickets is the number
    of new requests, and each new ticket has exactly one acknowledgement in the outbox.
    """
    from sqlalchemy import func, select

    from mailgate.store.db import Database
    from mailgate.store.models import InboxItem, Message, OutboxItem, Ticket

    db = Database(database_url, upgrade=False)
    problems: list[str] = []
    first = int(manifest["params"]["first_number"])  # type: ignore[index]
    try:
        with db.session() as s:
            ids = [e["message_id"] for e in manifest["messages"]]
            where = {}
            for chunk in range(0, len(ids), 500):
                rows = s.execute(
                    select(Message.message_id, Ticket.key)
                    .join(Ticket, Ticket.id == Message.ticket_id)
                    .where(Message.message_id.in_(ids[chunk : chunk + 500]))
                ).all()
                where.update({mid: key for mid, key in rows})
            wrong = [
                f"{e['message_id']} on {where.get(e['message_id'])}, expected {e['ticket']}"
                for e in manifest["messages"]
                if where.get(e["message_id"]) != e["ticket"]
            ]
            if wrong:
                problems.append(f"{len(wrong)} message(s) not on their ticket, e.g. {wrong[:3]}")
            states = dict(s.execute(select(InboxItem.state, func.count()).group_by(InboxItem.state)).all())
            if states.get("done", 0) != manifest["count"] or set(states) - {"done"}:
                problems.append(f"inbox states {states}, expected {manifest['count']} done")
            new_keys = {e["ticket"] for e in manifest["messages"] if e["kind"] == "new"}
            made = set(s.execute(select(Ticket.key).where(Ticket.number >= first)).scalars())
            if made != new_keys:
                problems.append(
                    f"{len(made)} tickets made, {len(new_keys)} expected; "
                    f"extra {sorted(made - new_keys)[:3]}, missing {sorted(new_keys - made)[:3]}"
                )
            acks = Counter(
                s.execute(
                    select(Ticket.key)
                    .join(OutboxItem, OutboxItem.ticket_id == Ticket.id)
                    .where(OutboxItem.kind == "acknowledgement", Ticket.number >= first)
                ).scalars()
            )
            bad = {k: acks.get(k, 0) for k in new_keys if acks.get(k, 0) != 1}
            extra = sum(1 for k in acks if k not in new_keys)
            if bad or extra:
                problems.append(
                    f"{len(bad)} new ticket(s) without exactly one acknowledgement (e.g. "
                    f"{list(bad.items())[:3]}), {extra} acknowledged ticket(s) not new"
                )
    finally:
        db.dispose()
    return problems


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]
