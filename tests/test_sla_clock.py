"""The SLA clock: due times in business hours, paused while waiting on the customer, recomputable."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailgate.domain.calendar import BusinessCalendar
from mailgate.domain.sla import Policy, StatusInterval, sla_clock

BERLIN = ZoneInfo("Europe/Berlin")
H = timedelta(hours=1)
OFFICE = BusinessCalendar("Europe/Berlin", {d: [("09:00", "17:00")] for d in range(5)}, {date(2026, 10, 26)})
P2 = Policy("P2", (), OFFICE, first_response=4 * H, resolution=8 * H, warn_at=0.75)


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def history(*steps: tuple[datetime, str]) -> list[StatusInterval]:
    """Intervals from (start, category) steps; the last one is still current."""
    ends = [s for s, _ in steps[1:]] + [None]
    return [StatusInterval(s, e, c) for (s, c), e in zip(steps, ends, strict=True)]  # type: ignore[arg-type]


def test_first_response_due_across_the_autumn_dst_weekend_and_a_holiday() -> None:
    # Friday 2026-10-23 15:00 CEST; the weekend changes to CET; Monday 26th is a holiday here.
    created = berlin(2026, 10, 23, 15)
    steps = history((created, "open"))
    clock = sla_clock(P2, created, steps, None, now=berlin(2026, 10, 23, 16))
    fr = clock.first_response
    assert fr is not None
    assert fr.due == berlin(2026, 10, 27, 11)  # 2h Friday, 2h Tuesday (CET)
    assert fr.warn_due == berlin(2026, 10, 27, 10)  # 75% = 3h
    assert (fr.state, fr.warned, fr.breached, fr.fraction) == ("running", False, False, 0.25)
    late = sla_clock(P2, created, steps, None, now=berlin(2026, 10, 27, 11, 1)).first_response
    assert late is not None and late.breached and late.state == "breached"
    answered = sla_clock(
        P2, created, steps, berlin(2026, 10, 27, 10, 30), now=berlin(2026, 10, 30)
    ).first_response
    assert answered is not None and answered.state == "met" and answered.warned and not answered.breached


def test_waiting_for_the_customer_pauses_resolution_and_resume_shifts_the_due() -> None:
    created = berlin(2026, 6, 1, 9)  # Monday
    asked = berlin(2026, 6, 1, 11)  # 2h used, "Pending" with questions
    answered = berlin(2026, 6, 3, 10)  # the requester replies on Wednesday
    waiting = history((created, "open"), (asked, "waiting"))
    paused = sla_clock(P2, created, waiting, asked, now=berlin(2026, 6, 2, 12)).resolution
    assert paused is not None
    assert (paused.state, paused.due, paused.elapsed, paused.breached) == ("paused", None, 2 * H, False)
    resumed_steps = history((created, "open"), (asked, "waiting"), (answered, "open"))
    resumed = sla_clock(P2, created, resumed_steps, asked, now=berlin(2026, 6, 3, 11)).resolution
    assert resumed is not None
    assert resumed.due == berlin(2026, 6, 3, 16)  # 6h left from Wednesday 10:00; unpaused it was Monday 17:00
    assert resumed.elapsed == 3 * H and resumed.state == "running"
    # The same facts later: breached one minute after the shifted due, and not before.
    assert not sla_clock(P2, created, resumed_steps, asked, berlin(2026, 6, 3, 16)).resolution.breached  # type: ignore[union-attr]
    assert sla_clock(P2, created, resumed_steps, asked, berlin(2026, 6, 3, 16, 1)).resolution.breached  # type: ignore[union-attr]


def test_a_breach_stays_a_breach_when_the_ticket_later_waits() -> None:
    created = berlin(2026, 6, 1, 9)
    steps = history((created, "open"), (berlin(2026, 6, 2, 10), "waiting"))  # 9h open: over the 8h
    res = sla_clock(P2, created, steps, created, now=berlin(2026, 6, 5, 12)).resolution
    assert res is not None and res.breached and res.due == berlin(2026, 6, 1, 17) and res.paused


def test_resolved_then_reopened_continues_with_the_time_already_used() -> None:
    created = berlin(2026, 6, 1, 9)
    resolved = berlin(2026, 6, 1, 15)  # 6h: met
    reopened = berlin(2026, 6, 8, 9)  # "this isn't resolved" a week later
    done = sla_clock(
        P2, created, history((created, "open"), (resolved, "closed")), created, berlin(2026, 6, 5)
    )
    assert done.resolution is not None and done.resolution.state == "met"
    assert done.resolution.completed_at == resolved.astimezone(UTC)
    steps = history((created, "open"), (resolved, "closed"), (reopened, "open"))
    again = sla_clock(P2, created, steps, created, berlin(2026, 6, 8, 10)).resolution
    assert again is not None and again.due == berlin(2026, 6, 8, 11) and again.elapsed == 7 * H


def test_the_clock_is_a_function_of_facts_and_now() -> None:
    created = berlin(2026, 6, 1, 9)
    steps = history((created, "open"), (berlin(2026, 6, 1, 11), "waiting"), (berlin(2026, 6, 3, 10), "open"))
    at = berlin(2026, 6, 2, 12)
    # Replaying the full history at an earlier `now` equals what was computed then.
    then = sla_clock(P2, created, history((created, "open"), (berlin(2026, 6, 1, 11), "waiting")), None, at)
    assert sla_clock(P2, created, steps, None, at) == then
    # Gaps in the history count as open, so a lost status row never hides time.
    gap = sla_clock(P2, created, [], None, berlin(2026, 6, 1, 15)).resolution
    assert gap is not None and gap.elapsed == 6 * H and gap.warned
