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
    ParentCleared,
    ParentSet,
    RequesterSet,
    StatusChanged,
    TimeSpent,
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
        row(ticket),
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
    """Apply a checked command plan. Returns the changes made, in command order: the people,
    the ticket's fields, the links, then the status, and the merge last (it closes the ticket)."""
    changes: list[Change] = []
    for step in (
        _group,
        _assignee,
        _attributes,
        _fields,
        _tags,
        _watchers,
        _links,
        _requester,
        _parent,
        _time,
    ):
        changes += step(repo, ticket, plan, actor)
    if plan.status is not None:
        changes.append(change_status(repo, ticket, workflow, plan.status, actor, "command"))
    if plan.merge_into:
        changes += _merge_into(repo, ticket, workflow, plan.merge_into, actor)
    ticket.updated_at = now_utc()
    repo.session.add(ticket)
    return changes


def _group(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    if plan.group is None or plan.group == ticket.group:
        return []
    repo.event(row(ticket), EventKind.GROUP, actor=actor, old=ticket.group, new=plan.group)
    ticket.group = plan.group
    return [GroupSet(plan.group)]


def _assignee(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    """`#unassign`, then `#assign`: a new assignee takes part in the ticket as an agent."""
    changes: list[Change] = []
    tid = row(ticket)
    if plan.unassign and ticket.assignee:
        repo.event(tid, EventKind.ASSIGN, actor=actor, old=ticket.assignee, new=None)
        changes.append(Unassigned(ticket.assignee))
        ticket.assignee = None
    if plan.assignee is not None and plan.assignee != ticket.assignee:
        repo.event(tid, EventKind.ASSIGN, actor=actor, old=ticket.assignee, new=plan.assignee)
        changes.append(Assigned(plan.assignee, ticket.assignee))
        ticket.assignee = plan.assignee
        repo.add_participant(tid, plan.assignee, Role.AGENT)
    return changes


def _attributes(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    """Priority, type and category: each its own event, named as the attribute."""
    changes: list[Change] = []
    for kind in (EventKind.PRIORITY, EventKind.TYPE, EventKind.CATEGORY):
        attr = kind.value
        value = getattr(plan, attr)
        if value is not None and value != getattr(ticket, attr):
            repo.event(row(ticket), kind, actor=actor, old=getattr(ticket, attr), new=value)
            changes.append(AttributeSet(attr, getattr(ticket, attr), value))
            setattr(ticket, attr, value)
    return changes


def _fields(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    if not (plan.set_fields or plan.unset_fields):
        return []
    changes: list[Change] = []
    fields = dict(ticket.fields or {})
    for k, v in plan.set_fields.items():
        if fields.get(k) != v:
            changes.append(FieldSet(k, fields.get(k), v))
            fields[k] = v
    for k in plan.unset_fields:
        if fields.pop(k, None) is not None:
            changes.append(FieldCleared(k))
    repo.event(row(ticket), EventKind.FIELDS, actor=actor, set=plan.set_fields, unset=plan.unset_fields)
    ticket.fields = fields
    return changes


def _tags(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    """Tags are the desk's own words: recorded, never told to anyone (no change record)."""
    if not (plan.tags_add or plan.tags_remove):
        return []
    tags = [t for t in (ticket.tags or []) if t not in plan.tags_remove]
    tags += [t for t in plan.tags_add if t not in tags]
    repo.event(row(ticket), EventKind.TAGS, actor=actor, added=plan.tags_add, removed=plan.tags_remove)
    ticket.tags = tags
    return []


def _watchers(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    """`#cc add` and `#cc remove`: every command is recorded, a change only when it made one."""
    changes: list[Change] = []
    tid = row(ticket)
    for addr in plan.cc_add:
        if repo.add_participant(tid, addr, Role.WATCHER):
            changes.append(WatcherAdded(addr))
        repo.event(tid, EventKind.CC, actor=actor, added=addr)
    for addr in plan.cc_remove:
        if repo.remove_participant(tid, addr, Role.WATCHER):
            changes.append(WatcherRemoved(addr))
        repo.event(tid, EventKind.CC, actor=actor, removed=addr)
    return changes


def _links(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    """`#link KEY`: each ticket lists the other in its `links` field."""
    changes: list[Change] = []
    for key in plan.links:
        other = repo.ticket_by_key(key)
        if other is None:
            continue
        for a, b in ((ticket, other), (other, ticket)):
            links = list((a.fields or {}).get("links", []))
            if b.key not in links:
                a.fields = {**(a.fields or {}), "links": [*links, b.key]}
                repo.session.add(a)
        repo.event(row(ticket), EventKind.LINK, actor=actor, other=key)
        changes.append(Linked(key))
    return changes


def _requester(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    """`#requester ADDRESS`: the ticket becomes the customer's. The one it was opened by stays
    on it: an agent as an agent (they get agent mail), anyone else as a watcher."""
    new = plan.requester
    if new is None or new == ticket.requester:
        return []
    tid = row(ticket)
    old = ticket.requester
    repo.remove_participant(tid, old, Role.REQUESTER)
    repo.add_participant(tid, old, Role.AGENT if old == actor else Role.WATCHER)
    repo.remove_participant(tid, new, Role.WATCHER)
    repo.add_participant(tid, new, Role.REQUESTER)
    ticket.requester = new
    ticket.requester_name = ""
    repo.event(tid, EventKind.REQUESTER, actor=actor, old=old, new=new)
    return [RequesterSet(new, old)]


def _parent(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    """`#unparent`, then `#parent KEY`: the parent's key is kept in the `parent` field, where
    repo.open_children finds this ticket for the parent's `#broadcast` and `#resolve all`."""
    changes: list[Change] = []
    fields = dict(ticket.fields or {})
    old = fields.get("parent")
    if plan.unparent and old:
        fields.pop("parent")
        repo.event(row(ticket), EventKind.PARENT, actor=actor, old=old, new=None)
        changes.append(ParentCleared(old))
    if plan.parent and plan.parent != fields.get("parent"):
        repo.event(row(ticket), EventKind.PARENT, actor=actor, old=fields.get("parent"), new=plan.parent)
        fields["parent"] = plan.parent
        changes.append(ParentSet(plan.parent))
    if changes:
        ticket.fields = fields
    return changes


def _time(repo: Repo, ticket: Ticket, plan: Plan, actor: str) -> list[Change]:
    """`#time 30m`: one event per reply, summed per agent by `tickets show` (repo.time_spent)."""
    if not plan.minutes:
        return []
    repo.event(row(ticket), EventKind.TIME, actor=actor, minutes=plan.minutes)
    return [TimeSpent(plan.minutes)]


def _merge_into(repo: Repo, ticket: Ticket, workflow: Workflow, key: str, actor: str) -> list[Change]:
    target = repo.ticket_by_key(key)
    if target is None:
        return []
    merge(repo, ticket, target, workflow, actor)
    return [Merged(target.key)]


def row(ticket: Ticket) -> int:
    """The row id of a stored ticket (every ticket a plan is applied to has been inserted)."""
    assert ticket.id is not None, f"{ticket.key} is not stored"
    return ticket.id


def merge(repo: Repo, ticket: Ticket, target: Ticket, workflow: Workflow, actor: str) -> None:
    """Close `ticket` into `target`: its people follow, and later replies thread to the target."""
    for p in repo.participants(row(ticket)):
        role = Role.WATCHER if p.role == Role.REQUESTER else Role(p.role)
        repo.add_participant(row(target), p.address, role, p.name)
    ticket.merged_into = target.key
    final = workflow.close or next((s.id for s in workflow.statuses.values() if s.final), None)
    if final and ticket.status != final:
        change_status(repo, ticket, workflow, workflow.status(final), actor, f"merged into {target.key}")
    repo.event(row(target), EventKind.MERGED, actor=actor, source=ticket.key)
    repo.event(row(ticket), EventKind.MERGED_INTO, actor=actor, target=target.key)


def requester_side(
    repo: Repo, ticket: Ticket, agents: set[str], exclude: set[str] | None = None
) -> list[str]:
    """Requester and watchers who want mail, without agents (they get agent mail) or `exclude`."""
    exclude = exclude or set()
    return [
        p.address
        for p in repo.participants(row(ticket))
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
    for p in repo.participants(row(ticket)):
        if p.role == Role.AGENT and p.notify and p.address not in out:
            out.append(p.address)
    return [a for a in out if a not in exclude]


__all__ = ["Participant", "agent_side", "apply_plan", "change_status", "merge", "requester_side", "row"]
