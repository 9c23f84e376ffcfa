"""The periodic jobs' decisions, run against an injected clock with marks stored between runs.

`run` plays the scheduler and the store: it calls a job, then writes the actions' marks (and the
effect of AutoClose) back into the ticket, exactly as the caller must.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from mailgate.domain.sla import StatusInterval, TimerSettings, parse_sla
from mailgate.domain.timers import (
    AutoClose,
    DeferredReview,
    Escalate,
    RemindCustomer,
    RemindTriage,
    TicketFacts,
    Warn,
    auto_close_resolved,
    deferred_review,
    digests,
    sla_check,
    triage_reminder,
    waiting_customer,
)

BERLIN = ZoneInfo("Europe/Berlin")
RULES = parse_sla(
    """
[calendars.office]
tz = "Europe/Berlin"
hours = { mon-fri = ["09:00-17:00"] }

[[policies]]
name = "P2"
match = { priority = 2 }
first_response = "4h"
resolution = "1d"

[timers]
calendar = "office"
unanswered_reminder_hours = 4
auto_close_resolved_days = 5
waiting_customer_reminder_days = 3
waiting_customer_close_days = 7
deferred_review_days = 14
digest_hour = 8
"""
)
TIMERS: TimerSettings = RULES.timers
MONDAY = datetime(2026, 6, 1, 9, tzinfo=BERLIN)
DAY = timedelta(days=1)


def ticket(created: datetime = MONDAY, category: str = "open", **kw: Any) -> TicketFacts:
    fields: dict[str, Any] = {
        "key": "SUP-20",
        "created_at": created,
        "status": {"open": "Open", "waiting": "Pending", "closed": "Completed"}[category],
        "category": category,
        "status_since": created,
        "intervals": (StatusInterval(created, None, category),),  # type: ignore[arg-type]
        "priority": 2,
        "group": "IT",
        "assignee": "tech1",
    }
    fields.update(kw)
    return TicketFacts(**fields)


def run(
    job: Callable[..., Sequence[Any]], facts: TicketFacts, cfg: Any, now: datetime
) -> tuple[list[Any], TicketFacts]:
    actions = list(job(facts, cfg, now))
    marks = {name: value for action in actions for name, value in action.marks}
    if any(isinstance(a, AutoClose) for a in actions):
        marks.update(category="closed", status="Closed", status_since=now, resolved_since=None)
    return actions, replace(facts, **marks)


def every(start: datetime, end: datetime, step: timedelta) -> Iterator[datetime]:
    while start <= end:
        yield start
        start += step


def simulate(
    job: Callable[..., Sequence[Any]], facts: TicketFacts, cfg: Any, times: Iterator[datetime]
) -> list[tuple[datetime, Any]]:
    seen = []
    for now in times:
        actions, facts = run(job, facts, cfg, now)
        seen += [(now, a) for a in actions]
    return seen


def test_warning_then_escalation_exactly_once_each_over_repeated_runs() -> None:
    # The SLA job runs every 15 minutes for three days on an unanswered P2 ticket.
    seen = simulate(sla_check, ticket(), RULES, every(MONDAY, MONDAY + 3 * DAY, timedelta(minutes=15)))
    got = [
        (type(a).__name__, a.target, getattr(a, "level", 0), now.astimezone(BERLIN).strftime("%a %H:%M"))
        for now, a in seen
    ]
    assert got == [
        ("Warn", "first_response", 0, "Mon 12:00"),  # 75% of 4h
        ("Escalate", "first_response", 1, "Mon 13:15"),  # first run after the 13:00 due: the lead
        ("Warn", "resolution", 0, "Mon 15:00"),  # 75% of 8h
        ("Escalate", "first_response", 2, "Mon 15:15"),  # 150% of 4h: the admins
        ("Escalate", "resolution", 1, "Mon 17:15"),
        ("Escalate", "resolution", 2, "Tue 13:15"),  # 150% of 8h business time
    ]
    escalation = seen[1][1]
    assert escalation.due == datetime(2026, 6, 1, 13, tzinfo=BERLIN) and escalation.tag == "escalated"
    assert escalation.group == "IT" and escalation.marks == (("first_response_escalated_at", seen[1][0]),)


def test_downtime_through_warning_and_breach_gives_one_escalation_per_target() -> None:
    after_downtime = MONDAY + 2 * DAY
    actions, facts = run(sla_check, ticket(), RULES, after_downtime)
    assert [(type(a), a.target) for a in actions] == [(Escalate, "first_response"), (Escalate, "resolution")]
    assert facts.first_response_warned_at == facts.first_response_escalated_at == after_downtime
    assert run(sla_check, facts, RULES, after_downtime)[0] == []
    assert run(sla_check, facts, RULES, after_downtime + DAY)[0] == []


def test_answered_waiting_or_closed_tickets_are_not_chased() -> None:
    answered = ticket(first_response_at=MONDAY + timedelta(hours=1))
    assert run(sla_check, answered, RULES, MONDAY + timedelta(hours=7))[0] == [
        Warn("SUP-20", "resolution", datetime(2026, 6, 1, 17, tzinfo=BERLIN), "P2", "tech1", "IT",
             (("resolution_warned_at", MONDAY + timedelta(hours=7)),))
    ]  # fmt: skip
    asked = MONDAY + timedelta(hours=1)
    waiting = ticket(
        first_response_at=asked,
        category="waiting",
        status_since=asked,
        intervals=(StatusInterval(MONDAY, asked, "open"), StatusInterval(asked, None, "waiting")),
    )
    assert run(sla_check, waiting, RULES, MONDAY + 10 * DAY)[0] == []  # paused: 1h used
    assert run(sla_check, ticket(category="closed"), RULES, MONDAY + 10 * DAY)[0] == []
    assert run(sla_check, ticket(priority=None), RULES, MONDAY + 10 * DAY)[0] == []  # no policy, no SLA


def test_the_triage_angel_is_reminded_once_after_four_business_hours() -> None:
    friday = datetime(2026, 6, 5, 15, tzinfo=BERLIN)  # 2h left on Friday, 2h more on Monday
    seen = simulate(
        triage_reminder, ticket(friday), TIMERS, every(friday, friday + 4 * DAY, timedelta(hours=1))
    )
    assert len(seen) == 1
    now, reminder = seen[0]
    assert isinstance(reminder, RemindTriage) and now == datetime(2026, 6, 8, 11, tzinfo=BERLIN)
    assert reminder.unanswered_for == timedelta(hours=4) and reminder.marks == (("triage_reminded_at", now),)
    replied = ticket(friday, first_response_at=friday + timedelta(minutes=30))
    assert run(triage_reminder, replied, TIMERS, friday + 4 * DAY)[0] == []


def test_resolved_tickets_close_after_five_days_once() -> None:
    resolved = MONDAY + timedelta(hours=3)
    facts = ticket(category="closed", status_since=resolved, resolved_since=resolved)
    seen = simulate(auto_close_resolved, facts, TIMERS, every(MONDAY, MONDAY + 10 * DAY, timedelta(hours=6)))
    assert [(now, a) for now, a in seen] == [
        (MONDAY + 5 * DAY + timedelta(hours=6), AutoClose("SUP-20", "resolved", resolved))
    ]
    off = replace(TIMERS, auto_close_resolved_days=None)
    assert run(auto_close_resolved, facts, off, MONDAY + 100 * DAY)[0] == []


def test_waiting_customer_gets_one_reminder_then_closes() -> None:
    waiting = ticket(category="waiting", first_response_at=MONDAY)
    seen = simulate(waiting_customer, waiting, TIMERS, every(MONDAY, MONDAY + 10 * DAY, timedelta(hours=1)))
    assert [(now - MONDAY, type(a)) for now, a in seen] == [(3 * DAY, RemindCustomer), (7 * DAY, AutoClose)]
    assert seen[0][1].close_at == MONDAY + 7 * DAY and seen[1][1].reason == "no_customer_reply"


def test_waiting_customer_after_downtime_keeps_the_promised_grace() -> None:
    waiting = ticket(category="waiting", first_response_at=MONDAY)
    actions, facts = run(waiting_customer, waiting, TIMERS, MONDAY + 10 * DAY)
    assert actions == [
        RemindCustomer("SUP-20", MONDAY, MONDAY + 14 * DAY, (("customer_reminded_at", MONDAY + 10 * DAY),))
    ]
    assert run(waiting_customer, facts, TIMERS, MONDAY + 13 * DAY)[0] == []
    assert [type(a) for a in run(waiting_customer, facts, TIMERS, MONDAY + 14 * DAY)[0]] == [AutoClose]
    # The customer answered and the agent asked again: the old reminder does not count.
    again = replace(facts, status_since=MONDAY + 11 * DAY)
    assert [type(a) for a in run(waiting_customer, again, TIMERS, MONDAY + 14 * DAY)[0]] == [RemindCustomer]
    # Deferred tickets wait on nobody.
    assert run(waiting_customer, replace(waiting, deferred_since=MONDAY), TIMERS, MONDAY + 20 * DAY)[0] == []


def test_deferred_review_every_fourteen_days_and_once_after_downtime() -> None:
    deferred = ticket(category="waiting", deferred_since=MONDAY, status="Deferred")
    seen = simulate(deferred_review, deferred, TIMERS, every(MONDAY, MONDAY + 30 * DAY, timedelta(hours=12)))
    assert [now - MONDAY for now, _ in seen] == [14 * DAY, 28 * DAY]
    assert isinstance(seen[0][1], DeferredReview) and seen[0][1].group == "IT"
    # Down from day 1 to day 50: one review at 50, the next fourteen days after it.
    runs = [MONDAY + DAY, MONDAY + 50 * DAY, MONDAY + 51 * DAY, MONDAY + 63 * DAY, MONDAY + 64 * DAY]
    seen = simulate(deferred_review, deferred, TIMERS, iter(runs))
    assert [now - MONDAY for now, _ in seen] == [50 * DAY, 64 * DAY]


def test_daily_digest_once_a_day_caught_up_once_with_due_soon_and_breached() -> None:
    breached = ticket(key="SUP-1")  # created Monday 09:00, never answered
    soon = ticket(MONDAY + timedelta(hours=5), key="SUP-2")  # Monday 14:00, never answered
    other = ticket(key="SUP-3", assignee=None, group="AV", priority=None)
    tickets = [soon, breached, other]
    tuesday_8 = datetime(2026, 6, 2, 8, tzinfo=BERLIN)
    assert digests(tickets, RULES, None, tuesday_8 - timedelta(minutes=1)) == []
    sent = digests(tickets, RULES, None, tuesday_8)
    summary = {(d.recipient_kind, d.recipient): (d.open, d.due_soon, d.breached) for d in sent}
    # SUP-2 has used 3h of its 4h first-response target (due Tuesday 10:00); SUP-1 is breached.
    assert summary == {
        ("agent", "tech1"): (("SUP-1", "SUP-2"), ("SUP-2",), ("SUP-1",)),
        ("group", "IT"): (("SUP-1", "SUP-2"), ("SUP-2",), ("SUP-1",)),
        ("group", "AV"): (("SUP-3",), (), ()),
    }
    assert sent[0].marks == (("last_digest_at", tuesday_8.astimezone(UTC)),)
    assert digests(tickets, RULES, tuesday_8, tuesday_8 + timedelta(hours=3)) == []
    # Down from Tuesday 09:00 to Friday 07:00: Thursday's digest is owed, once.
    friday_7 = datetime(2026, 6, 5, 7, tzinfo=BERLIN)
    assert len(digests(tickets, RULES, tuesday_8, friday_7)) == 3
    assert digests(tickets, RULES, friday_7, friday_7 + timedelta(minutes=30)) == []
