"""Outages: the relay is down or refusing, a permanent 5xx, and a storage failure while processing.

Mail waits in the outbox, retried with growing delays, and all of it goes out exactly once when
the relay is back; the outage is logged once, not once per try. A permanent refusal is recorded
and shown by `mailgate outbox failed`, and `mailgate outbox retry` sends it once the relay takes
it. A message that cannot be processed (attachment storage broken) is quarantined with stage and
reason, shown by `mailgate inbox failed`, and `mailgate inbox retry` makes its ticket once fixed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, make_mail, write_config
from sqlalchemy import select
from support.cli import cli

from mailgate.store.models import InboxItem, OutboxItem


def outbox(d: RunningDaemon) -> list[OutboxItem]:
    with d.db.session() as s:
        return list(s.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars())


def wait_until(cond, timeout: float = 15.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_relay_down_then_refusing_then_back_delivers_everything_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Sink()  # not started: the relay is down, connections are refused
    d = RunningDaemon(write_config(tmp_path / "desk", relay_port=relay.port))
    try:
        caplog.set_level(logging.INFO, logger="mailgate.outbox.sender")
        for i in range(5):
            d.send(make_mail(f"during the outage {i}", sender=f"u{i}@acme.com"))
        d.settle(outbox=False)
        # Retried (with backoff) while the relay is unreachable; nothing is lost or given up.
        wait_until(lambda: max(i.attempts for i in outbox(d)) >= 3, what="three tries at the relay")
        items = outbox(d)
        assert len(items) == 10 and {i.state for i in items} <= {"pending", "sending"}
        assert any("cannot reach relay" in (i.last_error or "") for i in items)

        relay.handler.reply = "451 4.3.0 greylisted, try again later"
        relay.start()  # up, but refusing for a while
        wait_until(
            lambda: any("451" in (i.last_error or "") for i in outbox(d)), what="a 451 recorded on the outbox"
        )
        assert relay.messages == []
        relay.handler.reply = None  # the relay is back
        got = relay.wait_for(10, timeout=20)
        d.settle()
        assert len(outbox(d)) == 10 and {i.state for i in outbox(d)} == {"sent"}  # nothing more to come
        ids = Counter(str(m["Message-ID"]) for m in relay.messages)
        assert len(ids) == 10 and set(ids.values()) == {1}, "every mail once, none twice"
        assert sorted(str(m["Subject"]) for m in got if str(m["To"]).startswith("u")) == sorted(
            f"[SUP-{n}] during the outage {n - 1}" for n in range(1, 6)
        )
        assert {i.state for i in outbox(d)} == {"sent"}
        # Logged once per outage, not once per try (STYLE.md habit 9).
        warnings = [r for r in caplog.records if "cannot hand mail to the relay" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert any("relay is back" in r.getMessage() for r in caplog.records)
    finally:
        d.stop()
        relay.stop()


def test_permanent_refusal_is_shown_by_outbox_failed_and_retried_by_outbox_retry(
    tmp_path: Path, sink: Sink
) -> None:
    cfg = write_config(tmp_path / "desk", relay_port=sink.port)
    d = RunningDaemon(cfg)
    try:
        sink.handler.reply = "550 5.1.1 <c@acme.com>: mailbox unavailable"
        d.send(make_mail("to a mailbox that is gone", sender="c@acme.com"), sender="c@acme.com")
        d.settle()
        wait_until(lambda: {i.state for i in outbox(d)} == {"failed"}, what="both mails failed")
        failed = cli("--config", str(cfg), "outbox", "failed")
        assert failed.returncode == 0
        header, *lines = failed.stdout.strip().splitlines()
        assert header.split()[:3] == ["ID", "STATE", "KIND"]
        assert len(lines) == 2 and all(" failed " in line and "550" in line for line in lines)
        assert any("acknowledgement" in line and "c@acme.com" in line for line in lines)
        assert sink.messages == []

        sink.handler.reply = None  # the mailbox exists again
        ack_id = next(i.id for i in outbox(d) if i.kind == "acknowledgement")
        again = cli("--config", str(cfg), "outbox", "retry", str(ack_id))
        assert (again.returncode, again.stdout.strip()) == (0, "1 mail(s) queued again")
        [ack] = sink.wait_to("c@acme.com", 1)
        assert ack["Subject"] == "[SUP-1] to a mailbox that is gone"
        assert (
            len(cli("--config", str(cfg), "outbox", "failed").stdout.strip().splitlines()) == 1 + 1
        )  # header
        assert cli("--config", str(cfg), "outbox", "retry").returncode == 0  # the rest
        d.settle()
        assert {i.state for i in outbox(d)} == {"sent"}
        # Nothing left to retry is no failure (a cron job running it must not alert): exit 0,
        # saying so. An id that is not failed is refused (exit 1) with the reason.
        rest = cli("--config", str(cfg), "outbox", "retry")
        assert (rest.returncode, rest.stdout.strip()) == (0, "no failed mail: nothing to queue again")
        sent = cli("--config", str(cfg), "outbox", "retry", str(ack_id))
        assert sent.returncode == 1 and f"outbox item {ack_id} is sent, not failed" in sent.stderr
        assert len(sink.to("c@acme.com")) == 1
    finally:
        d.stop()


def test_storage_failure_quarantines_and_inbox_retry_recovers(tmp_path: Path, sink: Sink) -> None:
    cfg = write_config(tmp_path / "desk", relay_port=sink.port)
    d = RunningDaemon(cfg)
    try:
        # The attachment store is broken: its directory is a file (a full or misconfigured disk
        # looks the same to the code; root ignores permission bits, so use a file).
        store = d.config.state_dir / "attachments"
        store.write_text("not a directory")
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "c@acme.com", "support@localhost", "logs attached"
        msg["Message-ID"] = "<att1@acme.com>"
        msg.set_content("see the log")
        msg.add_attachment(b"line 1\nline 2\n", maintype="text", subtype="plain", filename="app.log")
        d.send(msg.as_bytes(), sender="c@acme.com")
        d.send(make_mail("no attachment, unaffected", sender="e@acme.com"), sender="e@acme.com")
        d.settle()
        bad, good = d.inbox()
        # Stored before the batch's transaction (outside the write lock): quarantined there.
        assert (bad.state, bad.stage) == ("failed", "attachments")
        assert "Error" in (bad.reason or "") and good.disposition == "ticket-created"
        assert [t.subject for t in d.tickets()] == ["no attachment, unaffected"]

        failed = cli("--config", str(cfg), "inbox", "failed")
        assert failed.returncode == 0
        header, line = failed.stdout.strip().splitlines()
        assert (
            header.split()[0] == "ID"
            and line.split()[0] == str(bad.id)
            and "failed" in line
            and "attachments:" in line
        )
        assert cli("--config", str(cfg), "inbox", "retry", str(good.id)).returncode == 1  # not quarantined

        store.unlink()  # fixed
        again = cli("--config", str(cfg), "inbox", "retry", str(bad.id))
        assert again.returncode == 0, again.stdout
        d.daemon.runner.wake.set()
        d.settle()
        with d.db.session() as s:
            row = s.get(InboxItem, bad.id)
        assert row is not None and (row.state, row.disposition) == ("done", "ticket-created")
        assert sorted(t.subject for t in d.tickets()) == ["logs attached", "no attachment, unaffected"]
        assert any(p.is_file() for p in store.rglob("*"))  # the attachment is stored now
        assert cli("--config", str(cfg), "inbox", "failed").stdout.strip() == "no failed messages"
        sink.wait_to("c@acme.com", 1)
    finally:
        d.stop()
