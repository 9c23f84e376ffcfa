"""A claimed message is never stranded (issue 26): worker liveness by lease, recovery while running.

A worker claims rows under a random claim id and a lease it renews while it lives
(mailgate/store/lease.py). What the tests do, as an operator or a container runtime would:

- kill -9 the daemon and its worker while mail arrives over SMTP, and over IMAP from a real
  Dovecot, and restart at once in a fresh PID namespace, where the new worker gets the dead one's
  PID: every message ticketed exactly once, the stranded ones as soon as their lease ran out;
- a worker that died and was never reaped (a zombie, which `kill(pid, 0)` calls alive);
- a message whose worker dies every time it takes it: quarantined after `max_attempts`;
- a worker frozen past its lease: the rows another worker took are not processed twice;
- two daemons on one PostgreSQL, one killed: the other, already running, takes its rows.

Leases are a few seconds here (`[pipeline] lease_seconds`), and every wait is on state.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, RunningDaemon, Sink, free_port, make_mail, need, wait_until, write_config
from pg import backend, pg_url  # noqa: F401 - the fixtures
from sqlalchemy import select
from support.cli import cli
from support.daemon_process import DaemonProcess, wait_settled
from test_crash import HIGH_LIMITS, Mta

from mailgate.config import ConfigError, load_config
from mailgate.intake.accept import Acceptor, Envelope
from mailgate.pipeline.runner import Runner
from mailgate.store import inbox
from mailgate.store.db import Database
from mailgate.store.models import InboxItem, OutboxItem, Ticket, utc

UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc")
ENV = {"MAILGATE_SECRET": "test-secret"}


def lease_config(lease: float, renew: float) -> str:
    return f"{HIGH_LIMITS}\n[pipeline]\nlease_seconds = {lease}\nrenew_seconds = {renew}\n"


def need_namespaces() -> None:
    need(shutil.which("unshare") is not None and os.geteuid() == 0, "unshare --pid needs root and util-linux")


def processing(db: Database) -> list[tuple[int, str, datetime]]:
    """(id, claimed_by, claimed_until) of every row some worker holds."""
    with db.reading() as s:
        rows = s.execute(
            select(InboxItem.id, InboxItem.claimed_by, InboxItem.claimed_until).where(
                InboxItem.state == "processing"
            )
        ).all()
    return [(i, by, utc(until)) for i, by, until in rows]


def rows_by_id(db: Database) -> dict[int, InboxItem]:
    with db.session() as s:
        return {r.id: r for r in s.execute(select(InboxItem)).scalars()}


def tickets(db: Database) -> list[Ticket]:
    with db.session() as s:
        return list(s.execute(select(Ticket)).scalars())


def worker_pids(log: str) -> list[int]:
    return [int(p) for p in re.findall(r"worker process (\d+) started", log)]


def kill_while_processing(
    daemon: DaemonProcess, db: Database, timeout: float = 60
) -> list[tuple[int, str, datetime]]:
    """Wait until the worker holds rows, then kill -9 the daemon and its worker at once; returns
    the rows the dead worker left claimed (none if it finished them in the instant between)."""
    wait_until(lambda: bool(processing(db)), timeout=timeout, what="the worker holding rows")
    daemon.kill_all(signal.SIGKILL)
    return processing(db)


def check_stranded_taken_within_lease(
    db: Database, stranded: list[tuple[int, str, datetime]], slack: float
) -> None:
    """Each row a killed worker left was finished by another, soon after its lease ran out (the
    longest wait past the lease is printed, for docs/reliability.md)."""
    rows = rows_by_id(db)
    lag = max((utc(rows[i].processed_at) - until).total_seconds() for i, _, until in stranded)
    print(f"\n{len(stranded)} stranded row(s) processed at most {lag:.1f}s after their lease ran out")
    for row_id, by, until in stranded:
        row = rows[row_id]
        assert row.state == "done", (row_id, row.state, row.reason)
        assert row.attempts == 2, (row_id, row.attempts)  # the dead worker's try and the one that did it
        assert utc(row.processed_at) <= until + timedelta(seconds=slack), (
            f"row {row_id} (claimed by {by}) processed {utc(row.processed_at) - until} after its lease ran out"
        )


# -- the lease is configured and checked ---------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ("lease_seconds = 0", "pipeline.lease_seconds: must be more than 0"),
        (
            "lease_seconds = 10\nrenew_seconds = 6",
            "pipeline.renew_seconds: must be more than 0 and at most half",
        ),
        ('renew_seconds = "10"', "pipeline.renew_seconds: expected float"),
    ],
)
def test_a_lease_that_cannot_work_is_refused_naming_the_key(tmp_path: Path, table: str, error: str) -> None:
    path = write_config(tmp_path / "desk", extra=f"[pipeline]\n{table}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(path, env=ENV)


# -- kill -9 and restart in a fresh PID namespace --------------------------------------------------


@pytest.mark.slow
def test_kill_9_and_restart_in_a_new_pid_namespace_with_smtp_mail_in_flight(
    tmp_path: Path, sink: Sink
) -> None:
    """What a container restart does: the new worker gets the same PID as the killed one, which
    `kill(pid, 0)` took for the old worker alive; its rows were never processed (issue 26)."""
    need_namespaces()
    lease, n = 3.0, 80
    port = free_port()
    cfg = write_config(tmp_path / "desk", relay_port=sink.port, smtp_port=port, extra=lease_config(lease, 1))
    db = Database(load_config(cfg, env=ENV).database_url)
    daemon = DaemonProcess(cfg, port, prefix=UNSHARE)
    messages = [
        (f"c{i}@acme.com", make_mail(f"crash {i}", sender=f"c{i}@acme.com", message_id=f"<ns{i}@acme.com>"))
        for i in range(n)
    ]
    daemon.start()
    mta = Mta(port, messages, threads=4).start()
    stranded: list[tuple[int, str, datetime]] = []
    kills = 0
    try:
        # Each kill is at a moment the worker holds rows; it sometimes finishes them first.
        while not stranded and kills < 5 and mta.done < n:
            stranded = kill_while_processing(daemon, db)
            kills += 1
            daemon.start()  # at once, in a new PID namespace
        mta.join(timeout=90)
        wait_settled(db, timeout=60)
        sink.wait_for(2 * n, timeout=30)  # an acknowledgement and a triage notice per ticket
        log = daemon.log.read_text()
    finally:
        daemon.stop()
    assert stranded, f"none of {kills} kills left a claimed row behind: the test proved nothing"
    pids = worker_pids(log)
    # The same PID in every namespace (what fooled `kill(pid, 0)`). A worker killed moments after
    # it started may not have written its start line yet, so not every start is in the log.
    assert 1 <= len(pids) <= kills + 1 and len(set(pids)) == 1, pids
    check_stranded_taken_within_lease(db, stranded, slack=10.0)
    by_sender = Counter(t.requester for t in tickets(db))
    assert by_sender == {f"c{i}@acme.com": 1 for i in range(n)}  # every message, exactly once
    assert {(r.state, r.disposition) for r in rows_by_id(db).values()} == {("done", "ticket-created")}
    assert "recovered" in log and "stopped renewing its lease" in log
    acks = Counter(str(m["To"]) for m in sink.messages if m["Auto-Submitted"] == "auto-replied")
    assert set(acks) == set(by_sender)
    # The mail in flight at a kill may go twice (at-least-once); no more than a sender's pass.
    print(f"\n{kills} kill(s), {len(stranded)} row(s) stranded, {sum(acks.values()) - n} duplicate ack(s)")
    db.dispose()


@pytest.mark.slow
@pytest.mark.imap
def test_kill_9_and_restart_in_a_new_pid_namespace_with_imap_mail_in_flight(
    tmp_path: Path, sink: Sink, dovecot: Any
) -> None:
    """The IMAP half of issue 26: mail already \\Seen on the server (stored before the kill) is
    ticketed after the restart, once, with nothing left `processing`."""
    from imapclient import SEEN
    from support.imap import ENV as IMAP_ENV
    from support.imap import append, client, imap_table

    need_namespaces()
    lease, n = 3.0, 60
    port = free_port()
    extra = lease_config(lease, 1) + imap_table(dovecot, poll_seconds=1)
    cfg = write_config(tmp_path / "desk", relay_port=sink.port, smtp_port=port, extra=extra)
    db = Database(load_config(cfg, env=IMAP_ENV).database_url)
    daemon = DaemonProcess(cfg, port, env=IMAP_ENV, prefix=UNSHARE)
    append(
        dovecot,
        *(make_mail(f"imap {i}", sender=f"i{i}@acme.com", message_id=f"<im{i}@acme.com>") for i in range(n)),
    )
    daemon.start()
    stranded: list[tuple[int, str, datetime]] = []
    kills = 0
    try:
        while not stranded and kills < 5:
            with db.reading() as s:
                if len(s.execute(select(InboxItem.id).where(InboxItem.state == "done")).all()) >= n - 5:
                    break  # too late to catch the worker in the middle of a batch
            stranded = kill_while_processing(daemon, db)
            kills += 1
            daemon.start()
        wait_until(lambda: len(rows_by_id(db)) == n, timeout=60, what="every IMAP message stored")
        wait_settled(db, timeout=60)
        log = daemon.log.read_text()
    finally:
        daemon.stop()
    assert stranded, f"none of {kills} kills left a claimed row behind: the test proved nothing"
    assert len(set(worker_pids(log))) == 1
    check_stranded_taken_within_lease(db, stranded, slack=10.0)
    assert Counter(t.requester for t in tickets(db)) == {f"i{i}@acme.com": 1 for i in range(n)}
    with client(dovecot) as c:
        c.select_folder("INBOX", readonly=True)
        flags = c.get_flags(c.search(["ALL"]))
    assert len(flags) == n and all(SEEN in f for f in flags.values())
    db.dispose()


# -- a zombie worker, a poison message, a frozen worker -------------------------------------------

CLAIMER = textwrap.dedent(
    """
    import os, sys
    from mailgate.config import load_config
    from mailgate.store import inbox
    from mailgate.store.db import Database
    from mailgate.store.lease import Lease

    config = load_config(sys.argv[1], env={"MAILGATE_SECRET": "test-secret"})
    db = Database(config.database_url, upgrade=False)
    with db.session() as s:
        claimed = inbox.claim(s, 100, Lease.new("doomed", float(sys.argv[2]), 0.1), config.limits.max_attempts)
    print(len(claimed.ids), flush=True)
    os._exit(0)  # dies holding the rows, as a worker killed mid-batch does
    """
)


def claimer(cfg: Path, lease: float) -> subprocess.Popen[str]:
    """A worker process that claims every row it can and dies holding them."""
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMER, str(cfg), str(lease)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def accept(db: Database, config: Any, n: int, tag: str) -> None:
    Acceptor(db, config).accept_many(
        [(make_mail(f"{tag} {i}", sender=f"{tag}{i}@acme.com"), Envelope()) for i in range(n)]
    )


def test_a_zombie_workers_rows_are_taken_by_the_running_daemon_once_its_lease_runs_out(
    tmp_path: Path, sink: Sink
) -> None:
    lease = 3.0
    cfg = write_config(tmp_path / "desk", relay_port=sink.port, extra=lease_config(lease, 1))
    config = load_config(cfg, env=ENV)
    db = Database(config.database_url)
    accept(db, config, 5, "zombie")
    child = claimer(cfg, lease)
    assert child.stdout is not None and child.stdout.readline().strip() == "5"
    # Dead and never reaped: a zombie, which the old `kill(pid, 0)` check called alive.
    wait_until(
        lambda: Path(f"/proc/{child.pid}/stat").read_text().split(")")[1].split()[0] == "Z", what="a zombie"
    )
    os.kill(child.pid, 0)
    daemon = RunningDaemon(cfg)  # its worker starts while the zombie's lease still runs
    try:
        st = cli("--config", str(cfg), "status")
        assert st.returncode == 0, st.stdout  # claimed by a live lease: nothing wrong yet
        assert len(processing(db)) == 5
        wait_until(
            lambda: cli("--config", str(cfg), "status").returncode == 1 or not processing(db),
            timeout=lease + 5,
            what="the lease to run out",
        )
        daemon.settle(timeout=30)
        assert sorted(t.requester for t in daemon.tickets()) == sorted(
            f"zombie{i}@acme.com" for i in range(5)
        )
        assert {(r.state, r.attempts) for r in daemon.inbox()} == {("done", 2)}
        assert cli("--config", str(cfg), "status").returncode == 0
    finally:
        daemon.stop()
        child.communicate()  # reaped at last, its pipe closed
        db.dispose()


def test_status_names_a_stranded_row_its_worker_and_age_and_exits_1(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "desk", extra=lease_config(1, 0.5))
    config = load_config(cfg, env=ENV)
    db = Database(config.database_url)
    accept(db, config, 1, "stuck")
    child = claimer(cfg, 1)
    assert child.communicate()[0].strip() == "1"
    [(row_id, by, until)] = processing(db)
    assert by.split("/")[1] == "doomed" and str(child.pid) not in by.split("/")[2]

    def stranded() -> bool:
        # status exits 1 already because no daemon runs: wait for the stranded row's own line
        return "not alive" in cli("--config", str(cfg), "status").stdout

    wait_until(stranded, timeout=5, what="status to report the stranded row")
    out = cli("--config", str(cfg), "status").stdout
    assert re.search(rf"inbox row {row_id} claimed \d+s ago by {re.escape(by)}, not alive", out), out
    db.dispose()


def test_a_message_whose_worker_dies_every_time_is_quarantined_after_max_attempts(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "desk", extra=lease_config(0.5, 0.2))
    config = load_config(cfg, env=ENV)
    db = Database(config.database_url)
    accept(db, config, 1, "poison")
    for attempt in range(1, config.limits.max_attempts + 1):
        # A worker takes it (once the last one's lease ran out) and dies with it.
        def taken(attempt: int = attempt) -> bool:
            child = claimer(cfg, 0.5)
            out, _ = child.communicate()
            return out.strip() == "1"

        wait_until(taken, timeout=10, what=f"attempt {attempt}")
    runner = Runner(db, config)
    wait_until(lambda: rows_by_id(db)[1].state == "failed" or bool(runner.run_once()), what="the cap")
    row = rows_by_id(db)[1]
    assert (row.state, row.stage, row.attempts) == ("failed", "worker", 3)
    assert "on each of 3 attempts; quarantined" in (row.reason or "")
    assert tickets(db) == []
    failed = cli("--config", str(cfg), "inbox", "failed")
    assert failed.stdout.splitlines()[1].split()[0] == "1" and "worker" in failed.stdout, failed.stdout
    db.dispose()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_a_worker_frozen_past_its_lease_does_not_process_what_another_took(
    tmp_path: Path,
    backend: dict[str, str],  # noqa: F811
) -> None:
    """SIGSTOP, a paused VM, a database it could not reach: the lease runs out under a worker that
    is still there. Another takes its rows; when the first wakes it must not process them too
    (on PostgreSQL its transaction finds them by a row lock, not by renewing them: inbox.hold)."""
    cfg = write_config(tmp_path / "desk", extra=lease_config(0.5, 0.2))
    config = load_config(cfg, env={**ENV, **backend})
    db = Database(config.database_url)
    accept(db, config, 3, "frozen")
    first, second = Runner(db, config), Runner(db, config)
    with db.session() as s:
        ids = inbox.claim(s, 10, first.lease, config.limits.max_attempts).ids
    with db.session() as s:
        items = list(s.execute(select(InboxItem).order_by(InboxItem.id)).scalars())
        raws = inbox.raws(s, ids)
    assert second.run_once() == 0  # the first holds them
    wait_until(lambda: bool(second.run_once()), what="the second worker to take the rows after the lease")
    first.process_batch([(item, raws[item.id]) for item in items])  # the first wakes up
    assert sorted(t.requester for t in tickets(db)) == [f"frozen{i}@acme.com" for i in range(3)]
    with db.session() as s:
        acks = s.execute(select(OutboxItem.ticket_id).where(OutboxItem.kind == "acknowledgement")).all()
    assert len(acks) == 3
    assert {r.claimed_by for r in rows_by_id(db).values()} == {None}
    db.dispose()


def test_a_live_worker_keeps_its_rows_past_the_lease_by_renewing(tmp_path: Path) -> None:
    """A slow batch is not taken from a worker that is alive: its keeper renews the lease."""
    cfg = write_config(tmp_path / "desk", extra=lease_config(0.6, 0.2))
    config = load_config(cfg, env=ENV)
    db = Database(config.database_url)
    accept(db, config, 2, "slow")
    slow, other = Runner(db, config), Runner(db, config)
    with slow.keeper.held():
        with db.session() as s:
            inbox.claim(s, 10, slow.lease, config.limits.max_attempts)
        deadline = time.monotonic() + 3 * 0.6  # three leases long
        while time.monotonic() < deadline:
            assert other.run_once() == 0, "a live worker's rows were taken"
            time.sleep(0.1)
    wait_until(lambda: bool(other.run_once()), what="the rows after the slow worker stopped renewing")
    assert len(tickets(db)) == 2
    slow.stop()
    db.dispose()


# -- two daemons on one PostgreSQL ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_two_daemons_on_postgres_one_killed_the_other_takes_its_rows_without_a_restart(
    tmp_path: Path,
    sink: Sink,
    pg_url: str,  # noqa: F811
) -> None:
    need_namespaces()
    lease, n = 3.0, 60
    env = {"MAILGATE_DATABASE_URL": pg_url}
    ports = [free_port(), free_port()]
    daemons = [
        DaemonProcess(
            write_config(
                tmp_path / f"mx{i}", relay_port=sink.port, smtp_port=ports[i], extra=lease_config(lease, 1)
            ),
            ports[i],
            env=env,
            prefix=UNSHARE,
        )
        for i in range(2)
    ]
    db = Database(pg_url)
    for d in daemons:
        d.start()
    a, b = daemons
    wait_until(lambda: "pipeline claims as" in a.log.read_text(), timeout=30, what="a's worker")
    [token_a] = re.findall(r"pipeline claims as (\S+)", a.log.read_text())
    mta = Mta(
        ports[0],
        [
            (f"p{i}@acme.com", make_mail(f"pg {i}", sender=f"p{i}@acme.com", message_id=f"<pg{i}@acme.com>"))
            for i in range(n)
        ],
        threads=4,
    ).start()
    try:
        wait_until(
            lambda: any(by == token_a for _, by, _ in processing(db)), timeout=60, what="a holding rows"
        )
        a.kill_all(signal.SIGKILL)
        stranded = [row for row in processing(db) if row[1] == token_a]
        mta.port = ports[1]  # the MX record's other host
        mta.join(timeout=90)
        wait_settled(db, timeout=60)
        sink.wait_for(2 * n, timeout=30)
    finally:
        for d in daemons:
            d.stop()
    assert stranded, "a finished its rows before the kill: the test proved nothing"
    check_stranded_taken_within_lease(db, stranded, slack=10.0)
    assert b.starts == 1  # b was never restarted: it took a's rows on an ordinary claim
    assert "stopped renewing its lease" in b.log.read_text()
    assert Counter(t.requester for t in tickets(db)) == {f"p{i}@acme.com": 1 for i in range(n)}
    with db.session() as s:
        assert set(s.execute(select(OutboxItem.state)).scalars()) == {"sent"}
    db.dispose()
