"""Crash: `mailgate run` is killed with SIGKILL at random moments while mail arrives over SMTP.

The daemon runs as a real subprocess on SQLite; the relay is an aiosmtpd sink in this process;
two client threads behave like sending MTAs (a message is theirs until it got a 250: on a refused
connection or a 4xx they try again). The test kills and restarts the daemon several times at
seeded random moments, then lets the last one settle and checks the promise:

- every message that got a 250 is on exactly one ticket, and no ticket exists twice;
- every ticket's acknowledgement reached the relay;
- duplicate acknowledgements (the one mail in flight at a SIGKILL may go twice) are counted and
  reported; with SIGTERM (a clean restart) there must be none.
"""

from __future__ import annotations

import os
import random
import signal
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import Sink, free_port, make_mail, write_config
from sqlalchemy import select
from support.daemon_process import DaemonProcess, wait_settled

HIGH_LIMITS = "[limits]\nauto_mails_per_recipient = 10000\nnew_tickets_per_sender = 10000"


class Mta:
    """Client threads that each deliver their share of messages, retrying until a 250."""

    def __init__(self, port: int, messages: list[tuple[str, bytes]], threads: int = 2) -> None:
        self.port = port
        self.messages = messages
        self.accepted: dict[str, str] = {}  # sender -> reply text
        self.attempts = 0
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(messages[i::threads],), daemon=True)
            for i in range(threads)
        ]

    def start(self) -> Mta:
        for t in self.threads:
            t.start()
        return self

    def join(self, timeout: float) -> None:
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "the clients never got every message accepted"

    def _run(self, share: list[tuple[str, bytes]]) -> None:
        for sender, raw in share:
            wire = raw.replace(b"\n", b"\r\n")
            while True:
                with self.lock:
                    self.attempts += 1
                try:
                    with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as smtp:
                        smtp.ehlo()
                        smtp.mail(sender)
                        code, _ = smtp.rcpt("support@localhost")
                        if code >= 400:
                            raise smtplib.SMTPResponseException(code, b"rcpt")
                        code, text = smtp.data(wire)
                    if code == 250:
                        with self.lock:
                            self.accepted[sender] = text.decode()
                        break
                except (OSError, smtplib.SMTPException):
                    pass  # refused, reset, 421 or 451: the message is still ours, try again
                time.sleep(0.1)
            time.sleep(0.02)

    @property
    def done(self) -> int:
        with self.lock:
            return len(self.accepted)


def crash_run(tmp_path: Path, sink: Sink, sig: int, *, n: int, kills: int, seed: int) -> dict[str, Any]:
    """Send n messages while delivering `sig` `kills` times; returns what was found at the end."""
    from mailgate.config import load_config
    from mailgate.store.db import Database
    from mailgate.store.models import InboxItem, Ticket

    rng = random.Random(seed)
    port = free_port()
    cfg = write_config(tmp_path / "desk", relay_port=sink.port, smtp_port=port, extra=HIGH_LIMITS)
    daemon = DaemonProcess(cfg, port)
    messages = [
        (
            f"c{i}@acme.com",
            make_mail(f"crash {i}", sender=f"c{i}@acme.com", message_id=f"<crash{i}@acme.com>"),
        )
        for i in range(n)
    ]
    points = sorted(rng.sample(range(3, n - 3), kills))
    daemon.start()
    mta = Mta(port, messages).start()
    try:
        for point in points:
            while mta.done < point:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere in intake, pipeline or sender
            daemon.signal(sig)
            time.sleep(rng.uniform(0.0, 0.5))  # the clients keep knocking on a closed port
            daemon.start()
        mta.join(timeout=90)
        config = load_config(cfg, env={"MAILGATE_SECRET": "test-secret"})
        db = Database(config.database_url, upgrade=False)
        wait_settled(db, timeout=60)
        sink.wait_for(2 * n, timeout=20)  # an acknowledgement and a triage notice per ticket
        with db.session() as s:
            tickets = list(s.execute(select(Ticket)).scalars())
            rows = list(s.execute(select(InboxItem)).scalars())
        db.dispose()
    finally:
        daemon.stop()
    acks = Counter(
        str(m["Subject"]).split("]")[0].strip("[")
        for m in sink.messages
        if m["Auto-Submitted"] == "auto-replied"
    )
    return {
        "mta": mta,
        "tickets": tickets,
        "rows": rows,
        "acks": acks,
        "duplicate_acks": sum(v - 1 for v in acks.values()),
        "starts": daemon.starts,
        "log": daemon.log.read_text(),
    }


def check_nothing_lost(result: dict[str, Any], n: int) -> None:
    mta, tickets, rows = result["mta"], result["tickets"], result["rows"]
    assert len(mta.accepted) == n  # the clients retried until every message was accepted
    by_sender = Counter(t.requester for t in tickets)
    assert set(by_sender) == set(mta.accepted), "a message that got a 250 has no ticket"
    assert max(by_sender.values()) == 1, f"duplicated tickets: {[a for a, k in by_sender.items() if k > 1]}"
    assert sorted(t.subject for t in tickets) == sorted(f"crash {i}" for i in range(n))
    assert len({t.key for t in tickets}) == n
    assert len(rows) == n and {r.state for r in rows} == {"done"}, [(r.id, r.state, r.reason) for r in rows]
    assert {r.disposition for r in rows} == {"ticket-created"}
    assert set(result["acks"]) == {t.key for t in tickets}, (
        "a ticket's acknowledgement never reached the relay"
    )


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, sink: Sink) -> None:
    n, kills = 60, 4
    result = crash_run(
        tmp_path, sink, signal.SIGKILL, n=n, kills=kills, seed=int(os.environ.get("CRASH_SEED", 8))
    )
    check_nothing_lost(result, n)
    assert result["starts"] == kills + 1
    # The mail in flight at a SIGKILL may reach the relay twice (sent, not yet recorded): that is
    # the at-least-once price; it is bounded by the number of kills, and printed for the report.
    log = result["log"]
    print(
        f"\nSIGKILL x{kills}, {n} messages, {result['mta'].attempts} SMTP attempts: "
        f"{result['duplicate_acks']} duplicate acknowledgement(s); "
        f"{log.count('recovered ')} inbox and {log.count('were being sent when a process died')} outbox "
        "recoveries after a kill"
    )
    assert result["duplicate_acks"] <= kills


@pytest.mark.slow
def test_sigterm_restarts_send_nothing_twice(tmp_path: Path, sink: Sink) -> None:
    n, restarts = 40, 3
    result = crash_run(tmp_path, sink, signal.SIGTERM, n=n, kills=restarts, seed=3)
    check_nothing_lost(result, n)
    assert result["duplicate_acks"] == 0
    assert "received SIGTERM" in result["log"]
