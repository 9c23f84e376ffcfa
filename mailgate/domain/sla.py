"""SLA policy and clock: which targets apply to a ticket, and where its clocks stand at `now`.

`rules/sla.toml` names business calendars, an ordered list of policies (first match wins) and the
settings of the periodic jobs (`[timers]`, used by `mailgate.domain.timers`). `load_sla` validates
the whole file and reports every problem with file, line and reason (via `rulesfile`).

The clock is a pure function of stored facts — creation time, the status history as intervals
with their category (open / waiting / closed), the first-response time — and `now`, so it can be
recomputed at any moment and gives the same answer (idempotent):

- first response: runs from creation in the policy's business hours until the first public human
  reply of an agent (or until the ticket is closed without one). It does not pause.
- resolution: runs only while the ticket is in an "open" status. "waiting" (on the customer) and
  "closed" stop it; a reopen resumes it with the business time already used. The due time is the
  instant the running time reaches the target; while paused with time left it is None.

This module must not read the clock, the database or the network; `load_sla` only reads its file.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mailgate.domain.calendar import WEEKDAYS, BusinessCalendar, parse_span
from mailgate.domain.rulesfile import Checker, RulesInvalid, TomlFile, type_name

__all__ = [
    "BUILTIN_24X7",
    "Category",
    "Policy",
    "SlaClock",
    "SlaRules",
    "StatusInterval",
    "TargetClock",
    "TimerSettings",
    "load_sla",
    "parse_duration",
    "parse_sla",
    "policy_for",
    "sla_clock",
]

Category = Literal["open", "waiting", "closed"]
Target = Literal["first_response", "resolution"]
CATEGORIES: tuple[Category, ...] = ("open", "waiting", "closed")
BUILTIN_24X7 = "24x7"
# Match keys with a meaning of their own; any other key is a custom field (plan = "enterprise").
TICKET_KEYS = ("priority", "type", "group", "category", "desk", "assignee")
_DURATION_RE = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?$")


# --- the rules ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """One entry of `[[policies]]`: targets in business time of its calendar."""

    name: str
    match: tuple[tuple[str, frozenset[str]], ...]
    calendar: BusinessCalendar
    first_response: timedelta | None
    resolution: timedelta | None
    warn_at: float = 0.75
    line: int = 0
    # The ladder's last step: a breach still open at this fraction of the target goes to the
    # desk's admins (the lead had it at 1.0, the assignee was warned at `warn_at`).
    admins_at: float = 1.5

    def matches(self, ticket_fields: Mapping[str, object]) -> bool:
        """All match keys hold (a list value means any of); a missing field never matches."""
        for key, accepted in self.match:
            value = _field(ticket_fields, key)
            if value is None or _norm(key, value) not in accepted:
                return False
        return True


@dataclass(frozen=True)
class TimerSettings:
    """`[timers]` of sla.toml. None means the job is off."""

    calendar: BusinessCalendar = field(default_factory=BusinessCalendar.always)
    unanswered_reminder_hours: float | None = 4.0
    auto_close_resolved_days: float | None = 7.0
    waiting_customer_reminder_days: float | None = None
    waiting_customer_close_days: float | None = None
    deferred_review_days: float | None = 14.0
    digest_hour: int | None = None


@dataclass(frozen=True)
class SlaRules:
    calendars: Mapping[str, BusinessCalendar]
    policies: tuple[Policy, ...]
    timers: TimerSettings
    source: str = "rules/sla.toml"


def policy_for(rules: SlaRules, ticket_fields: Mapping[str, object]) -> Policy | None:
    """The first policy whose match holds for the ticket, or None (no SLA).

    `ticket_fields` is flat: priority, type, group, ... and custom fields by name; custom fields
    may instead sit in a nested "custom_fields" mapping.
    """
    for policy in rules.policies:
        if policy.matches(ticket_fields):
            return policy
    return None


def _field(ticket_fields: Mapping[str, object], key: str) -> object | None:
    if key in ticket_fields:
        return ticket_fields[key]
    custom = ticket_fields.get("custom_fields")
    if isinstance(custom, Mapping):
        return custom.get(key)
    return None


def _norm(key: str, value: object) -> str:
    """Compare case-insensitively; "P1", "p1" and 1 are the same priority."""
    text = str(value).strip().casefold()
    if key == "priority" and re.fullmatch(r"p\d+", text):
        text = text[1:]
    return text


def parse_duration(text: str, calendar: BusinessCalendar) -> timedelta:
    """ "30m", "4h", "1d4h", "2w" in business time: a day is the calendar's day, a week its week."""
    compact = re.sub(r"\s+", "", text.strip().lower())
    match = _DURATION_RE.match(compact)
    if not compact or not match or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration")
    weeks, days, hours, minutes = (int(g) if g else 0 for g in match.groups())
    total = (
        weeks * calendar.week_length + days * calendar.day_length + timedelta(hours=hours, minutes=minutes)
    )
    if total <= timedelta(0):
        raise ValueError(f"{text!r} is zero")
    return total


# --- loading ------------------------------------------------------------------------------------


def load_sla(path: Path, name: str | None = None) -> SlaRules:
    """Read and validate sla.toml; raises `RulesInvalid` listing every error with its line."""
    return _compile(TomlFile.read(path, name))


def parse_sla(text: str, name: str = "rules/sla.toml") -> SlaRules:
    """Validate sla.toml given as text (for `rules check` and tests)."""
    return _compile(TomlFile.parse(text, name))


def _compile(file: TomlFile) -> SlaRules:
    check = Checker(file)
    data = file.data
    check.unknown_keys((), data, ("calendars", "policies", "timers"), "section")
    calendars: dict[str, BusinessCalendar] = {BUILTIN_24X7: BusinessCalendar.always(name=BUILTIN_24X7)}
    raw_calendars = check.table(("calendars",), data.get("calendars", {}), "[calendars]") or {}
    for cal_name, raw in raw_calendars.items():
        table = check.table(("calendars", cal_name), raw, f"calendar '{cal_name}'")
        if table is not None:
            cal = _compile_calendar(check, cal_name, table)
            if cal is not None:
                calendars[cal_name] = cal
    policies: list[Policy] = []
    raw_policies = data.get("policies", [])
    if not isinstance(raw_policies, list):
        check.add(("policies",), "policies must be written as [[policies]] tables")
        raw_policies = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_policies):
        table = check.table(("policies", i), raw, "a policy")
        if table is None:
            continue
        policy = _compile_policy(check, i, table, calendars, raw_calendars)
        if policy is None:
            continue
        if policy.name in seen:
            check.add(
                ("policies", i, "name"), f"policy name '{policy.name}' is used twice", "names must differ"
            )
        seen[policy.name] = i
        policies.append(policy)
    timers = _compile_timers(check, data.get("timers", {}), calendars, raw_calendars)
    if check.errors:
        raise RulesInvalid(check.errors)
    assert timers is not None
    return SlaRules(calendars=calendars, policies=tuple(policies), timers=timers, source=file.name)


def _weekday_keys(check: Checker, path: tuple[str | int, ...], key: str) -> list[int] | None:
    """ "mon" -> [0]; "mon-fri" -> [0..4]."""
    parts = key.strip().lower().split("-")
    if all(p in WEEKDAYS for p in parts) and len(parts) in (1, 2):
        first, last = WEEKDAYS.index(parts[0]), WEEKDAYS.index(parts[-1])
        if first <= last:
            return list(range(first, last + 1))
    check.add(
        (*path, key),
        f"'{key}' is not a weekday or range of weekdays",
        "write mon, tue, wed, thu, fri, sat, sun or a range such as mon-fri",
    )
    return None


def _compile_calendar(check: Checker, cal_name: str, table: dict[str, Any]) -> BusinessCalendar | None:
    path: tuple[str | int, ...] = ("calendars", cal_name)
    if cal_name == BUILTIN_24X7:
        check.add(path, f"'{BUILTIN_24X7}' is built in (a 24x7 calendar in UTC)", "choose another name")
        return None
    n_errors = len(check.errors)
    check.unknown_keys(path, table, ("tz", "hours", "holidays", "always", "day_hours"), "calendar key")
    tz = check.string((*path, "tz"), table.get("tz"), "tz")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            check.add((*path, "tz"), f"unknown time zone {tz!r}", "use an IANA name such as Europe/Berlin")
            tz = None
    always = table.get("always", False)
    if not isinstance(always, bool):
        check.add((*path, "always"), f"always must be true or false, got {type_name(always)}")
        always = False
    hours: dict[int, list[tuple[str, str]]] = {}
    raw_hours = table.get("hours")
    if always and raw_hours is not None:
        check.add((*path, "hours"), "a calendar that is always open has no hours", "remove hours or always")
    elif not always:
        hours_table = None
        if raw_hours is None:
            check.add(
                path,
                f"calendar '{cal_name}' has no hours",
                'add hours = { mon-fri = ["09:00-17:00"] } or always = true',
            )
        else:
            hours_table = check.table((*path, "hours"), raw_hours, "hours")
        for key, value in (hours_table or {}).items():
            days = _weekday_keys(check, (*path, "hours"), key)
            spans = check.strings((*path, "hours", key), value, f"hours {key}") if value != [] else []
            if days is None or spans is None:
                continue
            parsed: list[tuple[str, str]] = []
            for text in spans:
                try:
                    s, e = parse_span(text)
                except ValueError as exc:
                    check.add((*path, "hours", key), str(exc), needle=text)
                    continue
                parsed.append(
                    (f"{s // 3600:02d}:{s % 3600 // 60:02d}", f"{e // 3600:02d}:{e % 3600 // 60:02d}")
                )
            for day in days:
                if day in hours:
                    check.add((*path, "hours", key), f"{WEEKDAYS[day]} is given twice", "each weekday once")
                hours[day] = parsed
    holidays: set[date] = set()
    raw_holidays = table.get("holidays", [])
    if not isinstance(raw_holidays, list):
        check.add((*path, "holidays"), f"holidays must be a list of dates, got {type_name(raw_holidays)}")
        raw_holidays = []
    for item in raw_holidays:
        if isinstance(item, date) and not isinstance(item, datetime):
            holidays.add(item)
            continue
        try:
            holidays.add(date.fromisoformat(str(item)))
        except ValueError:
            check.add((*path, "holidays"), f"{item!r} is not a date", "write 2026-12-25", needle=str(item))
    day_length: timedelta | None = None
    if "day_hours" in table:
        value = table["day_hours"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 24:
            check.add((*path, "day_hours"), "day_hours must be a number of hours between 0 and 24")
        else:
            day_length = timedelta(hours=value)
    if len(check.errors) > n_errors or tz is None:
        return None
    try:
        if always:
            return BusinessCalendar(
                tz,
                {d: [("00:00", "24:00")] for d in range(7)},
                holidays,
                name=cal_name,
                day_length=day_length,
            )
        return BusinessCalendar(tz, hours, holidays, name=cal_name, day_length=day_length)
    except ValueError as exc:
        where = "tz" if "time zone" in str(exc) else "hours"
        check.add((*path, where), str(exc))
        return None


def _defined(calendars: Mapping[str, object], raw_calendars: Mapping[str, object]) -> str:
    return "defined: " + ", ".join(sorted({*calendars, *raw_calendars}))


def _compile_policy(
    check: Checker,
    i: int,
    table: dict[str, Any],
    calendars: Mapping[str, BusinessCalendar],
    raw_calendars: Mapping[str, Any],
) -> Policy | None:
    path: tuple[str | int, ...] = ("policies", i)
    n_errors = len(check.errors)
    valid = ("name", "match", "calendar", "first_response", "resolution", "warn_at", "admins_at")
    check.unknown_keys(path, table, valid, "policy key")
    name = check.string((*path, "name"), table.get("name", f"policy {i + 1}"), "name") or ""
    match: list[tuple[str, frozenset[str]]] = []
    raw_match = check.table((*path, "match"), table.get("match", {}), "match") or {}
    for key, value in raw_match.items():
        near = difflib.get_close_matches(key, TICKET_KEYS, n=1, cutoff=0.75)
        if key not in TICKET_KEYS and near:
            # A typo of a ticket key would silently become a custom field that never matches.
            check.add(
                (*path, "match", key), f"match key '{key}' looks like a typo", f"did you mean '{near[0]}'?"
            )
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
            check.add((*path, "match", key), f"match {key} must be a string, an integer or a list of them")
            continue
        match.append((key, frozenset(_norm(key, v) for v in values)))
    cal_name = table.get("calendar")
    if cal_name is None:
        defined = [n for n in calendars if n != BUILTIN_24X7]
        cal_name = defined[0] if len(defined) == 1 else None
        if cal_name is None:
            check.add(path, "policy has no calendar", _defined(calendars, raw_calendars))
    elif not isinstance(cal_name, str) or (cal_name not in calendars and cal_name not in raw_calendars):
        check.add((*path, "calendar"), f"unknown calendar {cal_name!r}", _defined(calendars, raw_calendars))
        cal_name = None
    calendar = calendars.get(cal_name) if isinstance(cal_name, str) else None
    targets: dict[str, timedelta | None] = {}
    for target in ("first_response", "resolution"):
        raw = table.get(target)
        targets[target] = None
        if raw is None:
            continue
        if not isinstance(raw, str):
            check.add(
                (*path, target), f'{target} must be a duration string such as "4h", got {type_name(raw)}'
            )
            continue
        try:
            targets[target] = parse_duration(raw, calendar or BusinessCalendar.always())
        except ValueError as exc:
            check.add(
                (*path, target), str(exc), 'write minutes, hours, days or weeks: "30m", "4h", "1d4h", "2w"'
            )
    if "first_response" not in table and "resolution" not in table:
        check.add(path, "policy sets no target", "add first_response and/or resolution")
    warn_at = table.get("warn_at", 0.75)
    if isinstance(warn_at, bool) or not isinstance(warn_at, int | float) or not 0 < warn_at < 1:
        check.add(
            (*path, "warn_at"), f"warn_at must be a fraction between 0 and 1, got {warn_at!r}", "e.g. 0.75"
        )
        warn_at = 0.75
    admins_at = table.get("admins_at", 1.5)
    if isinstance(admins_at, bool) or not isinstance(admins_at, int | float) or not admins_at > 1:
        check.add(
            (*path, "admins_at"),
            f"admins_at must be a fraction of the target above 1, got {admins_at!r}",
            "e.g. 1.5: the admins hear of a breach when half the target again has passed",
        )
        admins_at = 1.5
    if len(check.errors) > n_errors or calendar is None:
        return None
    return Policy(
        name=name,
        match=tuple(match),
        calendar=calendar,
        first_response=targets["first_response"],
        resolution=targets["resolution"],
        warn_at=float(warn_at),
        line=check.file.line_of(path),
        admins_at=float(admins_at),
    )


def _compile_timers(
    check: Checker,
    raw: object,
    calendars: Mapping[str, BusinessCalendar],
    raw_calendars: Mapping[str, Any],
) -> TimerSettings | None:
    table = check.table(("timers",), raw, "[timers]")
    if table is None:
        return None
    defaults = TimerSettings()
    numbers = (
        "unanswered_reminder_hours",
        "auto_close_resolved_days",
        "waiting_customer_reminder_days",
        "waiting_customer_close_days",
        "deferred_review_days",
    )
    check.unknown_keys(("timers",), table, ("calendar", "digest_hour", *numbers), "timer setting")
    values: dict[str, Any] = {}
    for key in numbers:
        if key not in table:
            values[key] = getattr(defaults, key)
            continue
        value = table[key]
        # 0 or false switches a job off; the admin reads "0 days" as "never".
        if value is False or value == 0:
            values[key] = None
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            check.add(("timers", key), f"{key} must be a positive number, or 0 to switch it off")
        else:
            values[key] = float(value)
    digest = table.get("digest_hour", False)
    if digest is False:
        values["digest_hour"] = None
    elif isinstance(digest, bool) or not isinstance(digest, int) or not 0 <= digest <= 23:
        check.add(("timers", "digest_hour"), "digest_hour must be an hour 0-23, or false for no digest")
    else:
        values["digest_hour"] = digest
    cal_name = table.get("calendar", BUILTIN_24X7)
    calendar = calendars.get(cal_name) if isinstance(cal_name, str) else None
    if calendar is None and not (isinstance(cal_name, str) and cal_name in raw_calendars):
        check.add(
            ("timers", "calendar"), f"unknown calendar {cal_name!r}", _defined(calendars, raw_calendars)
        )
    remind = values.get("waiting_customer_reminder_days")
    close = values.get("waiting_customer_close_days")
    if remind and close and close <= remind:
        check.add(
            ("timers", "waiting_customer_close_days"),
            "waiting_customer_close_days must be later than waiting_customer_reminder_days",
            "the customer gets the reminder first, then time to answer",
        )
    if calendar is None or len(values) != len(numbers) + 1:
        return None
    return TimerSettings(calendar=calendar, **values)


# --- the clock ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusInterval:
    """The ticket was in a status of `category` from `start` until `end` (None: still is)."""

    start: datetime
    end: datetime | None
    category: Category


@dataclass(frozen=True)
class TargetClock:
    """Where one target (first response or resolution) stands at `now`."""

    target: Target
    goal: timedelta  # business time allowed
    elapsed: timedelta  # business time used, up to completion or now
    due: datetime | None  # when the goal is (was, will be) reached; None while paused with time left
    warn_due: datetime | None  # when the warning threshold is (was, will be) reached
    completed_at: datetime | None  # first response sent / ticket closed; None while outstanding
    paused: bool
    breached: bool  # the due passed before completion (or before now, if outstanding)
    warned: bool  # the warning threshold passed before completion (or now)
    admins_due: datetime | None = None  # when the breach reaches the admins (Policy.admins_at)
    admins_reached: bool = False  # that time passed before completion (or now)

    @property
    def fraction(self) -> float:
        return self.elapsed / self.goal

    @property
    def remaining(self) -> timedelta:
        return self.goal - self.elapsed

    @property
    def state(self) -> Literal["running", "paused", "met", "breached"]:
        if self.breached:
            return "breached"
        if self.completed_at is not None:
            return "met"
        return "paused" if self.paused else "running"


@dataclass(frozen=True)
class SlaClock:
    policy: str
    first_response: TargetClock | None
    resolution: TargetClock | None

    def targets(self) -> tuple[TargetClock, ...]:
        return tuple(t for t in (self.first_response, self.resolution) if t is not None)


def sla_clock(
    policy: Policy,
    created_at: datetime,
    intervals: Sequence[StatusInterval],
    first_response_at: datetime | None,
    now: datetime,
) -> SlaClock:
    """Both clocks of a ticket at `now`, from stored facts only (see the module docstring).

    Time not covered by any interval counts as "open": a gap in the history never hides a breach.
    Facts later than `now` are ignored, so replaying history at an earlier `now` is exact.
    """
    created_at = _utc(created_at)
    now = _utc(now)
    cal = policy.calendar
    timeline = _timeline(created_at, intervals, now)
    current = timeline[-1][2] if timeline else "open"
    closed_at = None
    if current == "closed":
        closed_at = timeline[-1][0]
    first = None
    if policy.first_response is not None:
        done = _utc(first_response_at) if first_response_at is not None and first_response_at <= now else None
        done = done if done is not None else closed_at
        goal = policy.first_response
        due = cal.add(created_at, goal)
        warn_due = cal.add(created_at, goal * policy.warn_at)
        admins_due = cal.add(created_at, goal * policy.admins_at)
        until = done if done is not None else now
        first = TargetClock(
            target="first_response",
            goal=goal,
            elapsed=cal.between(created_at, until),
            due=due,
            warn_due=warn_due,
            completed_at=done,
            paused=False,
            breached=until > due,
            warned=until >= warn_due,
            admins_due=admins_due,
            admins_reached=until > admins_due,
        )
    resolution = None
    if policy.resolution is not None:
        goal = policy.resolution
        running = [
            (s, None if (e == now and cat == current) else e) for s, e, cat in timeline if cat == "open"
        ]
        elapsed = sum((cal.between(s, e if e is not None else now) for s, e in running), timedelta(0))
        reach = _reach(cal, running, goal)  # None: the clock stopped before the goal
        warn_reach = _reach(cal, running, goal * policy.warn_at)
        admins_reach = _reach(cal, running, goal * policy.admins_at)
        until = closed_at if closed_at is not None else now
        resolution = TargetClock(
            target="resolution",
            goal=goal,
            elapsed=elapsed,
            due=reach,
            warn_due=warn_reach,
            completed_at=closed_at,
            paused=current == "waiting",
            breached=reach is not None and until > reach,
            warned=warn_reach is not None and until >= warn_reach,
            admins_due=admins_reach,
            admins_reached=admins_reach is not None and until > admins_reach,
        )
    return SlaClock(policy=policy.name, first_response=first, resolution=resolution)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware (UTC in storage), got naive {value!r}")
    return value.astimezone(UTC)


def _timeline(
    created_at: datetime, intervals: Sequence[StatusInterval], now: datetime
) -> list[tuple[datetime, datetime, Category]]:
    """[created_at, now] cut into (start, end, category) runs; the latest-starting interval wins."""
    if now <= created_at:
        return []
    ordered = sorted(
        ((_utc(iv.start), _utc(iv.end) if iv.end is not None else None, iv.category) for iv in intervals),
        key=lambda iv: iv[0],
    )
    for _, _, category in ordered:
        if category not in CATEGORIES:
            raise ValueError(f"status category must be one of {CATEGORIES}, got {category!r}")
    cuts = {created_at, now}
    for s, e, _ in ordered:
        for t in (s, e):
            if t is not None and created_at < t < now:
                cuts.add(t)
    points = sorted(cuts)
    runs: list[tuple[datetime, datetime, Category]] = []
    for lo, hi in zip(points, points[1:], strict=False):
        cat: Category = "open"
        for s, e, c in ordered:
            if s <= lo and (e is None or e > lo):
                cat = c
        if runs and runs[-1][2] == cat:
            runs[-1] = (runs[-1][0], hi, cat)
        else:
            runs.append((lo, hi, cat))
    return runs


def _reach(
    cal: BusinessCalendar, running: Sequence[tuple[datetime, datetime | None]], amount: timedelta
) -> datetime | None:
    """The instant the running time reaches `amount`; None if the clock stopped before it."""
    used = timedelta(0)
    for start, end in running:
        if end is None:  # still running: the rest of the amount lies ahead
            return cal.add(start, amount - used)
        span = cal.between(start, end)
        if used + span >= amount:
            return cal.add(start, amount - used)
        used += span
    return None
