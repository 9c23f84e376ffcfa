"""The figures of `mailgate report`: what the desk did, how fast, how well, per period or per value.

Counts come from SQL aggregates (GROUP BY over indexed ranges, on SQLite and PostgreSQL alike),
so a year of a busy desk is a few hundred result rows (grouped by period: `period_of`), never
the rows themselves:

- volume: tickets created (by channel: the "created" event's intake source), replies in (the
  "reply" events: requesters and participants), replies out (public "comment" events of agents),
  reopened (status changes from a closed-category status to another category);
- backlog at the end of each period by status category, replayed from the audit trail ("created"
  and "status" events) so a past period shows what was open then, not now;
- satisfaction: each rated ticket's latest rating (a changed mind replaces the first), the 1-5
  distribution, the comments; response rate = tickets surveyed in the period (they entered a
  resolved status, which sends the survey) that have a rating, over those surveyed;
- workload per agent and group: assigned (tickets now theirs that were created or handed to them
  in the period), resolved (now theirs, resolved in the period), open now.

Times need a business calendar, which SQL does not have: the tickets whose first response,
resolution or SLA target may fall in the range are read in batches, and each is measured with its
status trail by `mailgate.domain.sla.sla_clock` — the same clock the SLA jobs run — unless its
figures were kept by an earlier report and nothing they rest on changed since (facts.py).
Each ticket is measured in the calendar of its SLA policy (first match in rules/sla.toml), else in
the [timers] calendar, else around the clock. Resolution time is business time from creation to the
last resolution (waiting on the customer included); the SLA resolution target counts only time in
an open status, as the live clock does.

A target is counted in the period where it was decided: met or breached when it completed (first
response sent, ticket entered a closed status), or breached when its due passed while it was
still outstanding. Filters (--desk/--group/--agent) and --by group/agent/priority/type use the
ticket's values now.

It must not write to the database, read the clock (callers pass `now`) or print.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, Table, and_, case, cast, func, literal_column, null, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from mailgate.domain.calendar import BusinessCalendar
from mailgate.domain.sla import SlaRules
from mailgate.domain.workflow import Workflow
from mailgate.pipeline.sla_apply import TrailEvent
from mailgate.reports.facts import Measured, Remember, fingerprint, measure, micros, rules_key, save
from mailgate.reports.period import Periods
from mailgate.store.db import Database
from mailgate.store.models import Event, ReportFacts, Ticket, utc
from mailgate.store.repo import Repo

__all__ = [
    "BY",
    "CHANNELS",
    "Durations",
    "Report",
    "Row",
    "Scope",
    "Workload",
    "build_report",
    "channel_of",
]

BY = ("day", "week", "month", "group", "agent", "priority", "type")
CHANNELS = ("smtp", "imap", "pipe")
TARGETS = ("first_response", "resolution")
_TICKET: Table = Ticket.__table__  # type: ignore[attr-defined]
_EVENT: Table = Event.__table__  # type: ignore[attr-defined]
_FACTS: Table = ReportFacts.__table__  # type: ignore[attr-defined]
_T = _TICKET.c
_E = _EVENT.c
_JOINED = _EVENT.join(_TICKET, _E.ticket_id == _T.id)
_BY_COLUMN = {"group": _T.group, "agent": _T.assignee, "priority": _T.priority, "type": _T.type}
NONE_LABEL = "(none)"
Progress = Callable[[int, int], None]


def channel_of(source: str | None) -> str:
    """The intake an "created" event names, as the three channels people know: mail delivered by
    SMTP (or LMTP from the MTA), fetched by IMAP, or piped in (pipe, mbox, maildir)."""
    source = (source or "").lower()
    if source in ("smtp", "lmtp"):
        return "smtp"
    if source.startswith("imap"):
        return "imap"
    return "pipe"


@dataclass(frozen=True)
class Scope:
    """Which tickets: all, or one desk / group / assignee (their values now)."""

    desk: str | None = None
    group: str | None = None
    agent: str | None = None

    def where(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.desk:
            out.append(_T.desk == self.desk.upper())
        if self.group:
            out.append(_T.group == self.group)
        if self.agent:
            out.append(_T.assignee == self.agent.lower())
        return out


@dataclass
class Durations:
    """Business-time durations in seconds, summarised as count, median and p90 (nearest rank:
    the smallest value with at least 90% of the values at or below it)."""

    values: list[float] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def p90(self) -> float | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[max(math.ceil(0.9 * len(ordered)) - 1, 0)]


@dataclass
class Row:
    """The figures of one period (or one group-by value, or the whole range: the total)."""

    label: str
    created: int = 0
    created_by_channel: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    replies_in: int = 0
    replies_out: int = 0
    reopened: int = 0
    backlog: dict[str, int] = field(default_factory=lambda: {"open": 0, "waiting": 0})
    first_response: Durations = field(default_factory=Durations)
    resolution: Durations = field(default_factory=Durations)
    sla_met: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TARGETS, 0))
    sla_breached: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TARGETS, 0))
    ratings: dict[int, int] = field(default_factory=lambda: dict.fromkeys(range(1, 6), 0))
    surveyed: int = 0
    surveyed_rated: int = 0

    def attainment(self, target: str) -> float | None:
        """Share of the target's decided tickets that met it, 0-100; None when none was decided."""
        decided = self.sla_met[target] + self.sla_breached[target]
        return 100.0 * self.sla_met[target] / decided if decided else None

    @property
    def rating_count(self) -> int:
        return sum(self.ratings.values())

    @property
    def rating_average(self) -> float | None:
        n = self.rating_count
        return sum(k * v for k, v in self.ratings.items()) / n if n else None

    @property
    def response_rate(self) -> float | None:
        return 100.0 * self.surveyed_rated / self.surveyed if self.surveyed else None


@dataclass
class Workload:
    """One agent's or group's share: assigned and resolved in the range, open now."""

    kind: str  # agent | group
    name: str
    assigned: int = 0
    resolved: int = 0
    open_now: int = 0


@dataclass(frozen=True)
class Comment:
    key: str
    rating: int
    comment: str
    at: datetime


@dataclass
class Report:
    periods: Periods
    by: str | None
    scope: Scope
    rows: list[Row]
    total: Row
    breaches_by_policy: dict[tuple[str, str], int]  # (policy, target) -> breaches in the range
    comments: list[Comment]
    workload: list[Workload]
    now: datetime


# --- SQL helpers ---------------------------------------------------------------------------------


def period_of(column: Any, starts: Sequence[datetime]) -> Any:
    """The index of the period a timestamp falls in, computed by the database: a CASE that
    bisects the periods' starts (a year of days is nine comparisons a row), so a GROUP BY on it
    returns one row per period, not one per instant. Before the first start it says 0: callers
    filter by range, or tell the events before it apart themselves (_flow's phase)."""

    def between(lo: int, hi: int) -> Any:
        if hi - lo == 1:
            return literal_column(str(lo))
        mid = (lo + hi) // 2
        return case((column < starts[mid], between(lo, mid)), else_=between(mid, hi))

    if len(starts) == 1:  # a bare constant in a GROUP BY would be a column's position
        return case((column < starts[0], literal_column("0")), else_=literal_column("0"))
    return between(0, len(starts))


class _Keys:
    """Turns a result row's group-by key into a row index, and names the rows."""

    def __init__(self, periods: Periods, by: str | None) -> None:
        self.periods = periods
        self.by = by
        self.time = by is None or by in ("day", "week", "month")
        self.values: dict[str | None, int] = {}

    def expr(self, time_column: Any) -> Any:
        if self.by is None:
            return None
        if self.time:
            return period_of(time_column, self.periods.starts)
        return _BY_COLUMN[self.by]

    def index(self, key: Any, moment: datetime | None = None) -> int | None:
        """The row of a SQL key (a period's index, or a column value) or, for Python-side
        figures, of a moment and the ticket's column value `key`."""
        if self.time:
            if moment is None:
                return 0 if self.by is None else int(key)
            return self.periods.index(moment)
        if moment is not None and self.periods.index(moment) is None:
            return None
        return self.values.setdefault(key, len(self.values))


def _in_range(column: Any, periods: Periods) -> ColumnElement[bool]:
    return and_(column >= periods.since, column < periods.until)


def _grouped(session: Session, keys: _Keys, time_column: Any, *columns: Any, where: Sequence[Any]) -> Any:
    """SELECT key, columns..., count(*) ... GROUP BY key, columns (key omitted with no --by)."""
    key = keys.expr(time_column)
    head = [key] if key is not None else []
    stmt = select(*head, *columns, func.count()).where(*where)
    group = [*head, *columns]
    if group:
        stmt = stmt.group_by(*group)
    return stmt


def _key_of(keys: _Keys, row: Sequence[Any]) -> tuple[int | None, Sequence[Any]]:
    if keys.by is None:
        return 0, row
    return keys.index(row[0]), row[1:]


# --- the report ----------------------------------------------------------------------------------


def build_report(
    session: Session,
    periods: Periods,
    *,
    workflows: Mapping[str, Workflow],
    sla: SlaRules | None,
    now: datetime,
    by: str | None = None,
    scope: Scope | None = None,
    remember: Remember | None = None,
    progress: Progress | None = None,
) -> Report:
    """Every figure of the range; `workflows` maps a desk key to its workflow (status categories,
    which statuses are resolved), `sla` is rules/sla.toml (None: no SLA, times around the clock).
    `remember` gets the closed tickets measured afresh, to keep (facts.save); `progress(done,
    total)` hears of the tickets measured, a batch at a time (the only slow part of a long range)."""
    if by is not None and by not in BY:
        raise ValueError(f"--by must be one of {', '.join(BY)}, got {by!r}")
    if by in ("day", "week", "month") and periods.by != by:
        raise ValueError("the periods are not cut by the --by given")
    scope = scope or Scope()
    keys = _Keys(periods, by)
    rows: dict[int, Row] = {}
    if keys.time:
        rows = {i: Row(label) for i, label in enumerate(periods.labels)}

    def row(i: int | None) -> Row | None:
        if i is None:
            return None
        if i not in rows:
            rows[i] = Row("")
        return rows[i]

    base = scope.where()
    _volume(session, keys, periods, base, row)
    _flow(session, keys, periods, base, row, workflows)
    _satisfaction(session, keys, periods, base, row, workflows)
    breaches = _times(
        session, keys, periods, base, row, workflows, sla, min(now, periods.until), remember, progress
    )
    comments = _comments(session, periods, base)
    workload = _workload(session, periods, base)
    ordered: list[Row]
    if keys.time:
        ordered = [rows[i] for i in sorted(rows)]
    else:
        names = {i: (NONE_LABEL if v is None else str(v)) for v, i in keys.values.items()}
        for i, r in rows.items():
            r.label = names[i]
        ordered = sorted(rows.values(), key=lambda r: (r.label == NONE_LABEL, r.label))
    total = _total(ordered, keys.time)
    return Report(periods, by, scope, ordered, total, breaches, comments, workload, now)


def _volume(session: Session, keys: _Keys, periods: Periods, base: list[Any], row: Any) -> None:
    joined = [_E.ticket_id == _T.id, _in_range(_E.created_at, periods), *base]
    source = _E.data["source"].as_string()
    stmt = _grouped(session, keys, _E.created_at, source, where=[_E.kind == "created", *joined])
    for raw in session.execute(stmt.select_from(_JOINED)):
        i, (src, n) = _key_of(keys, raw)
        r = row(i)
        if r is not None:
            r.created += n
            r.created_by_channel[channel_of(src)] += n
    internal = _E.data["internal"].as_boolean()
    stmt = _grouped(
        session, keys, _E.created_at, _E.kind, internal, where=[_E.kind.in_(("reply", "comment")), *joined]
    )
    for raw in session.execute(stmt.select_from(_JOINED)):
        i, (kind, is_internal, n) = _key_of(keys, raw)
        r = row(i)
        if r is None:
            continue
        if kind == "reply":
            r.replies_in += n
        elif not is_internal:
            r.replies_out += n


def _flow(
    session: Session,
    keys: _Keys,
    periods: Periods,
    base: list[Any],
    row: Any,
    workflows: Mapping[str, Workflow],
) -> None:
    """Backlog and reopens from the "created" and "status" events: each moves one ticket from one
    status category to another, so the backlog at an instant is the sum of the moves before it."""
    key = keys.expr(_E.created_at)
    head = [key] if key is not None else []
    phase = case((_E.created_at < periods.since, 0), else_=1)
    columns = (
        phase,
        _T.desk,
        _E.kind,
        _E.data["status"].as_string(),
        _E.data["old"].as_string(),
        _E.data["new"].as_string(),
        _E.data["category"].as_string(),
    )
    stmt = (
        select(*head, *columns, func.count())
        .select_from(_JOINED)
        .where(_E.kind.in_(("created", "status")), _E.created_at < periods.until, *base)
        .group_by(*head, *columns)
    )
    before: dict[str, int] = defaultdict(int)  # the backlog at `since` (periods in time)
    moves: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for raw in session.execute(stmt):
        value, rest = (None, raw) if key is None else (raw[0], raw[1:])
        in_range, desk, kind, initial, old, new, stored, n = tuple(rest)
        category = _categories(workflows.get(desk))
        src = None if kind == "created" else category(old)
        dst = category(initial) if kind == "created" else category(new, stored)
        if not in_range and keys.time:
            index = None
        elif keys.time and key is not None:
            index = keys.index(value)
        else:
            index = keys.index(value) if key is not None else 0
        target = before if index is None else moves[index]
        if src is not None:
            target[src] -= n
        target[dst] += n
        if in_range and index is not None and src == "closed" and dst != "closed":
            r = row(index)
            if r is not None:
                r.reopened += n
    if keys.time:
        running = dict(before)
        for index in range(len(periods.labels)):
            for cat, n in moves.get(index, {}).items():
                running[cat] = running.get(cat, 0) + n
            row(index).backlog = {"open": running.get("open", 0), "waiting": running.get("waiting", 0)}
    else:
        for index, cats in moves.items():
            row(index).backlog = {"open": cats.get("open", 0), "waiting": cats.get("waiting", 0)}


def _categories(wf: Workflow | None) -> Any:
    def category(status: str | None, stored: str | None = None) -> str:
        """The category an event names, else the one its status has in the desk's workflow."""
        if stored in ("open", "waiting", "closed"):
            return stored
        if wf is None or status is None:
            return "open"
        value = wf.category(status)
        return value if value in ("open", "waiting", "closed") else "open"

    return category


def _satisfaction(
    session: Session,
    keys: _Keys,
    periods: Periods,
    base: list[Any],
    row: Any,
    workflows: Mapping[str, Workflow],
) -> None:
    joined = _JOINED
    stmt = _grouped(
        session,
        keys,
        _E.created_at,
        _E.data["rating"].as_integer(),
        where=[_E.kind == "rating", _E.id == _latest_rating(), _in_range(_E.created_at, periods), *base],
    ).select_from(joined)
    for raw in session.execute(stmt):
        i, (rating, n) = _key_of(keys, raw)
        r = row(i)
        if r is not None and rating in r.ratings:
            r.ratings[rating] += n
    # Surveys: entering a resolved status sends one (pipeline/handlers.py); answered when the
    # ticket now has a rating.
    resolved = [
        and_(_T.desk == desk, _E.data["new"].as_string().in_(ids))
        for desk, wf in workflows.items()
        if (ids := [s.id for s in wf.statuses.values() if s.resolved])
    ]
    if not resolved:
        return
    key = keys.expr(_E.created_at)
    head = [key] if key is not None else []
    stmt = select(*head, func.count(), func.sum(case((_T.rating.is_not(None), 1), else_=0))).select_from(
        joined
    )
    stmt = stmt.where(_E.kind == "status", or_(*resolved), _in_range(_E.created_at, periods), *base)
    if head:
        stmt = stmt.group_by(*head)
    for raw in session.execute(stmt):
        i, (n, rated) = _key_of(keys, raw)
        r = row(i)
        if r is not None:
            r.surveyed += n
            r.surveyed_rated += int(rated or 0)


def _latest_rating() -> Any:
    """The id of the ticket's latest rating event: a changed mind replaces the first rating."""
    later = _EVENT.alias("later")
    return (
        select(func.max(later.c.id))
        .where(later.c.ticket_id == _E.ticket_id, later.c.kind == "rating")
        .scalar_subquery()
    )


def _comments(session: Session, periods: Periods, base: list[Any]) -> list[Comment]:
    stmt = (
        select(_T.key, _E.data["rating"].as_integer(), _E.data["comment"].as_string(), _E.created_at)
        .select_from(_JOINED)
        .where(_E.kind == "rating", _E.id == _latest_rating(), _in_range(_E.created_at, periods), *base)
        .order_by(_E.created_at, _E.id)
    )
    out = []
    for key, rating, comment, at in session.execute(stmt):
        if comment and comment.strip():
            out.append(Comment(key, int(rating), comment.strip(), utc(at)))
    return out


def _workload(session: Session, periods: Periods, base: list[Any]) -> list[Workload]:
    """Per agent (assignee) and per group: assigned and resolved in the range, open now."""
    found: dict[tuple[str, str], Workload] = {}
    resolved_at = func.coalesce(_T.resolved_at, _T.closed_at)
    for kind, column, event_kind in (("agent", _T.assignee, "assign"), ("group", _T.group, "group")):
        handed = (
            select(_E.id)
            .where(
                _E.ticket_id == _T.id,
                _E.kind == event_kind,
                _E.data["new"].as_string() == column,
                _in_range(_E.created_at, periods),
            )
            .exists()
        )
        figures = (
            ("assigned", or_(_in_range(_T.created_at, periods), handed)),
            ("resolved", _in_range(resolved_at, periods)),
            ("open_now", _T.status_category != "closed"),
        )
        for name, condition in figures:
            stmt = select(column, func.count()).where(column.is_not(None), condition, *base).group_by(column)
            for value, n in session.execute(stmt):
                w = found.setdefault((kind, value), Workload(kind, value))
                setattr(w, name, n)
    return sorted(found.values(), key=lambda w: (w.kind, w.name))


_ALWAYS = BusinessCalendar.always()
_BATCH = 2000
_R = _FACTS.c
_TRAIL = _EVENT.alias("trail")
_TRAIL_OF = (_TRAIL.c.ticket_id == _T.id, _TRAIL.c.kind.in_(("created", "status")))
# What a ticket's figures are measured from (facts.py): its columns as text, and its trail.
_FINGERPRINTED = (
    *(
        cast(c, String)
        for c in (_T.created_at, _T.first_response_at, _T.resolved_at, _T.closed_at, _T.fields)
    ),
    _T.status,
    _T.status_category,
    _T.priority,
    _T.type,
    _T.category,
    _T.group,
    _T.assignee,
    select(func.max(_TRAIL.c.id)).where(*_TRAIL_OF).scalar_subquery(),
)
_KEPT = (
    _R.fingerprint,
    _R.stable_us,
    _R.policy,
    _R.first_response_us,
    _R.first_response_s,
    _R.resolved_us,
    _R.resolution_s,
    _R.fr_done_us,
    _R.fr_breached,
    _R.fr_due_us,
    _R.res_done_us,
    _R.res_breached,
    _R.res_due_us,
)


def _times(
    session: Session,
    keys: _Keys,
    periods: Periods,
    base: list[Any],
    row: Any,
    workflows: Mapping[str, Workflow],
    sla: SlaRules | None,
    at: datetime,
    remember: Remember | None,
    progress: Progress | None,
) -> dict[tuple[str, str], int]:
    """First-response and resolution times, SLA outcomes: per ticket, in Python, with the clock —
    or, for a ticket measured before and unchanged since, its kept figures (facts.py)."""
    breaches: dict[tuple[str, str], int] = defaultdict(int)
    attr = {"group": "group", "agent": "assignee", "priority": "priority", "type": "type"}.get(keys.by or "")
    by_column = getattr(_T, attr) if attr else null()
    repo = Repo(session)
    default_calendar = sla.timers.calendar if sla is not None else _ALWAYS
    rules = {desk: rules_key(wf, sla) for desk, wf in workflows.items()}
    at_us = micros(at)
    since_us, until_us = micros(periods.since), micros(periods.until)
    starts = [micros(s) for s in periods.starts]

    def place(us: int | None, value: object) -> Row | None:
        if us is None or not since_us <= us < until_us:
            return None
        if keys.time:
            return row(0 if keys.by is None else bisect.bisect_right(starts, us) - 1)
        return row(keys.values.setdefault(value, len(keys.values)))  # type: ignore[arg-type]

    def count(m: Measured, value: object) -> None:
        if m.first_response_s is not None and (r := place(m.first_response_us, value)) is not None:
            r.first_response.values.append(m.first_response_s)
        if m.resolution_s is not None and (r := place(m.resolved_us, value)) is not None:
            r.resolution.values.append(m.resolution_s)
        for target in TARGETS:
            decided = m.decided(target, at_us)
            if decided is None or (r := place(decided[0], value)) is None:
                continue
            breached = decided[1]
            if breached:
                r.sla_breached[target] += 1
                breaches[(m.policy or "", target)] += 1
            else:
                r.sla_met[target] += 1

    where = _candidate_where(periods, base)
    total = session.execute(select(func.count()).where(*where)).scalar_one() if progress else 0
    done = 0
    after = 0
    while True:
        stmt = (
            select(_T.id, _T.desk, by_column, *_FINGERPRINTED, *_KEPT)
            .select_from(_TICKET.outerjoin(_FACTS, _R.ticket_id == _T.id))
            .where(*where, _T.id > after)
            .order_by(_T.id)
            .limit(_BATCH)
        )
        batch = session.execute(stmt).all()
        if not batch:
            return dict(breaches)
        missed: dict[int, tuple[str, object]] = {}
        for tid, desk, value, *values in batch:
            if desk not in workflows:
                continue
            fp = fingerprint(rules[desk], values[: len(_FINGERPRINTED)])
            kept = values[len(_FINGERPRINTED) :]
            if kept[0] == fp and kept[1] <= at_us:
                count(Measured._make([*kept[2:], kept[1]]), value)
            else:
                missed[tid] = (fp, value)
        fresh: list[tuple[int, str, Measured]] = []
        if missed:
            trails = status_trails(session, list(missed))
            tickets = session.execute(select(Ticket).where(_T.id.in_(missed))).scalars()
            for ticket in tickets:
                assert ticket.id is not None
                fp, value = missed[ticket.id]
                m = measure(
                    repo,
                    ticket,
                    trails.get(ticket.id, []),
                    workflows[ticket.desk],
                    sla,
                    default_calendar,
                    at,
                )
                count(m, value)
                if m.stable_us <= at_us:  # nothing after the clock: the same at any later one
                    fresh.append((ticket.id, fp, m))
            session.expunge_all()  # the batch is done: keep memory flat
        if fresh and remember is not None:
            remember(fresh)
        done += len(batch)
        if progress is not None:
            progress(done, total)
        after = batch[-1][0]


def _candidate_where(periods: Periods, base: list[Any]) -> list[Any]:
    """Tickets that may have a first response, a resolution or an SLA decision in the range."""
    done_at = func.coalesce(_T.closed_at, _T.resolved_at)
    return [
        _T.created_at < periods.until,
        or_(_T.status_category != "closed", done_at.is_(None), done_at >= periods.since),
        *base,
    ]


_TRAIL_KEYS = ("status", "old", "new", "category")


def status_trails(session: Session, ids: Sequence[int]) -> dict[int, list[TrailEvent]]:
    """The "created" and "status" events of these tickets, as the SLA clock reads them. Only the
    four keys it reads are taken out of the JSON, by the database: decoding every event's whole
    data in Python was a tenth of a year's report."""
    trails: dict[int, list[TrailEvent]] = defaultdict(list)
    stmt = (
        select(_E.ticket_id, _E.kind, *(_E.data[k].as_string() for k in _TRAIL_KEYS), _E.created_at)
        .where(_E.ticket_id.in_(ids), _E.kind.in_(("created", "status")))
        .order_by(_E.ticket_id, _E.id)
    )
    for tid, kind, *values, created_at in session.execute(stmt):
        data = {k: v for k, v in zip(_TRAIL_KEYS, values, strict=True) if v is not None}
        trails[tid].append(TrailEvent(kind, data, created_at))
    return trails


def _total(rows: Sequence[Row], time: bool) -> Row:
    total = Row("total")
    for r in rows:
        total.created += r.created
        for ch, n in r.created_by_channel.items():
            total.created_by_channel[ch] += n
        total.replies_in += r.replies_in
        total.replies_out += r.replies_out
        total.reopened += r.reopened
        total.first_response.values.extend(r.first_response.values)
        total.resolution.values.extend(r.resolution.values)
        for t in TARGETS:
            total.sla_met[t] += r.sla_met[t]
            total.sla_breached[t] += r.sla_breached[t]
        for k, n in r.ratings.items():
            total.ratings[k] += n
        total.surveyed += r.surveyed
        total.surveyed_rated += r.surveyed_rated
        if not time:
            for cat, n in r.backlog.items():
                total.backlog[cat] += n
    if time and rows:
        total.backlog = dict(rows[-1].backlog)  # the backlog at the end of the range
    return total


def hours(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 3600, 2)


def span_text(seconds: float | None) -> str:
    """3h 20m; 2d 4h for long ones (days of 24 business hours are not days: hours it is)."""
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    h, m = divmod(minutes, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m"


def report_of(
    db: Database,
    periods: Periods,
    *,
    workflows: Mapping[str, Workflow],
    sla: SlaRules | None,
    now: datetime,
    by: str | None = None,
    scope: Scope | None = None,
    progress: Progress | None = None,
) -> Report:
    """`build_report` on a read of `db`, keeping the figures it measured afresh (what
    `mailgate report` and the web page both do)."""

    def remember(rows: list[tuple[int, str, Measured]]) -> None:
        # Kept figures are measured again if lost: no need to wait for the disk.
        with db.session(durable=False) as w:
            save(w, rows)

    with db.reading() as s:
        return build_report(
            s,
            periods,
            workflows=workflows,
            sla=sla,
            now=now,
            by=by,
            scope=scope,
            remember=remember,
            progress=progress,
        )
