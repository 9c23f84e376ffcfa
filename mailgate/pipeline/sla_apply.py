"""Carrying out what the periodic jobs decided, and keeping a ticket's SLA due times current.

The decisions are pure (`mailgate.domain.timers`): given a ticket's facts and `now` they return
actions that carry `marks`. This module is the other half: it builds those facts from stored
rows (the status history comes from the "created" and "status" audit events), and turns each
action into its effect — an outbox mail, a tag, a status change — while writing the action's
marks on the ticket in the caller's transaction. Effect and marks commit together or not at
all, which is what makes every job idempotent and lets a restart lose nothing.

`refresh_due` stores `first_response_due` / `resolution_due` on the ticket after every change
(the runner calls it once per applied message, the SLA check once per run), so `mailgate
tickets show` and queries see the current due times without recomputing the clock.

It must not read the clock (callers pass `now`), decide policy (the domain does), commit, or
send mail (the outbox does). It reads no file: rules/sla.toml comes in the rules snapshot
(mailgate/ruleset), with the workflows and the team it is used with.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, or_, select

from mailgate.config import Config, Desk
from mailgate.domain.sla import Category, SlaRules, StatusInterval, policy_for, sla_clock
from mailgate.domain.team import desk_admins
from mailgate.domain.timers import (
    Action,
    AutoClose,
    DeferredReview,
    Digest,
    Escalate,
    RemindCustomer,
    RemindTriage,
    TicketFacts,
    Warn,
)
from mailgate.domain.workflow import Workflow, norm
from mailgate.pipeline.apply import change_status, requester_side
from mailgate.pipeline.notify import Notifier
from mailgate.ruleset import RulesSource, Snapshot
from mailgate.store.kinds import EventKind
from mailgate.store.models import Event, Ticket, now_utc, utc
from mailgate.store.repo import Repo

log = logging.getLogger(__name__)

TARGET_LABELS = {"first_response": "first response", "resolution": "resolution"}

# What each template of the periodic jobs is given on top of Notifier.send's own variables
# (ticket, desk, recipient, subject, reply_address, unsubscribe_address, help, survey_links).
# `mailgate config check` reads this table so it knows these templates' variables.
TEMPLATE_VARIABLES: dict[str, frozenset[str]] = {
    "sla_warning": frozenset({"target", "due", "remaining", "policy", "help"}),
    "sla_escalation": frozenset({"target", "due", "overdue", "policy", "assignee", "help"}),
    "triage_reminder": frozenset({"unanswered_for", "created", "help"}),
    "customer_reminder": frozenset({"waiting_since", "close_at"}),
    "auto_closed": frozenset({"reason", "since", "status"}),
    "deferred_review": frozenset({"deferred_since", "help"}),
    # The digest is about many tickets: it gets no `ticket` (see `send_digest`).
    "digest": frozenset({"name", "kind", "open", "due_soon", "breached", "date"}),
}


def sample_context() -> dict[str, Any]:
    """Realistic values for the variables above, for `config check`'s trial render."""
    row = {
        "key": "SUP-20",
        "subject": "Printer on fire",
        "status": "Open",
        "due": "Mon 23 Nov 2026 14:00 CET",
    }
    return {
        "target": "first response",
        "due": "Mon 23 Nov 2026 14:00 CET",
        "remaining": "1h 0m",
        "overdue": "2h 30m",
        "policy": "P2",
        "assignee": "tech1@example.com",
        "unanswered_for": "4h 0m",
        "created": "Mon 23 Nov 2026 10:00 CET",
        "waiting_since": "Mon 23 Nov 2026 10:00 CET",
        "close_at": "Fri 27 Nov 2026 10:00 CET",
        "reason": "resolved",
        "since": "Mon 23 Nov 2026 10:00 CET",
        "deferred_since": "Mon 23 Nov 2026 10:00 CET",
        "name": "tech1@example.com",
        "kind": "agent",
        "open": [row],
        "due_soon": [row],
        "breached": [],
        "date": "Mon 23 Nov 2026",
    }


# --- facts from stored rows ------------------------------------------------------------------------


class TrailEvent(NamedTuple):
    """An audit-trail entry as the SLA clock reads it (store.models.Event is the table)."""

    kind: str
    data: dict[str, Any] | None
    created_at: datetime


_E = Event.__table__.c  # type: ignore[attr-defined]
_STATUS_TRAIL = (  # or_, not in_: a prebuilt IN list would be expanded at every run
    select(_E.kind, _E.data, _E.created_at)
    .where(_E.ticket_id == bindparam("t"), or_(_E.kind == EventKind.CREATED, _E.kind == EventKind.STATUS))
    .order_by(_E.id)
)


def status_history(
    events: Sequence[TrailEvent], ticket: Ticket, workflow: Workflow
) -> tuple[list[StatusInterval], datetime]:
    """The ticket's status intervals with their category, and when the current status began.

    Built from the audit trail: "created" (data.status) opens the first interval, every "status"
    event (data.new, data.category) closes one and opens the next. A category stored in the
    event wins over today's workflow, so editing workflow.toml never rewrites past SLA time.
    """
    created = utc(ticket.created_at)
    assert created is not None
    first = next((e for e in events if e.kind == EventKind.CREATED), None)
    initial = (first.data or {}).get("status") if first is not None else None
    changes = [e for e in events if e.kind == EventKind.STATUS]
    if initial is None and changes:
        initial = (changes[0].data or {}).get("old")
    category: Category = _category(workflow, initial or ticket.status, None)
    intervals: list[StatusInterval] = []
    start = created
    for e in changes:
        at = utc(e.created_at)
        assert at is not None
        at = max(at, start)
        intervals.append(StatusInterval(start, at, category))
        data = e.data or {}
        category = _category(workflow, data.get("new"), data.get("category"))
        start = at
    intervals.append(StatusInterval(start, None, category))
    return intervals, start


def _category(workflow: Workflow, status: object, stored: object) -> Category:
    if stored in ("open", "waiting", "closed"):
        return stored
    value = workflow.category(str(status)) if status is not None else "open"
    return value if value in ("open", "waiting", "closed") else "open"  # type: ignore[return-value]


def priority_rank(priority: str | None, workflow: Workflow) -> str | int | None:
    """Priorities match sla.toml by position, as `#priority 1` means the most urgent: "critical"
    in a workflow with priorities [critical, high, ...] is priority 1 (P1)."""
    if priority is None:
        return None
    for i, name in enumerate(workflow.priorities, 1):
        if norm(name) == norm(priority):
            return i
    return priority


def ticket_facts(
    repo: Repo,
    ticket: Ticket,
    workflow: Workflow,
    rules: SlaRules | None = None,
    events: Sequence[TrailEvent] | None = None,
) -> TicketFacts:
    """Everything the jobs decide on, from the ticket row and its audit trail (or `events`, the
    trail the caller already knows)."""
    if events is None:  # events are plain INSERTs (Repo.event): all of them are in the table
        events = [TrailEvent._make(row) for row in repo.core(_STATUS_TRAIL, {"t": ticket.id})]
    intervals, since = status_history(events, ticket, workflow)
    status = workflow.statuses.get(ticket.status)
    category = intervals[-1].category
    # `desk` and the ticket's own `category` are match keys of sla.toml policies too.
    custom: dict[str, object] = {
        k: v for k, v in (ticket.fields or {}).items() if isinstance(v, str | int) and not isinstance(v, bool)
    }
    custom["desk"] = ticket.desk
    if ticket.category:
        custom["category"] = ticket.category
    created = utc(ticket.created_at)
    assert created is not None
    facts = TicketFacts(
        key=ticket.key,
        created_at=created,
        status=ticket.status,
        category=category,
        status_since=since,
        intervals=tuple(intervals),
        first_response_at=utc(ticket.first_response_at),
        priority=priority_rank(ticket.priority, workflow),
        type=ticket.type,
        group=ticket.group,
        assignee=ticket.assignee,
        custom_fields=custom,
        resolved_since=since if status is not None and status.resolved and not status.final else None,
        deferred_since=since if status is not None and status.deferred else None,
        first_response_warned_at=utc(ticket.first_response_warned_at),
        first_response_escalated_at=utc(ticket.first_response_escalated_at),
        resolution_warned_at=utc(ticket.resolution_warned_at),
        resolution_escalated_at=utc(ticket.resolution_escalated_at),
        first_response_admins_at=utc(ticket.first_response_admins_at),
        resolution_admins_at=utc(ticket.resolution_admins_at),
        triage_reminded_at=utc(ticket.triage_reminded_at),
        customer_reminded_at=utc(ticket.customer_reminded_at),
        last_review_at=utc(ticket.last_review_at),
    )
    # A policy may name the priority by its word instead ("critical"): fall back to it.
    if (
        rules is not None
        and ticket.priority is not None
        and facts.priority != ticket.priority
        and policy_for(rules, facts.match_fields()) is None
    ):
        facts = TicketFacts(**{**facts.__dict__, "priority": ticket.priority})
    return facts


def refresh_due(
    repo: Repo,
    ticket: Ticket,
    workflow: Workflow,
    sla_rules: SlaRules | None,
    now: datetime,
    events: Sequence[TrailEvent] | None = None,
) -> TicketFacts | None:
    """Store the ticket's current first-response and resolution due times (None: no target, or
    the resolution clock is paused with time left). Writes only when a value changed."""
    if sla_rules is None:
        return None
    facts = ticket_facts(repo, ticket, workflow, sla_rules, events)
    policy = policy_for(sla_rules, facts.match_fields())
    first_due = resolution_due = None
    if policy is not None:
        clock = sla_clock(policy, facts.created_at, facts.intervals, facts.first_response_at, now)
        first_due = clock.first_response.due if clock.first_response else None
        resolution_due = clock.resolution.due if clock.resolution else None
    if utc(ticket.first_response_due) != first_due or utc(ticket.resolution_due) != resolution_due:
        repo.set_ticket(ticket, first_response_due=first_due, resolution_due=resolution_due)
    return facts


def sla_summary(
    repo: Repo, ticket: Ticket, workflow: Workflow, sla_rules: SlaRules | None, now: datetime
) -> str | None:
    """One line for `mailgate tickets show`: the policy and where each clock stands at `now`."""
    if sla_rules is None:
        return None
    facts = ticket_facts(repo, ticket, workflow, sla_rules)
    policy = policy_for(sla_rules, facts.match_fields())
    if policy is None:
        return "no SLA policy matches"
    clock = sla_clock(policy, facts.created_at, facts.intervals, facts.first_response_at, now)
    parts = []
    for target in clock.targets():
        state = target.state
        left = f", {span(target.remaining)} left" if state in ("running", "paused") else ""
        parts.append(f"{TARGET_LABELS[target.target]} {state}{left}")
    return f"policy '{policy.name}': " + "; ".join(parts)


# --- carrying out the actions ----------------------------------------------------------------------


def when(value: datetime | None, tz: str) -> str:
    """A time as agents and requesters read it: in the desk's zone, with the zone named."""
    if value is None:
        return ""
    local = value.astimezone(ZoneInfo(tz))
    return local.strftime("%a %d %b %Y %H:%M %Z").strip()


def span(value: timedelta) -> str:
    minutes = max(0, int(value.total_seconds() // 60))
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60}h {rest % 60}m"
    return f"{days}d {text}" if days else text


@dataclass(frozen=True)
class Applied:
    """What one action did: who was mailed, and a line for logs."""

    recipients: tuple[str, ...]
    summary: str


class SlaService:
    """The SLA side of the pipeline, constructed once by the runner and shared with the scheduler."""

    def __init__(self, config: Config, rules: RulesSource, notifier: Notifier) -> None:
        self.config = config
        self.rules_source = rules
        self.notifier = notifier

    @property
    def rules(self) -> Snapshot:
        """The rules snapshot in force (swapped only by the runner's thread, between batches)."""
        return self.rules_source.current

    @property
    def sla(self) -> SlaRules | None:
        return self.rules_source.current.sla

    def tz(self) -> str:
        return self.rules_source.current.zone

    def refresh(
        self, repo: Repo, ticket: Ticket, desk: Desk, now: datetime | None = None, *, new: bool = False
    ) -> None:
        """After a message changed `ticket`: store its due times. A mistake in here is logged, never
        allowed to quarantine the mail that caused the change. `new`: the ticket was made by this
        message, so its whole status history is its creation (no need to read the audit trail)."""
        try:
            history = (
                [TrailEvent(EventKind.CREATED, {"status": ticket.status}, ticket.created_at)] if new else None
            )
            refresh_due(repo, ticket, self.rules.workflow(desk), self.sla, now or now_utc(), events=history)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("could not compute SLA due times of %s: %s", ticket.key, exc)

    # -- recipients (team.toml) ------------------------------------------------------------------
    def _lead_or_triage(self, ticket: Ticket) -> list[str]:
        team = self.rules.team
        group = team.groups.get(ticket.group) if ticket.group else None
        return [group.lead] if group is not None and group.lead else [self.rules.triage_for(ticket.desk)]

    def _assignee_or_group(self, ticket: Ticket) -> list[str]:
        team = self.rules.team
        if ticket.assignee:
            return [ticket.assignee]
        group = team.groups.get(ticket.group) if ticket.group else None
        if group is not None and group.members:
            return list(group.members)
        return [self.rules.triage_for(ticket.desk)]

    def _ladder(self, repo: Repo, ticket: Ticket, action: Escalate) -> list[str]:
        """Who gets this step of the ladder — warn the assignee, escalate to the group lead (else
        the triage person), then to the desk's admins — less whoever got the step before it for
        this breach: nobody is told twice in a row. A lead who was the one warned is skipped: the
        step climbs to the admins at once."""
        admins = desk_admins(self.rules.team, self.config.admin_address)
        before = self._told_before(repo, ticket, action)
        if action.level == 1:
            lead = [a for a in self._lead_or_triage(ticket) if a not in before]
            return lead or [a for a in admins if a not in before]
        return [a for a in admins if a not in before]

    def _told_before(self, repo: Repo, ticket: Ticket, action: Escalate) -> set[str]:
        """Who got the step below `action` for its target on this ticket: the warning for the
        lead's step, the lead's step for the admins'."""
        since = utc(ticket.created_at) - timedelta(seconds=1)
        tid: int = ticket.id  # type: ignore[assignment]
        kind = EventKind.SLA_WARNING if action.level == 1 else EventKind.SLA_ESCALATED
        steps = [
            e
            for e in repo.recent_events(tid, kind, since)
            if e.get("target") == action.target and (kind == EventKind.SLA_WARNING or e.get("level", 1) == 1)
        ]
        return {a.lower() for a in steps[-1].get("to", [])} if steps else set()

    def _group(self, ticket: Ticket) -> list[str]:
        team = self.rules.team
        group = team.groups.get(ticket.group) if ticket.group else None
        if group is not None:
            return [a for a in dict.fromkeys([group.lead, *group.members]) if a]
        return [ticket.assignee] if ticket.assignee else [self.rules.triage_for(ticket.desk)]

    def _mail(
        self,
        repo: Repo,
        desk: Desk,
        ticket: Ticket,
        recipients: list[str],
        template: str,
        kind: str,
        context: dict[str, Any],
        *,
        agents: bool,
    ) -> tuple[str, ...]:
        sent = []
        recipients = list(dict.fromkeys(r for r in recipients if r))
        if not agents:
            recipients = self._capped(repo, desk, ticket, recipients)
        for rcpt in recipients:
            # Mail to our own agents is bounded by the marks (once per ticket and target), so it
            # cannot loop; the loop limits would only drop escalations after a downtime.
            item = self.notifier.send(
                repo,
                desk=desk,
                ticket=ticket,
                kind=kind,
                template=template,
                to=rcpt,
                context=context,
                check_loops=not agents,
            )
            if item is not None:
                sent.append(rcpt)
        return tuple(sent)

    def _capped(self, repo: Repo, desk: Desk, ticket: Ticket, recipients: list[str]) -> list[str]:
        """A job's mail to requester and watchers is one event: at most `[security]
        max_recipients_per_event` of them; the rest are recorded and the assignee (else the
        triage person) is told, as for mail caused by a received message (handlers/common.OneEvent)."""
        cap = self.config.membership.max_recipients_per_event
        if len(recipients) <= cap:
            return recipients
        mailed, over = recipients[:cap], recipients[cap:]
        repo.event(ticket.id, EventKind.FANOUT_LIMITED, cap=cap, mailed=mailed, not_mailed=over)  # type: ignore[arg-type]
        context = {"cap": cap, "mailed": mailed, "not_mailed": over}
        for agent in self._assignee_or_group(ticket):
            self.notifier.send(
                repo,
                desk=desk,
                ticket=ticket,
                kind="fanout-limited",
                template="fanout_limited",
                to=agent,
                context=context,
                check_loops=False,
            )
        return mailed

    def apply(self, repo: Repo, desk: Desk, ticket: Ticket, action: Action, now: datetime) -> Applied | None:
        """Carry out one action on `ticket` and store its marks, in the caller's transaction."""
        tz = self.tz()
        workflow = self.rules.workflow(desk)
        tid: int = ticket.id  # type: ignore[assignment]
        applied: Applied | None
        if isinstance(action, Warn):
            to = self._assignee_or_group(ticket)
            ctx = {
                "target": TARGET_LABELS[action.target],
                "due": when(action.due, tz),
                "remaining": span(action.due - now),
                "policy": action.policy,
            }
            sent = self._mail(repo, desk, ticket, to, "sla_warning", "sla-warning", ctx, agents=True)
            repo.event(
                tid, EventKind.SLA_WARNING, target=action.target, due=action.due.isoformat(), to=list(sent)
            )
            applied = Applied(
                sent, f"warned {', '.join(sent)}: {action.target} due {action.due:%Y-%m-%d %H:%M}Z"
            )
        elif isinstance(action, Escalate):
            to = self._ladder(repo, ticket, action)
            ctx = {
                "target": TARGET_LABELS[action.target],
                "due": when(action.due, tz),
                "overdue": span(now - action.due),
                "policy": action.policy,
                "assignee": ticket.assignee or "",
            }
            if action.tag not in (ticket.tags or []):
                ticket.tags = [*(ticket.tags or []), action.tag]
                repo.event(tid, EventKind.TAGS, actor="system", added=[action.tag], removed=[])
            sent = self._mail(repo, desk, ticket, to, "sla_escalation", "sla-escalation", ctx, agents=True)
            repo.event(
                tid,
                EventKind.SLA_ESCALATED,
                target=action.target,
                due=action.due.isoformat(),
                to=list(sent),
                level=action.level,
            )
            applied = Applied(
                sent, f"escalated {action.target} (level {action.level}) to {', '.join(sent) or 'nobody new'}"
            )
        elif isinstance(action, RemindTriage):
            ctx = {"unanswered_for": span(action.unanswered_for), "created": when(action.created_at, tz)}
            to = [self.rules.triage_for(ticket.desk)]
            sent = self._mail(repo, desk, ticket, to, "triage_reminder", "triage-reminder", ctx, agents=True)
            repo.event(tid, EventKind.TRIAGE_REMINDED, to=list(sent))
            applied = Applied(sent, f"reminded {', '.join(sent)} of an unanswered ticket")
        elif isinstance(action, RemindCustomer):
            ctx = {"waiting_since": when(action.waiting_since, tz), "close_at": when(action.close_at, tz)}
            to = requester_side(repo, ticket, set(self.rules.team.agents))
            sent = self._mail(
                repo, desk, ticket, to, "customer_reminder", "customer-reminder", ctx, agents=False
            )
            repo.event(tid, EventKind.CUSTOMER_REMINDED, to=list(sent))
            applied = Applied(sent, "reminded the requester")
        elif isinstance(action, AutoClose):
            applied = self._auto_close(repo, desk, workflow, ticket, action, tz)
        elif isinstance(action, DeferredReview):
            ctx = {"deferred_since": when(action.deferred_since, tz)}
            to = self._group(ticket)
            sent = self._mail(repo, desk, ticket, to, "deferred_review", "deferred-review", ctx, agents=True)
            repo.event(tid, EventKind.DEFERRED_REVIEW, to=list(sent))
            applied = Applied(sent, f"brought back for review to {', '.join(sent)}")
        else:  # Digest is per desk, not per ticket: see send_digest
            raise TypeError(f"not a ticket action: {action!r}")
        if applied is None:
            return None
        for name, value in action.marks:
            setattr(ticket, name, value)
        repo.session.add(ticket)
        return applied

    def _auto_close(
        self, repo: Repo, desk: Desk, workflow: Workflow, ticket: Ticket, action: AutoClose, tz: str
    ) -> Applied | None:
        final = workflow.close
        if final is None or final == ticket.status:
            log.warning("%s: workflow %s names no status to close into", ticket.key, workflow.name)
            return None
        status = workflow.status(final)
        why = (
            "auto-close: resolved and not reopened"
            if action.reason == "resolved"
            else "auto-close: no reply from the customer"
        )
        change_status(repo, ticket, workflow, status, "system", why)
        ctx = {"reason": action.reason, "since": when(action.since, tz), "status": status}
        to = requester_side(repo, ticket, set(self.rules.team.agents))
        sent = self._mail(repo, desk, ticket, to, "auto_closed", "auto-closed", ctx, agents=False)
        return Applied(sent, f"closed ({action.reason}), told {', '.join(sent) or 'nobody'}")

    # -- the digest --------------------------------------------------------------------------------
    def digest_recipients(self, digest: Digest) -> list[str]:
        """An agent's digest goes to the agent; a group's to its lead (else its members)."""
        if digest.recipient_kind == "agent":
            return [digest.recipient]
        group = self.rules.team.groups.get(digest.recipient)
        if group is None:
            return []
        return [group.lead] if group.lead else list(group.members)

    def send_digest(
        self, repo: Repo, desk: Desk, digest: Digest, tickets: dict[str, Ticket], now: datetime
    ) -> list[str]:
        """One mail per recipient listing the tickets; returns their Message-IDs. It belongs to no ticket: no reply token, no
        thread; a reply to it reaches the desk as a new request like any other mail."""
        tz = self.tz()
        workflow_of = {d.key: self.rules.workflow(d) for d in self.config.desks}

        def rows(keys: tuple[str, ...]) -> list[dict[str, str]]:
            out = []
            for key in keys:
                t = tickets[key]
                wf = workflow_of.get(t.desk)
                label = wf.statuses[t.status].label if wf and t.status in wf.statuses else t.status
                due = [d for d in (utc(t.first_response_due), utc(t.resolution_due)) if d is not None]
                if t.first_response_at is not None:
                    due = [d for d in (utc(t.resolution_due),) if d is not None]
                out.append(
                    {
                        "key": t.key,
                        "subject": t.subject,
                        "status": label,
                        "due": when(min(due), tz) if due else "",
                    }
                )
            return out

        items = []
        day = now.astimezone(ZoneInfo(tz)).strftime("%a %d %b %Y")
        name = digest.recipient
        if digest.recipient_kind == "agent":
            agent = self.rules.team.agents.get(name)
            name = agent.name if agent is not None and agent.name else name
        for rcpt in self.digest_recipients(digest):
            subject = f"{desk.name}: {len(digest.open)} open, {len(digest.due_soon)} due soon, {len(digest.breached)} breached ({name})"
            ctx = {
                "desk": desk,
                "recipient": rcpt,
                "subject": subject,
                "name": name,
                "kind": digest.recipient_kind,
                "open": rows(digest.open),
                "due_soon": rows(digest.due_soon),
                "breached": rows(digest.breached),
                "date": day,
            }
            text, html = self.notifier.renderer.render(desk.key, "digest", ctx)
            message_id = self.notifier.send_plain(
                repo, desk, to=rcpt, subject=subject, text=text, html=html, kind="digest"
            )
            items.append(message_id)
        return items


__all__ = [
    "TEMPLATE_VARIABLES",
    "Applied",
    "SlaService",
    "priority_rank",
    "refresh_due",
    "sample_context",
    "sla_summary",
    "status_history",
    "ticket_facts",
    "when",
]
