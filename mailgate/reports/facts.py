"""One ticket's measured figures — business-hours first-response and resolution times, SLA
targets — and the cache of them (store.models.ReportFacts).

The figures need the ticket's status trail and the business calendar, which SQL has not, so they
are measured in Python, one ticket at a time, with the clock the SLA jobs run. On a year of a busy
desk that was nearly all of a report's time (bench/README.md), spent again on every report for
tickets that had not changed. So each ticket's figures are kept, with a `fingerprint` of
everything they were measured from:

- the ticket's columns the measurement reads (times, status, priority, type, category, group,
  assignee, custom fields: they choose the SLA policy) and its status trail (the id of its last
  "created" or "status" event: events are only ever added, never changed or removed);
- the SLA rules and the desk's workflow (`rules_key`): calendars, holidays, policies, targets,
  status categories.

Anything that changes the figures changes the fingerprint: a reply or a status change (a
reopen, a pause waiting on the customer), a merge (it closes the ticket), a priority or group set
by command, an edit of sla.toml's calendars, holidays or policies or of workflow.toml.
A row whose fingerprint differs from the ticket's now is measured again and replaced; nothing has
to remember to invalidate it, whatever path wrote the ticket.

What the figures are kept as does not depend on the report's clock (`at`: now, or the end of a
range in the past): per SLA target, when it was completed and whether late, and when it falls
due — for a target still outstanding, the instant the clock will call it breached if nothing
happens (a resolution clock paused while waiting on the customer has none, unless it ran out
before the pause). `Measured.decided` reads them at a clock. That equals the clock's own answer
at any `at` from the ticket's last fact on (`stable_us`); a report whose clock is earlier (a
range in the past, the ticket changed after it) measures that ticket again at its clock.

Instants are microseconds since the epoch (integers compare exactly; reading them parses nothing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, overload

from sqlalchemy import Table
from sqlmodel import Session

from mailgate.domain.calendar import BusinessCalendar
from mailgate.domain.sla import SlaRules, policy_for, sla_clock
from mailgate.domain.workflow import Workflow
from mailgate.pipeline.sla_apply import TrailEvent, ticket_facts
from mailgate.store.db import insert_for
from mailgate.store.models import ReportFacts, Ticket, utc
from mailgate.store.repo import Repo

__all__ = ["Measured", "Remember", "fingerprint", "measure", "micros", "rules_key", "save"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_FACTS: Table = ReportFacts.__table__  # type: ignore[attr-defined]


@overload
def micros(moment: datetime) -> int: ...
@overload
def micros(moment: datetime | None) -> int | None: ...
def micros(moment: datetime | None) -> int | None:
    """Microseconds since the epoch of an aware (or naive-UTC) instant."""
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite's naive UTC
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _US


class Measured(NamedTuple):
    """A ticket's figures. `*_us` are instants, `*_s` business seconds. Per SLA target: when it
    was completed and whether it was late then, and when it falls due; `decided` reads them at a
    report's clock."""

    policy: str | None
    first_response_us: int | None
    first_response_s: float | None
    resolved_us: int | None
    resolution_s: float | None
    fr_done_us: int | None
    fr_breached: bool | None
    fr_due_us: int | None
    res_done_us: int | None
    res_breached: bool | None
    res_due_us: int | None
    stable_us: int  # the last fact the figures rest on

    def decided(self, target: str, at_us: int) -> tuple[int, bool] | None:
        """(when, breached) of a target at the clock `at_us`, as the SLA clock says then: met or
        late when it was completed, or breached when its due passed while still outstanding;
        None: nothing decided yet (or no such target)."""
        if target == "first_response":
            done, breached, due = self.fr_done_us, self.fr_breached, self.fr_due_us
        else:
            done, breached, due = self.res_done_us, self.res_breached, self.res_due_us
        if done is not None and done <= at_us:
            return done, bool(breached)
        if due is not None and due < at_us:
            return due, True
        return None


# What a caller does with figures measured afresh that hold at any later clock, (ticket id,
# fingerprint, figures) each: `save` them in a transaction of its own (a report only reads).
Remember = Callable[[list[tuple[int, str, Measured]]], None]


def measure(
    repo: Repo,
    ticket: Ticket,
    trail: Sequence[TrailEvent],
    workflow: Workflow,
    sla: SlaRules | None,
    default_calendar: BusinessCalendar,
    at: datetime,
) -> Measured:
    """The ticket's figures as the SLA clock sees them at `at`, in the calendar of its SLA policy
    (first match), else the [timers] calendar, else around the clock."""
    facts = ticket_facts(repo, ticket, workflow, sla, events=trail)
    policy = policy_for(sla, facts.match_fields()) if sla is not None else None
    calendar = policy.calendar if policy is not None else default_calendar
    created = facts.created_at
    first = facts.first_response_at
    clock = sla_clock(policy, created, facts.intervals, first, at) if policy is not None else None
    first_s = None
    if first is not None:
        fr = clock.first_response if clock is not None else None
        # The clock measured it already, in the same calendar, when the reply completed it.
        done = fr.elapsed if fr is not None and fr.completed_at == first else calendar.between(created, first)
        first_s = done.total_seconds()
    solved = utc(ticket.resolved_at) or utc(ticket.closed_at)
    solved_s = calendar.between(created, solved).total_seconds() if solved is not None else None
    targets: dict[str, tuple[int | None, bool | None, int | None]] = {}
    for target in clock.targets() if clock is not None else ():
        done_us = micros(target.completed_at)
        targets[target.target] = (
            done_us,
            target.breached if done_us is not None else None,
            micros(target.due),
        )
    moments = [created, *(e.created_at for e in trail), first, solved, utc(ticket.closed_at)]
    stable = max(m for m in (micros(x) for x in moments) if m is not None)
    none = (None, None, None)
    return Measured(
        policy.name if policy is not None else None,
        micros(first),
        first_s,
        micros(solved),
        solved_s,
        *targets.get("first_response", none),
        *targets.get("resolution", none),
        stable,
    )


def _canon(value: Any) -> Any:
    """A value as nested lists of strings, the same in every process (sets sorted, no hash seeds)."""
    if isinstance(value, BusinessCalendar):
        return ["calendar", value.tz, [value.hours_of(d) for d in range(7)], sorted(value.holidays)]
    if is_dataclass(value) and not isinstance(value, type):
        return [
            type(value).__name__,
            *([f.name, _canon(getattr(value, f.name))] for f in fields(value) if f.compare),
        ]
    if isinstance(value, Mapping):
        return sorted([repr(_canon(k)), _canon(v)] for k, v in value.items())
    if isinstance(value, set | frozenset):
        return sorted(repr(_canon(v)) for v in value)
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    if isinstance(value, str | int | float | bool | timedelta | date | None):
        return repr(value)
    raise TypeError(f"no canonical form for {type(value).__name__}")


def rules_key(workflow: Workflow, sla: SlaRules | None) -> str:
    """What of the rules a desk's figures depend on: its workflow (status categories, resolved
    statuses, priorities) and sla.toml (calendars with their hours and holidays, policies)."""
    text = repr([_canon(workflow), _canon(sla)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(rules: str, values: Sequence[object]) -> str:
    """The fingerprint of a ticket's figures: the rules key and the ticket's columns and trail
    summary, as the database returns them (text, so no timestamp is parsed)."""
    return hashlib.sha256((rules + repr(tuple(values))).encode()).hexdigest()[:24]


def save(session: Session, rows: Sequence[tuple[int, str, Measured]]) -> None:
    """Keep these tickets' figures (replacing stale ones)."""
    if not rows:
        return
    insert = insert_for(session.get_bind().dialect.name)(_FACTS)
    columns = [c.name for c in _FACTS.columns if c.name not in ("ticket_id",)]
    stmt = insert.on_conflict_do_update(
        index_elements=["ticket_id"], set_={c: insert.excluded[c] for c in columns}
    )
    session.execute(
        stmt,
        [{"ticket_id": tid, "fingerprint": fp, **m._asdict()} for tid, fp, m in rows],
    )
