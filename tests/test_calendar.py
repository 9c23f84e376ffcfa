"""Business-hours arithmetic: weekends, holidays, lunch breaks, DST in Berlin and New York."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailgate.domain.calendar import BusinessCalendar

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
H = timedelta(hours=1)
EASTER_2026 = {date(2026, 4, 3), date(2026, 4, 6)}  # Good Friday, Easter Monday


def office(tz: str = "Europe/Berlin", holidays: set[date] | None = None) -> BusinessCalendar:
    return BusinessCalendar(tz, {d: [("09:00", "17:00")] for d in range(5)}, holidays or set())


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def test_friday_afternoon_ticket_is_due_monday_across_the_spring_forward_weekend() -> None:
    # Friday 16:00 CET + 4h: one hour on Friday, three on Monday, which is already in CEST.
    due = office().add(berlin(2026, 3, 27, 16), 4 * H)
    assert due == berlin(2026, 3, 30, 12)
    assert due.tzinfo is UTC and due == datetime(2026, 3, 30, 10, tzinfo=UTC)


def test_time_running_out_at_closing_is_due_at_closing_not_next_morning() -> None:
    assert office().add(berlin(2026, 6, 5, 13), 4 * H) == berlin(2026, 6, 5, 17)


def test_easter_holidays_are_skipped() -> None:
    cal = office(holidays=EASTER_2026)
    # Thursday 16:00 + 2h: one hour Thursday; Friday, the weekend and Monday are closed.
    assert cal.add(berlin(2026, 4, 2, 16), 2 * H) == berlin(2026, 4, 7, 10)
    assert cal.between(berlin(2026, 4, 2, 9), berlin(2026, 4, 8, 9)) == 16 * H


def test_lunch_break_is_not_business_time() -> None:
    cal = BusinessCalendar("Europe/Berlin", {d: [("09:00", "12:30"), ("13:30", "17:00")] for d in range(5)})
    assert cal.add(berlin(2026, 6, 1, 11, 30), 2 * H) == berlin(2026, 6, 1, 14, 30)
    assert cal.between(berlin(2026, 6, 1, 12), berlin(2026, 6, 1, 14)) == H
    assert cal.day_length == 7 * H


def test_new_york_business_hours_across_its_spring_forward() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT; Friday 16:00 EST + 2h = Monday 10:00 EDT.
    due = office("America/New_York").add(datetime(2026, 3, 6, 16, tzinfo=NEW_YORK), 2 * H)
    assert due == datetime(2026, 3, 9, 10, tzinfo=NEW_YORK) == datetime(2026, 3, 9, 14, tzinfo=UTC)


def test_dst_days_count_real_hours_and_24x7_is_elapsed_time() -> None:
    allday = BusinessCalendar(
        "Europe/Berlin", {d: [("00:00", "24:00")] for d in range(7)}, {date(2030, 1, 1)}
    )
    assert allday.between(berlin(2026, 3, 29), berlin(2026, 3, 30)) == 23 * H
    assert allday.between(berlin(2026, 10, 25), berlin(2026, 10, 26)) == 25 * H
    always = BusinessCalendar.always("Europe/Berlin")
    start = berlin(2026, 3, 28, 21)
    # (Aware arithmetic in one zone is wall-clock arithmetic in Python, hence the UTC.)
    assert always.add(start, 30 * H) == allday.add(start, 30 * H) == start.astimezone(UTC) + 30 * H


def test_skipped_and_repeated_hours_are_resolved_as_documented() -> None:
    # Spring: a boundary at 02:30 (never shown on Berlin clocks) moves to 03:00 CEST.
    night = BusinessCalendar("Europe/Berlin", {6: [("02:30", "04:00")]})
    assert night.add(berlin(2026, 3, 28, 12), timedelta(minutes=1)) == datetime(2026, 3, 29, 1, 1, tzinfo=UTC)
    assert night.between(berlin(2026, 3, 29), berlin(2026, 3, 30)) == H
    # Autumn: 01:00-05:00 spans the repeated 02:00-03:00 hour, which was staffed twice: 5 hours.
    early = BusinessCalendar("Europe/Berlin", {6: [("01:00", "05:00")]})
    assert early.between(berlin(2026, 10, 25), berlin(2026, 10, 26)) == 5 * H
    # A boundary inside the repeated hour is its first occurrence (CEST, fold=0).
    fold = BusinessCalendar("Europe/Berlin", {6: [("02:30", "06:00")]})
    assert fold.add(berlin(2026, 10, 24, 12), timedelta(minutes=1)) == datetime(
        2026, 10, 25, 0, 31, tzinfo=UTC
    )


def test_a_whole_year_counts_every_working_day_once() -> None:
    holidays = {
        date(2026, 1, 1),
        date(2026, 5, 1),
        date(2026, 12, 25),
        date(2026, 12, 26),
    }  # 12-26 is a Saturday
    cal = office(holidays=holidays)
    days = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    working = sum(1 for d in days if d.weekday() < 5 and d not in holidays)
    assert cal.between(berlin(2026, 1, 1), berlin(2027, 1, 1)) == working * 8 * H
    # The last of those hours ends on the last working day of the year at 17:00.
    assert cal.add(berlin(2026, 1, 1), working * 8 * H) == berlin(2026, 12, 31, 17)


def test_naive_times_and_calendars_without_hours_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        office().add(datetime(2026, 1, 5, 9), H)
    with pytest.raises(ValueError, match="no opening hours"):
        BusinessCalendar("Europe/Berlin", {})
    with pytest.raises(ValueError, match="overlap"):
        BusinessCalendar("UTC", {0: [("09:00", "12:00"), ("11:00", "13:00")]})


# Property tests: long ranges (whole weeks skipped) must agree with short ones (stepped by day),
# in zones with DST and with holidays spread over the years.
CALENDARS = [
    office(holidays=EASTER_2026 | {date(2027, 12, 24), date(2028, 3, 27)}),
    office("America/New_York", {date(2026, 11, 26), date(2027, 7, 5)}),
    BusinessCalendar(
        "Europe/Berlin", {d: [("00:00", "02:30"), ("08:00", "12:00"), ("13:00", "24:00")] for d in (0, 2, 6)}
    ),
]
instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
durations = st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=400))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(CALENDARS), instants, durations, durations)
def test_add_and_between_agree_over_long_ranges(
    cal: BusinessCalendar, start: datetime, first: timedelta, second: timedelta
) -> None:
    end = cal.add(start, first + second)
    assert cal.between(start, end) == first + second
    middle = cal.add(start, first)
    assert cal.add(middle, second) == end
    assert cal.between(start, middle) + cal.between(middle, end) == first + second
    assert cal.between(end, start) == -(first + second)
