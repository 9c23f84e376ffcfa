"""Writing a decided change to a ticket: status moves with their bookkeeping, an agent's command
plan, and the audit events for each. Called inside the handler's transaction; never sends mail.
"""

from __future__ import annotations

from mailgate.domain.changes import (
    Assigned,
    AttributeSet,
    Change,
    FieldCleared,
    FieldSet,
    GroupSet,
    Linked,
    Merged,
    StatusChanged,
    Unassigned,
    WatcherAdded,
    WatcherRemoved,
)
from mailgate.domain.commands import Plan
from mailgate.domain.workflow import Status, Workflow
from mailgate.store.kinds import EventKind, Role
from mailgate.store.models import Participant, Ticket, now_utc
from mailgate.store.repo import Repo


def change_status(
    repo: Repo, ticket: Ticket, workflow: Workflow, new: Status, actor: str, why: str = ""
) -> StatusChanged:
    """Move the ticket, keep the resolved/closed times right, and record the event. Returns the
    change, which the mail prints as "agent1 changed the status to Work in progress"."""
    old = ticket.status
    now = now_utc()
    ticket.status = new.id
    ticket.status_category = new.category
    if new.resolved:
        ticket.resolved_at = now
    elif new.category != "closed":
        ticket.resolved_at = None
        ticket.closed_at = None
    if new.final:
        ticket.closed_at = now
    ticket.updated_at = now
    repo.session.add(ticket)
    old_label = workflow.statuses[old].label if old in workflow.statuses else old
    repo.event(
        ticket.id,  # type: ignore[arg-type]
        EventKind.STATUS,
        actor=actor,
        old=old,
        new=new.id,
        category=new.category,
        why=why,
        label=f"{old_label} → {new.label}",
    )
    return StatusChanged(old, new, why)


def apply_plan(repo: Repo, ticket: Ticket, workflow: Workflow, plan: Plan, actor: str) -> list[Change]:
    """Apply a checked command plan. Returns the changes made, in command order."""
    lines: list[Change] = []
    tid: int = ticket.id  # type: ignore[assignment]
    if plan.group is not None and plan.group != ticket.group:
        repo.event(tid, EventKind.GROUP, actor=actor, old=ticket.group, new=plan.group)
        ticket.group = plan.group
        lines.append(GroupSet(plan.group))
    if plan.unassign and ticket.assignee:
        repo.event(tid, EventKind.ASSIGN, actor=actor, old=ticket.assignee, new=None)
        lines.append(Unassigned(ticket.assignee))
        ticket.assignee = None
    if plan.assignee is not None and plan.assignee != ticket.assignee:
        repo.event(tid, EventKind.ASSIGN, actor=actor, old=ticket.assignee, new=plan.assignee)
        lines.append(Assigned(plan.assignee, ticket.assignee))
        ticket.assignee = plan.assignee
        repo.add_participant(tid, plan.assignee, Role.AGENT)
    for kind in (EventKind.PRIORITY, EventKind.TYPE, EventKind.CATEGORY):
        attr = kind.value
        value = getattr(plan, attr)
        if value is not None and value != getattr(ticket, attr):
            repo.event(tid, kind, actor=actor, old=getattr(ticket, attr), new=value)
            lines.append(AttributeSet(attr, getattr(ticket, attr), value))
            setattr(ticket, attr, value)
    if plan.set_fields or plan.unset_fields:
        fields = dict(ticket.fields or {})
        for k, v in plan.set_fields.items():
            if fields.get(k) != v:
                lines.append(FieldSet(k, fields.get(k), v))
                fields[k] = v
        for k in plan.unset_fields:
            if fields.pop(k, None) is not None:
                lines.append(FieldCleared(k))
        repo.event(tid, EventKind.FIELDS, actor=actor, set=plan.set_fields, unset=plan.unset_fields)
        ticket.fields = fields
    if plan.tags_add or plan.tags_remove:
        tags = [t for t in (ticket.tags or []) if t not in plan.tags_remove]
        tags += [t for t in plan.tags_add if t not in tags]
        repo.event(tid, EventKind.TAGS, actor=actor, added=plan.tags_add, removed=plan.tags_remove)
        ticket.tags = tags
    for addr in plan.cc_add:
        if repo.add_participant(tid, addr, Role.WATCHER):
            lines.append(WatcherAdded(addr))
        repo.event(tid, EventKind.CC, actor=actor, added=addr)
    for addr in plan.cc_remove:
        if repo.remove_participant(tid, addr, Role.WATCHER):
            lines.append(WatcherRemoved(addr))
        repo.event(tid, EventKind.CC, actor=actor, removed=addr)
    for key in plan.links:
        other = repo.ticket_by_key(key)
        if other is None:
            continue
        for a, b in ((ticket, other), (other, ticket)):
            links = list((a.fields or {}).get("links", []))
            if b.key not in links:
                a.fields = {**(a.fields or {}), "links": [*links, b.key]}
                repo.session.add(a)
        repo.event(tid, EventKind.LINK, actor=actor, other=key)
        lines.append(Linked(key))
    if plan.status is not None:
        lines.append(change_status(repo, ticket, workflow, plan.status, actor, "command"))
    if plan.merge_into:
        target = repo.ticket_by_key(plan.merge_into)
        if target is not None:
            merge(repo, ticket, target, workflow, actor)
            lines.append(Merged(target.key))
    ticket.updated_at = now_utc()
    repo.session.add(ticket)
    return lines


def merge(repo: Repo, ticket: Ticket, target: Ticket, workflow: Workflow, actor: str) -> None:
    """Close `ticket` into `target`: its people follow, and later replies thread to the target."""
    for p in repo.participants(ticket.id):  # type: ignore[arg-type]
        role = Role.WATCHER if p.role == Role.REQUESTER else Role(p.role)
        repo.add_participant(target.id, p.address, role, p.name)  # type: ignore[arg-type]
    ticket.merged_into = target.key
    final = workflow.close or next((s.id for s in workflow.statuses.values() if s.final), None)
    if final and ticket.status != final:
        change_status(repo, ticket, workflow, workflow.status(final), actor, f"merged into {target.key}")
    repo.event(target.id, EventKind.MERGED, actor=actor, source=ticket.key)  # type: ignore[arg-type]
    repo.event(ticket.id, EventKind.MERGED_INTO, actor=actor, target=target.key)  # type: ignore[arg-type]


def requester_side(
    repo: Repo, ticket: Ticket, agents: set[str], exclude: set[str] | None = None
) -> list[str]:
    """Requester and watchers who want mail, without agents (they get agent mail) or `exclude`."""
    exclude = exclude or set()
    return [
        p.address
        for p in repo.participants(ticket.id)  # type: ignore[arg-type]
        if p.role in (Role.REQUESTER, Role.WATCHER)
        and p.notify
        and p.address not in agents
        and p.address not in exclude
    ]


def agent_side(
    repo: Repo, ticket: Ticket, group_members: tuple[str, ...], triage: str, exclude: set[str]
) -> list[str]:
    """The agents to tell: the assignee, else the group, else triage; plus agents who took part."""
    out: list[str] = []
    if ticket.assignee:
        out.append(ticket.assignee)
    elif group_members:
        out.extend(group_members)
    elif triage:
        out.append(triage)
    for p in repo.participants(ticket.id):  # type: ignore[arg-type]
        if p.role == Role.AGENT and p.notify and p.address not in out:
            out.append(p.address)
    return [a for a in out if a not in exclude]


__all__ = ["Participant", "agent_side", "apply_plan", "change_status", "merge", "requester_side"]
