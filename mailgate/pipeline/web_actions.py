"""What a requester does from the request page — rate, say "this isn't resolved", turn mail off —
applied as the same change, audit event and agent mail that the equivalent reply by mail makes
(pipeline/handlers/closed.py, which ReplyHandler calls too; UnsubscribeHandler), in the caller's
transaction.

Callers (mailgate/web) have already checked the signed link: `who` is the address the link was
issued to. Nothing here sends mail; it queues outbox rows, which the sender delivers.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlmodel import col

from mailgate.config import Config, Desk
from mailgate.pipeline.handlers import closed
from mailgate.pipeline.handlers.common import Services
from mailgate.pipeline.notify import Notifier
from mailgate.ruleset import Snapshot
from mailgate.store.kinds import EventKind
from mailgate.store.models import Participant, Ticket
from mailgate.store.repo import Repo


class Outcome(StrEnum):
    """What a requester's action came to; the page words it."""

    RATED = "rated"
    REOPENED = "reopened"
    NOT_RESOLVED = "not-resolved"  # rating or reopening a ticket that is open: nothing to do
    NOT_ALLOWED = "not-allowed"  # the desk's workflow allows no reopening from this status
    MUTED = "muted"


def is_done(rules: Snapshot, desk: Desk, ticket: Ticket) -> bool:
    """Resolved or closed: what a rating answers and what "this isn't resolved" undoes."""
    status = rules.workflow(desk).statuses.get(ticket.status)
    return status is not None and status.category == "closed"


class RequesterActions:
    """The requester's buttons, over one Repo (one transaction) per call."""

    def __init__(self, config: Config, notifier: Notifier, rules: Any) -> None:
        self.config = config
        self.notifier = notifier
        self.rules_source = rules  # a RulesSource: `.current` is the snapshot in force
        self.services = Services(config, notifier, rules)

    def _tell_agents(self, repo: Repo, desk: Desk, ticket: Ticket, notice: closed.AgentNotice) -> None:
        """The agents the mail path tells (Services.agents_of), told the same; agents' mail is
        never held by loop limits (handlers.common.tell): a web click is no loop."""
        for agent in self.services.agents_of(repo, ticket):
            self.notifier.send(
                repo, desk=desk, ticket=ticket, kind=notice.kind, template=notice.template, to=agent,
                context=notice.context, check_loops=False,
            )  # fmt: skip

    def rate(self, repo: Repo, desk: Desk, ticket: Ticket, who: str, value: int, comment: str) -> Outcome:
        """Record a rating 1..5 with a comment, as a reply "4 great help" to the resolution mail
        would (handlers/closed.rate); the agents hear of it."""
        if value not in range(1, 6):
            raise ValueError(f"a rating is 1 to 5, not {value}")
        if not is_done(self.rules_source.current, desk, ticket):
            return Outcome.NOT_RESOLVED
        comment = comment.strip()[: closed.RATING_COMMENT_MAX]
        if ticket.rating == value and (ticket.rating_comment or "") == comment:
            return Outcome.RATED  # the form sent again (a double click, a reload): one rating, told once
        self._tell_agents(repo, desk, ticket, closed.rate(repo, ticket, who, value, comment, via="web"))
        return Outcome.RATED

    def reopen(self, repo: Repo, desk: Desk, ticket: Ticket, who: str, comment: str) -> Outcome:
        """ "This isn't resolved": the ticket opens again as a requester's reply would reopen it
        (handlers/closed.reopen), the comment kept as their message, the agents told."""
        rules: Snapshot = self.rules_source.current
        workflow = rules.workflow(desk)
        if not is_done(rules, desk, ticket):
            return Outcome.NOT_RESOLVED
        if not closed.can_reopen(workflow, ticket):
            return Outcome.NOT_ALLOWED
        comment = comment.strip()[:20000]
        text = comment or "(this isn't resolved)"
        repo.add_message(
            ticket_id=ticket.id,
            direction="in",
            kind="public",
            author=who,
            subject=f"Not resolved: {ticket.subject}"[:300],
            text=text,
            reply_text=text,
            attachments=[],
        )
        _, notice = closed.reopen(repo, ticket, workflow, who, "requester: not resolved (web)", text)
        self._tell_agents(repo, desk, ticket, notice)
        return Outcome.REOPENED

    def mute(self, repo: Repo, ticket: Ticket, who: str, via: str) -> Outcome:
        """No more mail about this ticket to `who` (RFC 8058 one-click, or the page's button)."""
        repo.mute(ticket.id, [who])  # type: ignore[arg-type]
        repo.event(ticket.id, EventKind.UNSUBSCRIBED, actor=who, via=via)  # type: ignore[arg-type]
        return Outcome.MUTED

    def mute_all(self, repo: Repo, who: str) -> int:
        """No more mail to `who` about any ticket they are on as requester or watcher; how many."""
        rows = repo.session.execute(
            update(Participant)
            .where(
                col(Participant.address) == who.lower(),
                col(Participant.role).in_(["requester", "watcher"]),
                col(Participant.notify).is_(True),
            )
            .values(notify=False)
            .returning(col(Participant.ticket_id))
        ).all()
        for (ticket_id,) in rows:
            repo.event(ticket_id, EventKind.UNSUBSCRIBED, actor=who, via="web: all my tickets")
        return len(rows)
