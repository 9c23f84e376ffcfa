"""What the periodic jobs should do now: pure decisions over ticket facts, settings and `now`.

Each job is a function `(facts, settings, now) -> list of actions`. An action says what to send or
change AND carries `marks`: the (field, value) pairs the caller must store on the ticket in the
same transaction as the action's effect (outbox row, status change). The decisions read those
marks back, which is what makes every job idempotent and makes catch-up happen once:

- run twice at the same `now`: the second run sees the marks and returns nothing;
- the daemon was down for a week: the first run after it returns ONE action per ticket and job
  (an escalation, not a warning plus an escalation; one review, not one per missed period).

Actions whose effect changes the facts themselves (AutoClose moves the ticket out of "resolved")
need no mark. The digest mark belongs to the job, not to a ticket (`last_digest_at` per desk).

This module must not read the clock, the database, templates or the network. Who exactly gets
an escalation (group lead, else triage person) is resolved by the caller from team.toml.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from mailgate.domain.sla import (
    Category,
    SlaRules,
    StatusInterval,
    Target,
    TimerSettings,
    policy_for,
    sla_clock,
)

__all__ = [
    "Action",
    "AutoClose",
    "DeferredReview",
    "Digest",
    "Escalate",
    "Mark",
    "RemindCustomer",
    "RemindTriage",
    "TicketFacts",
    "Warn",
    "auto_close_resolved",
    "deferred_review",
    "digests",
    "sla_check",
    "triage_reminder",
    "waiting_customer",
]

Mark = tuple[str, datetime]
ESCALATED_TAG = "escalated"


@dataclass(frozen=True)
class TicketFacts:
    """What the jobs need to know about one ticket. All datetimes timezone-aware.

    The `*_at` marks at the end are written only from actions' `marks`; their names are the
    attribute names, so the caller can store them as columns of the same names.
    """

    key: str
    created_at: datetime
    status: str
    category: Category
    status_since: datetime  # when the current status began
    intervals: Sequence[StatusInterval] = ()  # status history, for the SLA clock
    first_response_at: datetime | None = None  # first public reply by a human agent
    priority: str | int | None = None
    type: str | None = None
    group: str | None = None
    assignee: str | None = None
    custom_fields: Mapping[str, object] = field(default_factory=dict)
    resolved_since: datetime | None = None  # in a resolved (not yet final) status since
    deferred_since: datetime | None = None  # in a deferred status since
    # marks
    first_response_warned_at: datetime | None = None
    first_response_escalated_at: datetime | None = None
    resolution_warned_at: datetime | None = None
    resolution_escalated_at: datetime | None = None
    first_response_admins_at: datetime | None = None
    resolution_admins_at: datetime | None = None
    triage_reminded_at: datetime | None = None
    customer_reminded_at: datetime | None = None
    last_review_at: datetime | None = None

    def match_fields(self) -> dict[str, object]:
        """The flat mapping `policy_for` matches against."""
        fields: dict[str, object] = dict(self.custom_fields)
        for name in ("priority", "type", "group", "assignee"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        return fields


# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Warn:
    """Tell the assignee (else the group) that `target` is due soon."""

    ticket_key: str
    target: Target
    due: datetime
    policy: str
    assignee: str | None
    group: str | None
    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class Escalate:
    """`target` is breached: mail the group lead (else the triage person) and tag the ticket;
    `level` 2, the breach still open at the policy's `admins_at`: mail the desk's admins. Who
    exactly, and that nobody gets two steps in a row, is the caller's (team.toml)."""

    ticket_key: str
    target: Target
    due: datetime
    policy: str
    assignee: str | None
    group: str | None
    marks: tuple[Mark, ...]
    tag: str = ESCALATED_TAG
    level: int = 1


@dataclass(frozen=True)
class RemindTriage:
    """A new ticket has had no human reply for `unanswered_for`: the triage person steps in."""

    ticket_key: str
    created_at: datetime
    unanswered_for: timedelta  # in the timers calendar's business time
    group: str | None
    assignee: str | None
    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class AutoClose:
    """Move the ticket to its final closed status; the status change is its own mark."""

    ticket_key: str
    reason: Literal["resolved", "no_customer_reply"]
    since: datetime  # resolved since / waiting since
    marks: tuple[Mark, ...] = ()


@dataclass(frozen=True)
class RemindCustomer:
    """Ask the requester once more; `close_at` is when the ticket will close without an answer."""

    ticket_key: str
    waiting_since: datetime
    close_at: datetime | None
    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class DeferredReview:
    """Bring a deferred ticket back to its group (or assignee) for review."""

    ticket_key: str
    group: str | None
    assignee: str | None
    deferred_since: datetime
    marks: tuple[Mark, ...]


@dataclass(frozen=True)
class Digest:
    """The daily summary for one agent or group: keys of open, due-soon and breached tickets."""

    recipient_kind: Literal["agent", "group"]
    recipient: str
    open: tuple[str, ...]
    due_soon: tuple[str, ...]
    breached: tuple[str, ...]
    marks: tuple[Mark, ...]  # job-level: ("last_digest_at", now)


Action = Warn | Escalate | RemindTriage | AutoClose | RemindCustomer | DeferredReview | Digest


# --- the jobs -----------------------------------------------------------------------------------


def sla_check(ticket: TicketFacts, rules: SlaRules, now: datetime) -> list[Warn | Escalate]:
    """Warn once when a target passes its warning threshold, escalate once when it is breached.

    Only outstanding targets count: a first response already sent, or a ticket closed, is never
    warned about or escalated late. A breach found after downtime escalates without a warning
    first (and marks the warning done, so it never follows).
    """
    now = _utc(now)
    policy = policy_for(rules, ticket.match_fields())
    if policy is None or ticket.category == "closed":
        return []
    clock = sla_clock(policy, ticket.created_at, ticket.intervals, ticket.first_response_at, now)
    actions: list[Warn | Escalate] = []
    for target in clock.targets():
        if target.completed_at is not None:
            continue
        warned = getattr(ticket, f"{target.target}_warned_at")
        escalated = getattr(ticket, f"{target.target}_escalated_at")
        to_admins = getattr(ticket, f"{target.target}_admins_at")
        if target.breached and target.due is not None:
            # The ladder: warned (assignee) → escalated (lead) → admins. After downtime only the
            # highest step due is taken, and the steps below are marked done with it.
            level = 2 if target.admins_reached else 1
            if escalated is None or (level == 2 and to_admins is None):
                marks: tuple[Mark, ...] = ()
                if level == 2:
                    marks += ((f"{target.target}_admins_at", now),)
                if escalated is None:
                    marks += ((f"{target.target}_escalated_at", now),)
                if warned is None:
                    marks += ((f"{target.target}_warned_at", now),)
                actions.append(
                    Escalate(
                        ticket.key,
                        target.target,
                        target.due,
                        policy.name,
                        ticket.assignee,
                        ticket.group,
                        marks,
                        level=level,
                    )
                )
        elif target.warned and not target.paused and warned is None and target.due is not None:
            actions.append(
                Warn(
                    ticket.key,
                    target.target,
                    target.due,
                    policy.name,
                    ticket.assignee,
                    ticket.group,
                    ((f"{target.target}_warned_at", now),),
                )
            )
    return actions


def triage_reminder(ticket: TicketFacts, settings: TimerSettings, now: datetime) -> list[RemindTriage]:
    """The care desk's angel: a ticket still without a human reply after N business hours, once.

    Tickets waiting (someone asked the customer), deferred or closed are not "unanswered".
    """
    hours = settings.unanswered_reminder_hours
    if (
        hours is None
        or ticket.first_response_at is not None
        or ticket.category != "open"
        or ticket.deferred_since is not None
        or ticket.triage_reminded_at is not None
    ):
        return []
    now = _utc(now)
    waited = settings.calendar.between(ticket.created_at, now)
    if waited < timedelta(hours=hours):
        return []
    return [
        RemindTriage(
            ticket.key,
            ticket.created_at,
            waited,
            ticket.group,
            ticket.assignee,
            (("triage_reminded_at", now),),
        )
    ]


def auto_close_resolved(ticket: TicketFacts, settings: TimerSettings, now: datetime) -> list[AutoClose]:
    """Resolved (Jira: Completed) for N calendar days without a reopen: close it."""
    days = settings.auto_close_resolved_days
    if days is None or ticket.resolved_since is None:
        return []
    if _utc(now) < _utc(ticket.resolved_since) + timedelta(days=days):
        return []
    return [AutoClose(ticket.key, "resolved", ticket.resolved_since)]


def waiting_customer(
    ticket: TicketFacts, settings: TimerSettings, now: datetime
) -> list[RemindCustomer | AutoClose]:
    """Waiting on the customer: one reminder after N days, then close after M days.

    The reminder promises a closing date; if it went out late (downtime), the customer still gets
    the promised time (M - N days) after it before the ticket closes. With reminders off, the
    ticket closes M days after it started waiting. Deferred tickets are not waiting on anyone.
    """
    remind_days = settings.waiting_customer_reminder_days
    close_days = settings.waiting_customer_close_days
    if ticket.category != "waiting" or ticket.deferred_since is not None or not (remind_days or close_days):
        return []
    now = _utc(now)
    since = _utc(ticket.status_since)
    reminded = ticket.customer_reminded_at
    if reminded is not None and _utc(reminded) < since:
        reminded = None  # a reminder of an earlier waiting period
    if remind_days is not None and reminded is None:
        if now < since + timedelta(days=remind_days):
            return []
        close_at = _close_at(since, now, remind_days, close_days)
        return [RemindCustomer(ticket.key, since, close_at, (("customer_reminded_at", now),))]
    if close_days is None:
        return []
    if now >= _close_at(since, reminded, remind_days, close_days):
        return [AutoClose(ticket.key, "no_customer_reply", since)]
    return []


def _close_at(
    since: datetime, reminded: datetime | None, remind_days: float | None, close_days: float | None
) -> datetime:
    """When a waiting ticket may close (assumes close_days is set)."""
    assert close_days is not None
    close_at = since + timedelta(days=close_days)
    if remind_days is not None and reminded is not None:
        close_at = max(close_at, _utc(reminded) + timedelta(days=close_days - remind_days))
    return close_at


def deferred_review(ticket: TicketFacts, settings: TimerSettings, now: datetime) -> list[DeferredReview]:
    """Deferred tickets come back every N days, counted from the last review (or the deferral).

    After downtime one review goes out, and the next one is N days after it.
    """
    days = settings.deferred_review_days
    if days is None or ticket.deferred_since is None:
        return []
    now = _utc(now)
    since = _utc(ticket.deferred_since)
    last = ticket.last_review_at
    base = since if last is None or _utc(last) < since else _utc(last)
    if now < base + timedelta(days=days):
        return []
    return [DeferredReview(ticket.key, ticket.group, ticket.assignee, since, (("last_review_at", now),))]


def digest_due(settings: TimerSettings, last_digest_at: datetime | None, now: datetime) -> bool:
    """Whether the daily digest (at `digest_hour` local time of the timers calendar) is owed.

    The owed run is the latest scheduled hour not after `now`; missed days collapse into it.
    A desk that never sent one starts at the next scheduled hour, not with yesterday's.
    """
    if settings.digest_hour is None:
        return False
    now = _utc(now)
    zone = ZoneInfo(settings.calendar.tz)
    local_day = now.astimezone(zone).date()
    scheduled = datetime.combine(local_day, time(settings.digest_hour), tzinfo=zone).astimezone(UTC)
    if now < scheduled:
        if last_digest_at is None:
            return False
        previous_day = local_day - timedelta(days=1)
        scheduled = datetime.combine(previous_day, time(settings.digest_hour), tzinfo=zone).astimezone(UTC)
    return last_digest_at is None or _utc(last_digest_at) < scheduled


def digests(
    tickets: Iterable[TicketFacts], rules: SlaRules, last_digest_at: datetime | None, now: datetime
) -> list[Digest]:
    """One digest per agent and per group with open tickets, when a digest is owed (else none).

    "due soon" means an outstanding target past its warning threshold but not breached.
    """
    if not digest_due(rules.timers, last_digest_at, now):
        return []
    now = _utc(now)
    mark: tuple[Mark, ...] = (("last_digest_at", now),)
    buckets: dict[tuple[Literal["agent", "group"], str], tuple[list[str], list[str], list[str]]] = {}
    for ticket in sorted(tickets, key=lambda t: t.key):
        if ticket.category == "closed":
            continue
        soon = breached = False
        policy = policy_for(rules, ticket.match_fields())
        if policy is not None:
            clock = sla_clock(policy, ticket.created_at, ticket.intervals, ticket.first_response_at, now)
            outstanding = [t for t in clock.targets() if t.completed_at is None]
            breached = any(t.breached for t in outstanding)
            soon = not breached and any(t.warned and not t.paused for t in outstanding)
        recipients: list[tuple[Literal["agent", "group"], str]] = []
        if ticket.assignee:
            recipients.append(("agent", ticket.assignee))
        if ticket.group:
            recipients.append(("group", ticket.group))
        for recipient in recipients:
            open_keys, soon_keys, breached_keys = buckets.setdefault(recipient, ([], [], []))
            open_keys.append(ticket.key)
            if soon:
                soon_keys.append(ticket.key)
            if breached:
                breached_keys.append(ticket.key)
    return [
        Digest(kind, name, tuple(o), tuple(s), tuple(b), mark)
        for (kind, name), (o, s, b) in sorted(buckets.items())
    ]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"times must be timezone-aware (UTC in storage), got naive {value!r}")
    return value.astimezone(UTC)
