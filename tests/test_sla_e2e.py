"""SLA due times on real tickets: stored when mail makes the ticket, paused while an agent's
`#status pending` reply waits on the customer, resumed with the time already used, shown by
`mailgate tickets show`. The clock of the jobs is injected; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import reply
from sqlalchemy import select
from support.sla_desk import CUSTOMER, TECH, Desk, make_desk

from mailgate.store.models import Event, utc


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = make_desk(tmp_path / "desk")
    yield d
    d.db.dispose()


def test_due_times_are_stored_when_the_ticket_is_made(desk: Desk) -> None:
    t = desk.mail("Mail server down")
    created = utc(t.created_at)
    assert created is not None
    assert utc(t.first_response_due) == created + timedelta(hours=4)
    assert utc(t.resolution_due) == created + timedelta(hours=8)

    from mailgate.cli import main

    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(["--config", str(desk.config.root / "config.toml"), "tickets", "show", "SUP-1"]) == 0
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    text = out.getvalue()
    assert f"(due {(created + timedelta(hours=4)):%Y-%m-%d %H:%M} UTC)" in text
    assert "sla         policy 'standard': first response running" in text


def test_the_resolution_clock_pauses_while_waiting_for_the_customer(desk: Desk) -> None:
    t = desk.mail("Export fails with error 42")
    created = utc(t.created_at)
    assert created is not None
    # The assignee answers by mail and asks a question: first response given, ticket Pending.
    [note] = desk.mails("new-ticket")
    desk.deliver(reply(note, TECH, "#status pending\nWhich version of the client do you run?"), TECH)
    t = desk.ticket("SUP-1")
    assert t.status == "pending" and t.first_response_at is not None
    assert utc(t.first_response_due) == created + timedelta(hours=4)  # kept: it was met
    assert t.resolution_due is None  # paused, with time left
    with desk.db.session() as s:
        paused_at = utc(
            s.execute(select(Event.created_at).where(Event.kind == "status")).scalar_one()  # type: ignore[call-overload]
        )
    assert paused_at is not None
    used = paused_at - created

    # Three days waiting: far past the 8h target, but nobody is warned or escalated.
    desk.clock.now = paused_at + timedelta(days=3)
    assert desk.run("sla_check") == 0
    assert desk.sent("sla-warning") == [] and desk.sent("sla-escalation") == []

    # The customer answers and the ticket is open again: the clock resumes with what was left.
    resumed = desk.set_status("SUP-1", "open")
    desk.clock.advance(minutes=1)
    assert desk.run("sla_check") == 0
    assert utc(desk.ticket("SUP-1").resolution_due) == resumed + timedelta(hours=8) - used

    # 75% of 8h = 6h used in all (before the pause and after the resume): the assignee is warned.
    desk.clock.now = resumed + timedelta(hours=6) - used + timedelta(minutes=1)
    assert desk.run("sla_check") == 1
    assert desk.sent("sla-warning") == [("sla-warning", TECH, "SUP-1")]
    assert desk.sent("auto-closed") == [] and CUSTOMER not in {r for _, r, _ in desk.sent("sla-warning")}
