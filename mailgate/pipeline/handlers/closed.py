"""What a requester's answer to a resolved or closed ticket does — a rating, or a reopen — written
once for both ways a requester answers: a reply by mail (handlers/reply.py) and a button on the
request page (pipeline/web_actions.py).

Each function makes the change and its audit event through the Repo and returns what the agents
are to be told (`AgentNotice`); the caller queues that mail its own way (a mail reply threads it
under the requester's message and counts it against the event's fan-out, a web click has no
message to thread under). Nothing here decides whether the answer is a rating or a reopen, nor
sends mail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mailgate.domain.changes import StatusChanged
from mailgate.domain.commands import HELP
from mailgate.domain.workflow import Workflow
from mailgate.pipeline.apply import change_status, row
from mailgate.store.kinds import EventKind
from mailgate.store.models import Ticket, now_utc
from mailgate.store.repo import Repo

RATING_COMMENT_MAX = 2000  # what is stored of a rating's comment


@dataclass(frozen=True)
class AgentNotice:
    """The mail the ticket's agents get about the requester's answer."""

    template: str
    kind: str
    context: dict[str, Any]


def can_reopen(workflow: Workflow, ticket: Ticket) -> bool:
    """Whether the desk's workflow lets a requester reopen the ticket from its status."""
    reopen = workflow.reopen
    if not reopen:
        return False
    return workflow.can(ticket.status, reopen)


def rate(repo: Repo, ticket: Ticket, who: str, value: int, comment: str, **event: Any) -> AgentNotice:
    """Record rating `value` (1..5) with `comment` on the ticket, and its audit event (`event`:
    extra facts, e.g. `via="web"`). The ticket's status is left as it is: a rating never reopens."""
    if value not in range(1, 6):
        raise ValueError(f"a rating is 1 to 5, not {value}")
    kept = comment[:RATING_COMMENT_MAX]
    repo.set_ticket(ticket, rating=value, rating_comment=kept or None, updated_at=now_utc())
    repo.event(row(ticket), EventKind.RATING, actor=who, rating=value, comment=kept, **event)
    return AgentNotice("rating_received", "rating", {"rating": value, "comment": comment, "from": who})


def reopen(
    repo: Repo, ticket: Ticket, workflow: Workflow, who: str, why: str, comment: str
) -> tuple[StatusChanged, AgentNotice]:
    """Move the ticket to the workflow's reopen status (the caller checked `can_reopen`), with
    `why` on the status change; `comment` is the requester's words the agents get."""
    assert workflow.reopen is not None, "can_reopen() is checked first"
    change = change_status(repo, ticket, workflow, workflow.status(workflow.reopen), who, why)
    repo.session.add(ticket)
    return change, AgentNotice("reopened", "reopened", {"from": who, "comment": comment, "help": HELP})
