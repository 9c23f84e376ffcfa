"""The core behaviour on SQLite AND PostgreSQL, and scale-out on one PostgreSQL.

1. The foundation's end-to-end tests and the Jira seed (SUP-20 from first mail to Closed) are
   run again, unchanged, against a daemon on each backend: the same assertions must hold on both.
2. Two pipeline workers and two senders on one PostgreSQL never take the same row (SELECT … FOR
   UPDATE SKIP LOCKED), and ticket numbers stay unique under concurrency.
3. Three daemons on one PostgreSQL receive the same messages (duplicate deliveries from several
   MX hosts): one inbox row, one ticket and one acknowledgement per message.
"""

from __future__ import annotations

import inspect
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import test_foundation_e2e as foundation
import test_scenario_jira as jira
from conftest import Sink, make_mail, scenario_config, start_counter, write_config
from pg import EnvDaemon, backend, config_env, pg_url  # noqa: F401  (fixtures)
from sqlalchemy import select

FOUNDATION = [
    "test_new_mail_makes_ticket_and_acknowledgement",
    "test_replies_thread_by_tag_and_by_in_reply_to_alone",
    "test_in_reply_to_a_stored_message_threads",
    "test_duplicate_delivery_is_dropped_at_intake",
    "test_a_failing_message_is_quarantined_and_the_next_is_processed",
    "test_outbox_retries_after_relay_refuses",
]


@pytest.mark.postgres
@pytest.mark.parametrize("name", FOUNDATION)
def test_foundation_behaviour_on_each_backend(
    name: str,
    backend: dict[str, str],  # noqa: F811
    tmp_path: Path,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    fn = getattr(foundation, name)
    d = EnvDaemon(write_config(tmp_path / "desk", relay_port=sink.port), backend)
    try:
        assert d.db.is_sqlite == (not backend)
        extra: dict[str, Any] = {}
        wants = inspect.signature(fn).parameters
        if "monkeypatch" in wants:
            extra["monkeypatch"] = monkeypatch
        if "capsysbinary" in wants:
            extra["capsysbinary"] = capsysbinary
        fn(d, sink, **extra)
    finally:
        d.stop()


@pytest.mark.postgres
def test_jira_seed_agent_commands_on_each_backend(
    backend: dict[str, str],  # noqa: F811
    tmp_path: Path,
    sink: Sink,
) -> None:
    cfg = scenario_config(
        tmp_path / "hypertvx",
        relay_port=sink.port,
        desks=[("support@hypertvx.com", "SUP", "jira")],
        team=jira.TEAM,
        routing=jira.ROUTING,
    )
    d = EnvDaemon(cfg, backend, worker="process")  # as `mailgate run` runs it
    try:
        start_counter(d, "SUP", 20)
        jira.test_sup20_incident_from_first_mail_to_closed(d, sink)
    finally:
        d.stop()


# -- workers sharing one PostgreSQL ----------------------------------------------------------------


@pytest.mark.postgres
def test_two_workers_and_two_senders_never_take_the_same_row(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
    sink: Sink,
) -> None:
    from mailgate.config import load_config
    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.outbox.sender import Sender
    from mailgate.outbox.transports import SmtpTransport
    from mailgate.pipeline.runner import Runner
    from mailgate.store.db import Database
    from mailgate.store.models import InboxItem, Message, OutboxItem, Ticket

    n = 40
    config = load_config(
        # Loop limits high enough that the one triage agent hears of every one of the n tickets.
        write_config(
            tmp_path / "desk", relay_port=sink.port, extra="[limits]\nauto_mails_per_recipient = 1000"
        ),
        env=config_env({"MAILGATE_DATABASE_URL": pg_url}),
    )
    setup = Database(config.database_url)
    Acceptor(setup, config).accept_many(
        [
            (make_mail(f"request {i}", sender=f"c{i}@acme.com", message_id=f"<r{i}@acme.com>"), Envelope())
            for i in range(n)
        ]
    )

    # Two workers, each with its own engine and connection pool, as two processes would have.
    dbs = [Database(config.database_url, upgrade=False) for _ in range(2)]
    runners = [Runner(db, config, batch_size=4) for db in dbs]
    done: dict[int, list[int]] = {0: [], 1: []}
    start = threading.Barrier(2)

    def work(i: int) -> None:
        runner = runners[i]
        real = runner.begin

        def recording(item: Any, raw: bytes | None) -> Any:
            done[i].append(item.id)
            return real(item, raw)

        runner.begin = recording  # type: ignore[method-assign]
        start.wait()
        while runner.run_once():
            pass

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    assert done[0] and done[1], "both workers must have had a share of the work"
    assert not set(done[0]) & set(done[1]), "a row was processed by both workers"
    assert sorted(done[0] + done[1]) == sorted(set(done[0] + done[1]))
    with setup.session() as s:
        rows = s.execute(select(InboxItem)).scalars().all()
        assert len(rows) == n
        assert {(r.state, r.disposition, r.attempts) for r in rows} == {("done", "ticket-created", 1)}
        numbers = [t.number for t in s.execute(select(Ticket)).scalars()]
        per_inbox = Counter(m.inbox_id for m in s.execute(select(Message)).scalars())
        pending = s.execute(select(OutboxItem.message_id)).scalars().all()
    assert len(numbers) == n and len(set(numbers)) == n  # unique; gaps would be tolerated
    assert set(per_inbox.values()) == {1}
    assert len(pending) == 2 * n  # an acknowledgement and a triage notice per ticket

    # Two senders on the same outbox: every mail reaches the relay exactly once.
    senders = [Sender(db, config, SmtpTransport(config.relay), batch_size=5) for db in dbs]
    start2 = threading.Barrier(2)

    def send(i: int) -> None:
        start2.wait()
        while senders[i].run_once():
            pass

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    got = Counter(str(m["Message-ID"]).strip("<>") for m in sink.wait_for(2 * n))
    assert set(got) == set(pending)
    assert max(got.values()) == 1, f"sent twice: {[k for k, v in got.items() if v > 1]}"
    with setup.session() as s:
        assert set(s.execute(select(OutboxItem.state)).scalars()) == {"sent"}
    for sender in senders:
        sender.transport.close()
    for db in (*dbs, setup):
        db.dispose()


@pytest.mark.postgres
def test_three_daemons_on_one_database_take_each_message_once(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
    sink: Sink,
) -> None:
    """Several MX hosts hand the same message to different mailgate processes at the same time."""
    daemons = [
        EnvDaemon(
            write_config(tmp_path / f"mx{i}", relay_port=sink.port),
            {"MAILGATE_DATABASE_URL": pg_url},
            worker="process",  # as `mailgate run`: each daemon with its worker process
        )
        for i in range(3)
    ]
    try:
        n = 30
        raws = [
            make_mail(f"outage {i}", sender=f"user{i}@acme.com", message_id=f"<mx{i}@acme.com>")
            for i in range(n)
        ]
        replies: list[str] = []
        lock = threading.Lock()

        def push(raw: bytes, port: int, sender: str) -> None:
            import smtplib

            raw = raw.replace(b"\n", b"\r\n")
            for _ in range(5):  # an MTA retries a 4xx; each one is counted below
                with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
                    smtp.ehlo()
                    smtp.mail(sender)
                    smtp.rcpt("support@localhost")
                    code, text = smtp.data(raw)
                with lock:
                    replies.append(f"{code} {text.decode()}")
                if code < 400:
                    return

        threads = [
            threading.Thread(target=push, args=(raw, d.port, f"user{i}@acme.com"))
            for i, raw in enumerate(raws)
            for d in daemons
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        # No temporary failures: concurrent batches insert in one order, so they never deadlock.
        assert len(replies) == 3 * n and all(r.startswith("250") for r in replies), replies
        assert sum("already have it" in r for r in replies) == 2 * n
        for d in daemons:
            d.settle(timeout=30)
        assert len(daemons[0].inbox()) == n
        tickets = daemons[0].tickets()
        assert sorted(t.subject for t in tickets) == sorted(f"outage {i}" for i in range(n))
        acks = sink.wait_for(2 * n, timeout=20)  # acknowledgement + triage notice per ticket
        per_requester = Counter(str(m["To"]) for m in acks if str(m["Auto-Submitted"]) == "auto-replied")
        assert per_requester == {f"user{i}@acme.com": 1 for i in range(n)}
        # every daemon did part of the work or at least agrees on the result
        keys = Counter(str(m["Subject"]).split("]")[0] for m in acks)
        assert set(keys.values()) == {2}
    finally:
        for d in daemons:
            d.stop()
