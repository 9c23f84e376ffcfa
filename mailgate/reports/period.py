"""The time a report covers and how it is cut: `--since` / `--until` and `--by day|week|month`.

Periods are cut at local midnight (week: Monday, ISO 8601; month: the 1st) in the report's time
zone, the zone of the desk's business calendar ([timers] calendar in rules/sla.toml, UTC without
one), because "Monday's tickets" means the desk's Monday. Instants in and out are aware UTC.

SQL groups rows by period directly: figures.period_of compares each timestamp with the periods'
starts (UTC instants), the same on SQLite and PostgreSQL; `Periods.index` does it in Python.

It must not read the clock (callers pass `now`) or touch the database.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["TIME_BY", "Periods", "parse_since", "parse_until"]

TIME_BY = ("day", "week", "month")
_RELATIVE = re.compile(r"^(\d+)\s*([hdw])$")


def _parse(text: str, now: datetime, tz: ZoneInfo, *, end_of_day: bool) -> datetime:
    text = text.strip().lower()
    rel = _RELATIVE.match(text)
    if rel:
        amount, unit = int(rel.group(1)), rel.group(2)
        return (
            now
            - {"h": timedelta(hours=amount), "d": timedelta(days=amount), "w": timedelta(weeks=amount)}[unit]
        )
    if text in ("now", ""):
        return now
    if text == "today":
        text = now.astimezone(tz).date().isoformat()
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        # A date alone is the whole day: --since 2026-11-01 starts at its midnight, --until
        # 2026-11-30 includes the 30th (ends at the next midnight).
        if end_of_day:
            day += timedelta(days=1)
        return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date (2026-11-30), a time (2026-11-30T14:00) or an age (30d, 12w, 6h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return moment.astimezone(UTC)


def parse_since(text: str, now: datetime, tz: str = "UTC") -> datetime:
    """ "30d" (30 days before now), "2026-11-01" (its local midnight), or an ISO time."""
    return _parse(text, now, ZoneInfo(tz), end_of_day=False)


def parse_until(text: str, now: datetime, tz: str = "UTC") -> datetime:
    """Like `parse_since`, but a date alone includes that whole day."""
    return _parse(text, now, ZoneInfo(tz), end_of_day=True)


def _next_boundary(moment: datetime, by: str, tz: ZoneInfo) -> datetime:
    local = moment.astimezone(tz)
    day = local.date()
    if by == "day":
        nxt = day + timedelta(days=1)
    elif by == "week":
        nxt = day + timedelta(days=7 - day.weekday())
    else:
        nxt = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC)


def _label(start: datetime, by: str, tz: ZoneInfo) -> str:
    day = start.astimezone(tz).date()
    if by == "day":
        return day.isoformat()
    if by == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


@dataclass(frozen=True)
class Periods:
    """[since, until) cut into periods; `labels[i]` names [starts[i], ends[i])."""

    since: datetime
    until: datetime
    tz: str
    by: str | None  # day, week, month, or None: one period for the whole range
    starts: tuple[datetime, ...]
    ends: tuple[datetime, ...]
    labels: tuple[str, ...]

    @classmethod
    def cut(cls, since: datetime, until: datetime, by: str | None, tz: str = "UTC") -> Periods:
        if since.tzinfo is None or until.tzinfo is None:
            raise ValueError("since and until must be timezone-aware")
        since, until = since.astimezone(UTC), until.astimezone(UTC)
        if until <= since:
            raise ValueError(
                f"--until ({until:%Y-%m-%d %H:%M} UTC) must be after --since ({since:%Y-%m-%d %H:%M} UTC)"
            )
        zone = ZoneInfo(tz)
        if by not in TIME_BY:
            label = f"{since.astimezone(zone):%Y-%m-%d %H:%M} – {until.astimezone(zone):%Y-%m-%d %H:%M}"
            return cls(since, until, tz, None, (since,), (until,), (label,))
        starts, ends, labels = [], [], []
        start = since
        while start < until:
            end = min(_next_boundary(start, by, zone), until)
            starts.append(start)
            ends.append(end)
            labels.append(_label(start, by, zone))
            start = end
        return cls(since, until, tz, by, tuple(starts), tuple(ends), tuple(labels))

    def index(self, moment: datetime) -> int | None:
        """The period holding `moment`, or None outside [since, until)."""
        if not self.since <= moment < self.until:
            return None
        return bisect.bisect_right(self.starts, moment) - 1
