"""Business-hours arithmetic: add business time to an instant, measure business time between two.

A `BusinessCalendar` is a time zone, wall-clock opening hours per weekday (several intervals a day,
so a lunch break is two intervals) and a set of holidays. SLA targets ("4h", "2d") are counted in
it, so a ticket that arrives on Friday at 16:00 with a 4h target is due on Monday at 12:00.

Daylight-saving time — the deliberate choice:
- Opening hours are wall-clock times in the calendar's zone (09:00 is 09:00 all year round).
- Business time is REAL elapsed time inside opening hours: an interval 01:00-05:00 on the day
  clocks spring forward lasts 3 hours, on the day they fall back 5 hours. A 24x7 calendar
  therefore counts exactly the elapsed time, and 09:00-17:00 is always 8 hours.
- A boundary that falls in a skipped hour (02:30 on 2026-03-29 in Europe/Berlin) is moved to the
  first instant after the gap (03:00 CEST): the hour that does not exist contributes nothing.
- A boundary that falls in a repeated hour (02:30 on 2026-10-25 in Europe/Berlin) is the FIRST
  occurrence (PEP 495 fold=0); an interval that spans the repeated hour counts it twice, because
  somebody staffed it twice.

Instants in and out are timezone-aware; results are in UTC. Long durations skip whole weeks that
hold no holiday and no offset change, so a year of business time costs ~50 steps, not 365.

This module must not read the clock, touch files or the network: callers pass `now`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["WEEKDAYS", "BusinessCalendar", "parse_span"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = 86_400
_ONE_DAY = timedelta(days=1)
_ONE_WEEK = timedelta(days=7)
# A calendar whose hours are blocked by holidays for longer than this is a configuration error,
# not a reason to loop for ever.
_MAX_DAYS = 366 * 200
_SPAN_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

TimeLike = time | str


def _to_seconds(value: TimeLike) -> int:
    """Seconds since local midnight of a `time` or "HH:MM" ("24:00" is the end of the day)."""
    if isinstance(value, time):
        if value.tzinfo is not None:
            raise ValueError("opening hours are wall-clock times: give a naive time, not one with tzinfo")
        return value.hour * 3600 + value.minute * 60 + value.second
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", value)
    if not match:
        raise ValueError(f"{value!r} is not a time of day; write HH:MM, e.g. 09:00")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{value!r} is not a time of day between 00:00 and 24:00")
    return hours * 3600 + minutes * 60


def parse_span(text: str) -> tuple[int, int]:
    """ "09:00-17:00" -> (32400, 61200) seconds since local midnight; "24:00" ends the day."""
    match = _SPAN_RE.match(text)
    if not match:
        raise ValueError(f"{text!r} is not an interval of hours; write HH:MM-HH:MM, e.g. 09:00-17:00")
    start = _to_seconds(f"{match.group(1)}:{match.group(2)}")
    end = _to_seconds(f"{match.group(3)}:{match.group(4)}")
    if not start < end:
        raise ValueError(f"{text!r} ends before it starts; an interval cannot pass midnight, split it in two")
    return start, end


def _require_aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC in storage), got naive {value!r}")
    return value.astimezone(UTC)


class BusinessCalendar:
    """Opening hours in a time zone, with holidays; see the module docstring for DST semantics.

    `hours` maps a weekday (0 = Monday ... 6 = Sunday) to a list of (start, end) wall-clock
    intervals, each a `datetime.time` or "HH:MM"; an end of "24:00" (or `time(0)` as an end)
    means midnight at the end of that day. Missing weekdays are closed.
    """

    __slots__ = (
        "name",
        "tz",
        "_zone",
        "_hours",
        "_holidays",
        "_sorted_holidays",
        "_week",
        "_always",
        "_day",
        "_span_cache",
        "_week_cache",
    )

    def __init__(
        self,
        tz: str,
        hours: Mapping[int, Sequence[tuple[TimeLike, TimeLike]]],
        holidays: Iterable[date] = (),
        *,
        name: str = "",
        day_length: timedelta | None = None,
    ) -> None:
        try:
            self._zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {tz!r}; use an IANA name such as Europe/Berlin") from exc
        self.tz = tz
        self.name = name
        table: list[tuple[tuple[int, int], ...]] = []
        for weekday in range(7):
            spans: list[tuple[int, int]] = []
            for start, end in hours.get(weekday, ()):
                s = _to_seconds(start)
                e = _to_seconds(end)
                if e == 0 and isinstance(end, time):
                    e = _DAY  # time(0) as an END can only mean the midnight that closes the day
                if not s < e:
                    raise ValueError(f"{WEEKDAYS[weekday]}: interval starts at or after its end")
                spans.append((s, e))
            spans.sort()
            for (_, prev_end), (next_start, _) in zip(spans, spans[1:], strict=False):
                if next_start < prev_end:
                    raise ValueError(f"{WEEKDAYS[weekday]}: opening intervals overlap")
            table.append(tuple(spans))
        self._hours = tuple(table)
        week = sum(e - s for spans in table for s, e in spans)
        if week == 0:
            raise ValueError("the calendar has no opening hours on any weekday")
        self._week = timedelta(seconds=week)
        self._holidays = frozenset(holidays)
        self._sorted_holidays = tuple(sorted(self._holidays))
        self._always = not self._holidays and all(spans == ((0, _DAY),) for spans in table)
        if day_length is None:
            open_days = sum(1 for spans in table if spans)
            day_length = timedelta(seconds=week // open_days)
        if day_length <= timedelta(0):
            raise ValueError("day_length must be positive")
        self._day = day_length
        # A day's opening intervals as UTC instants, worked out once: every message's SLA due
        # times walk the same few days, and the zone arithmetic was most of their cost.
        self._span_cache: dict[date, tuple[tuple[datetime, datetime], ...]] = {}
        # Whether a week from a date is plain, worked out once: a report measures a year of
        # tickets, each walking the same weeks (bench/report_bench.py).
        self._week_cache: dict[date, bool] = {}

    @classmethod
    def always(cls, tz: str = "UTC", *, name: str = "24x7") -> BusinessCalendar:
        """A 24x7 calendar: business time is elapsed time, a business day is 24 hours."""
        return cls(tz, {weekday: [("00:00", "24:00")] for weekday in range(7)}, name=name)

    # --- what the calendar is -------------------------------------------------------------

    @property
    def is_always_open(self) -> bool:
        return self._always

    @property
    def week_length(self) -> timedelta:
        """Business time in a week without holidays or offset changes."""
        return self._week

    @property
    def day_length(self) -> timedelta:
        """What "1d" means in this calendar: the average open day unless set explicitly."""
        return self._day

    @property
    def holidays(self) -> frozenset[date]:
        return self._holidays

    def hours_of(self, weekday: int) -> tuple[tuple[int, int], ...]:
        """Opening intervals of a weekday as seconds since local midnight."""
        return self._hours[weekday]

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<BusinessCalendar{label} {self.tz} {self._week} a week, {len(self._holidays)} holidays>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusinessCalendar):
            return NotImplemented
        return (self.tz, self._hours, self._holidays, self._day) == (
            other.tz,
            other._hours,
            other._holidays,
            other._day,
        )

    def __hash__(self) -> int:
        return hash((self.tz, self._hours, self._holidays, self._day))

    # --- arithmetic ------------------------------------------------------------------------

    def add(self, start: datetime, duration: timedelta) -> datetime:
        """The instant at which `duration` of business time has passed since `start` (in UTC).

        A zero duration returns `start`. When the time runs out exactly at the end of an opening
        interval, the result is that end (Friday 17:00), not the next opening (Monday 09:00).
        """
        start = _require_aware(start, "start")
        if duration < timedelta(0):
            raise ValueError("cannot add a negative duration of business time")
        if not duration:
            return start
        if self._always:
            return start + duration
        remaining = duration
        day = start.astimezone(self._zone).date()
        last = day + timedelta(days=_MAX_DAYS)
        first = True
        while day <= last:
            if not first:
                # Every span of `day` and later starts after `start`: whole plain weeks can go.
                while remaining > self._week and self._plain_week(day):
                    remaining -= self._week
                    day += _ONE_WEEK
            first = False
            for opens, closes in self._spans(day):
                if closes <= start:
                    continue
                opens = max(opens, start)
                available = closes - opens
                if remaining <= available:
                    return opens + remaining
                remaining -= available
            day += _ONE_DAY
        raise ValueError(f"no opening hours for {_MAX_DAYS} days after {start.isoformat()}")

    def between(self, a: datetime, b: datetime) -> timedelta:
        """Business time in [a, b); negative when b is before a."""
        a = _require_aware(a, "a")
        b = _require_aware(b, "b")
        if b < a:
            return -self.between(b, a)
        if self._always:
            return b - a
        total = timedelta(0)
        day = a.astimezone(self._zone).date()
        last = b.astimezone(self._zone).date()
        first = True
        while day <= last:
            if not first:
                # The whole week [day, day+7) ends by local midnight of `last`, which is <= b.
                while day + _ONE_WEEK <= last and self._plain_week(day):
                    total += self._week
                    day += _ONE_WEEK
            first = False
            for opens, closes in self._spans(day):
                lo, hi = max(opens, a), min(closes, b)
                if hi > lo:
                    total += hi - lo
            day += _ONE_DAY
        return total

    def is_open(self, at: datetime) -> bool:
        """Whether `at` is inside opening hours."""
        at = _require_aware(at, "at")
        day = at.astimezone(self._zone).date()
        return any(opens <= at < closes for opens, closes in self._spans(day))

    # --- internals -------------------------------------------------------------------------

    def _spans(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The opening intervals of a local date as UTC instants (empty on holidays)."""
        cached = self._span_cache.get(day)
        if cached is not None:
            return cached
        spans = []
        if day not in self._holidays:
            for s, e in self._hours[day.weekday()]:
                opens, closes = self._instant(day, s), self._instant(day, e)
                if closes > opens:  # an interval entirely inside a skipped hour vanishes
                    spans.append((opens, closes))
        if len(self._span_cache) >= 4096:  # a long-running daemon walks forward in time
            self._span_cache.clear()
        self._span_cache[day] = result = tuple(spans)
        return result

    def _instant(self, day: date, seconds: int) -> datetime:
        """The UTC instant of a wall-clock time on a local date, resolving gaps and folds."""
        if seconds >= _DAY:
            day, seconds = day + _ONE_DAY, seconds - _DAY
        naive = datetime.combine(day, time()) + timedelta(seconds=seconds)
        # fold=0: in a repeated hour this is the first occurrence (PEP 495).
        utc = naive.replace(tzinfo=self._zone).astimezone(UTC)
        if utc.astimezone(self._zone).replace(tzinfo=None) == naive:
            return utc
        return self._gap_end(naive)

    def _gap_end(self, naive: datetime) -> datetime:
        """The first instant after the clocks jumped over `naive` (a wall time that never happens)."""
        # With fold=0 and fold=1 a gap time maps to the two offsets around the jump; the
        # transition instant lies between them. Transitions fall on whole seconds.
        candidates = sorted(naive.replace(tzinfo=self._zone, fold=f).astimezone(UTC) for f in (0, 1))
        lo, hi = candidates
        after = hi.astimezone(self._zone).utcoffset()
        while hi - lo > timedelta(seconds=1):
            mid = lo + timedelta(seconds=(hi - lo) // timedelta(seconds=2))
            if mid.astimezone(self._zone).utcoffset() == after:
                hi = mid
            else:
                lo = mid
        return hi

    def _plain_week(self, day: date) -> bool:
        """True when [day, day+7) has no holiday and no offset change, so it holds `week_length`."""
        cached = self._week_cache.get(day)
        if cached is None:
            if len(self._week_cache) >= 4096:
                self._week_cache.clear()
            cached = self._week_cache[day] = self._plain_week_uncached(day)
        return cached

    def _plain_week_uncached(self, day: date) -> bool:
        end = day + _ONE_WEEK
        i = bisect.bisect_left(self._sorted_holidays, day)
        if i < len(self._sorted_holidays) and self._sorted_holidays[i] < end:
            return False
        # A week without an offset change lasts exactly 168 real hours; zones change their offset
        # at most once within a week, so this comparison cannot be fooled by two changes.
        return self._instant(end, 0) - self._instant(day, 0) == _ONE_WEEK
