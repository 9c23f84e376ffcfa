"""Parent incidents: one outage, many reports of it (seed 002).

`#parent SUP-12` files a ticket under SUP-12 (pipeline/apply.py keeps the key in its `parent`
field). On the parent, `#broadcast` sends the agent's reply to the requester and watchers of every
open child as well, and `#resolve all` resolves every open child with it; a plain `#resolve` of a
parent with open children offers that to the agent. Each child's people hear it in the child's own
thread, under its own key, and each child is one event under `[security]
max_recipients_per_event` (a parent with 200 children is 200 events, each capped, not one event
cut off after 20 people). Runs inside the handler's transaction; the outbox sends.
"""

from __future__ import annotations

from typing import Any

from mailgate.domain.changes import Change
from mailgate.domain.commands import HELP, Plan
from mailgate.domain.workflow import Workflow
from mailgate.pipeline.apply import change_status, requester_side, row
from mailgate.pipeline.context import Context
from mailgate.pipeline.handlers.common import Services, tell
from mailgate.pipeline.membership import FanOut
from mailgate.store.kinds import EventKind
from mailgate.store.models import Ticket
from mailgate.store.repo import Repo


def to_children(
    services: Services,
    ctx: Context,
    repo: Repo,
    parent: Ticket,
    workflow: Workflow,
    plan: Plan,
    author: str,
    comment: str,
) -> list[str]:
    """Broadcast to and/or resolve the parent's open children; the keys of the children reached.
    A parent just resolved without `all` gets the offer instead (to the agent only)."""
    target = plan.resolve_children
    broadcast = plan.broadcast and bool(comment)
    if not (broadcast or target is not None or (plan.status is not None and plan.status.resolved)):
        return []
    children = repo.open_children(parent.key)
    if not children:
        return []
    if not broadcast and target is None:
        tell(
            services,
            repo,
            ctx,
            parent,
            [author],
            template="children_open",
            kind="children-open",
            context={"children": [c.key for c in children], "help": HELP},
        )
        return []
    reached = [
        c.key for c in children if _one_child(services, ctx, repo, c, parent, workflow, plan, author, comment)
    ]
    ctx.note("apply", f"{author} reached the children of {parent.key}: {', '.join(reached) or 'none'}")
    return reached


def _one_child(
    services: Services,
    ctx: Context,
    repo: Repo,
    child: Ticket,
    parent: Ticket,
    workflow: Workflow,
    plan: Plan,
    author: str,
    comment: str,
) -> bool:
    """One child: resolved (when it may go there) and/or told, as an event of its own."""
    target = plan.resolve_children
    status = workflow.statuses.get(child.status)
    changes: list[Change] = []
    if target is not None and child.status != target.id and workflow.can(child.status, target.id):
        changes.append(change_status(repo, child, workflow, target, author, f"resolved with {parent.key}"))
        status = target
    said = comment if plan.broadcast else ""
    if not (changes or said):
        return False
    if said:
        repo.event(row(child), EventKind.BROADCAST, actor=author, parent=parent.key, comment=said[:2000])
    context: dict[str, Any] = {
        "actor": services.agent_name(author),
        "actor_address": author,
        "comment": said,
        "changes": changes,
        "status": status,
        "internal": False,
        "help": HELP,
        "survey": bool(changes),
    }
    template = status.template if changes and status else "agent_comment"
    outer, ctx.fanout = ctx.fanout, FanOut(services.membership.max_recipients_per_event)
    try:
        tell(
            services,
            repo,
            ctx,
            child,
            requester_side(repo, child, services.agents()),
            template=template,
            kind=template,
            from_name=services.agent_name(author),
            context=context,
            human=True,
        )
        over = ctx.fanout.over
        if over:
            repo.event(
                row(child),
                EventKind.FANOUT_LIMITED,
                cap=ctx.fanout.cap,
                mailed=list(ctx.fanout.mailed),
                not_mailed=list(over),
            )
    finally:
        ctx.fanout = outer
    return True
