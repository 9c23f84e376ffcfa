"""A new conversation becomes a ticket: the flood limit first, then routing (which rules hit,
and why this assignee), the ticket with its requester and first watchers, the message, and the
mail it causes: the assignee (or triage) and agent watchers hear of it, the requester gets an
acknowledgement (or the rule's automatic answer), never an automatic sender.

It runs last in the registry: whatever no other handler took. It must not ticket a sender past
the flood limit (held in the inbox instead) nor acknowledge an automatic mail.
"""

from __future__ import annotations

from typing import Any

from mailgate.domain import routing as routing_mod
from mailgate.domain.commands import HELP
from mailgate.domain.routing import RoutingDecision
from mailgate.domain.threading import strip_prefixes
from mailgate.domain.workflow import Workflow
from mailgate.pipeline.apply import row
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import FloodHeld, ProcessingError
from mailgate.pipeline.handlers.common import (
    Services,
    add_first_cc,
    store_message,
    tell,
    tell_rejected_attachments,
)
from mailgate.pipeline.outcomes import Disposition
from mailgate.store.kinds import EventKind, Role
from mailgate.store.models import Ticket, now_utc
from mailgate.store.repo import Repo


def _flood_words(sender: str) -> str:
    """How a held:flood reason starts: the admin is told once per sender per window, when no
    row held with these words is in the window yet."""
    return f"{sender} opened "


class NewTicketHandler:
    name = "new-ticket"

    def __init__(self, services: Services) -> None:
        self.services = services

    def can_handle(self, ctx: Context) -> bool:
        return True

    def execute(self, ctx: Context, repo: Repo) -> None:
        m = ctx.mail
        if not m.from_addr:
            raise ProcessingError("no sender address: nobody to make a ticket for")
        self._check_flood(ctx, repo)
        workflow = self.services.rules.workflow(ctx.desk)
        decision = self._route(ctx, repo)
        ticket, over_cap = self._create(ctx, repo, workflow, decision)
        self._tell_agents(ctx, repo, ticket, decision, over_cap)
        # The requester: an acknowledgement (or the rule's automatic answer), never to an automatic mail.
        if ctx.auto_reason:
            ctx.note("notify", f"no acknowledgement: {ctx.auto_reason}")
            return
        tell(
            self.services,
            repo,
            ctx,
            ticket,
            [m.from_addr],
            template=decision.auto_reply or "acknowledgement",
            kind="acknowledgement",
            context={"message": m, "requester_name": m.from_name},
            auto_submitted="auto-replied",
        )
        tell_rejected_attachments(self.services, repo, ctx, ticket)

    def _check_flood(self, ctx: Context, repo: Repo) -> None:
        """Past `[limits] new_tickets_per_sender` in the window, new mail of a sender is held in
        the inbox, not ticketed; the admin is told once per sender per window."""
        s = self.services
        sender = ctx.mail.from_addr
        since = now_utc() - s.flood_window
        n = repo.tickets_opened_since(sender, since)
        if n < s.flood_limit:
            return
        held = FloodHeld(f"{_flood_words(sender)}{n} tickets in {s.flood_window}: held, not ticketed")
        # Only when no earlier message of this sender was held in the window (rows of this batch
        # are flushed, so they count).
        if not repo.held_since(FloodHeld.disposition, _flood_words(sender), since):
            held.admin_notice = (
                f"mailgate: new tickets from {sender} are held (flood limit)",
                f"{sender} opened {n} tickets in {s.flood_window}, the limit set by\n"
                "[limits] new_tickets_per_sender / flood_window_minutes. Further new mail from them\n"
                "is kept in the inbox as held:flood and not ticketed; replies to their existing\n"
                "tickets still thread. This notice is sent once per sender per window.\n\n"
                "See them with `mailgate inbox list`; each keeps its raw message\n"
                "(`mailgate inbox show ID --raw`).\n",
            )
        raise held

    def _route(self, ctx: Context, repo: Repo) -> RoutingDecision:
        """The routing rules' decision. Hits and a count of misses go into the trace: explaining
        every miss costs milliseconds at hundreds of rules; `mailgate rules test MESSAGE` gives
        the full explanation on demand."""
        decision = routing_mod.evaluate(
            self.services.rules.routing_for(ctx.desk.key),  # rules/<KEY>/routing.toml, else the shared
            ctx.mail,
            desk_address=ctx.desk.address,
            now=now_utc(),
            open_counts=repo.open_count,
            last_assigned=repo.last_assignee,
        )
        for line in decision.trace_hits:
            ctx.note("dispatch", line)
        ctx.note("dispatch", f"assignee {decision.assignee or '-'}: {decision.assignment_reason}")
        return decision

    def _initial_status(self, ctx: Context, workflow: Workflow, decision: RoutingDecision) -> str:
        """The workflow's initial status, unless a rule set one the workflow has."""
        if not decision.status:
            return workflow.initial
        found = workflow.find(decision.status)
        if found is not None:
            return found.id
        ctx.note(
            "dispatch",
            f"status '{decision.status}' is not in workflow {workflow.name}: using {workflow.initial}",
        )
        return workflow.initial

    def _create(
        self, ctx: Context, repo: Repo, workflow: Workflow, decision: RoutingDecision
    ) -> tuple[Ticket, list[str]]:
        """The ticket, its people and the message, with their events. Returns the ticket and
        the To/Cc the cap kept from becoming watchers."""
        s = self.services
        m = ctx.mail
        desk = ctx.desk
        initial = self._initial_status(ctx, workflow, decision)
        number = repo.next_ticket_number(desk.key)
        now = now_utc()
        ticket = repo.create_ticket(
            key=f"{desk.key}-{number}",
            desk=desk.key,
            number=number,
            subject=strip_prefixes(m.subject)[:500] or "(no subject)",
            requester=m.from_addr,
            requester_name=m.from_name,
            status=initial,
            status_category=workflow.category(initial),
            priority=decision.priority,
            type=decision.type,
            category=decision.category,
            group=decision.group,
            assignee=decision.assignee or None,
            tags=list(decision.tags),
            fields={**s.rules.fields.defaults(), **decision.fields},
            created_at=now,
            updated_at=now,
        )
        ctx.ticket = ticket
        tid = row(ticket)
        repo.new_thread(tid)
        repo.add_participant(tid, m.from_addr, Role.REQUESTER, m.from_name)
        watchers, over_cap = add_first_cc(ctx, repo, s, ticket)
        for w in decision.watchers:
            repo.add_participant(tid, w, Role.AGENT if w in s.rules.team.agents else Role.WATCHER)
        store_message(ctx, repo, s, ticket)
        repo.event(
            tid,
            EventKind.CREATED,
            actor=m.from_addr,
            source=ctx.item.source,
            watchers=watchers,
            cc_not_added=over_cap,
            status=initial,
        )
        repo.event(
            tid, EventKind.ROUTED, routing=decision.to_dict(full_trace=False), rules_version=s.rules.version
        )
        ctx.disposition = Disposition.TICKET_CREATED
        ctx.note(
            "apply",
            f"created {ticket.key} ({workflow.status(initial).label})"
            + (f", group {ticket.group}" if ticket.group else "")
            + (f", assigned to {ticket.assignee}" if ticket.assignee else "")
            + (f", watchers {', '.join(watchers)}" if watchers else ""),
        )
        return ticket, over_cap

    def _tell_agents(
        self, ctx: Context, repo: Repo, ticket: Ticket, decision: RoutingDecision, over_cap: list[str]
    ) -> None:
        """The assignee (or the triage person when no rule placed it), and agent watchers."""
        s = self.services
        m = ctx.mail
        agent_ctx: dict[str, Any] = {
            "decision": decision,
            "comment": m.reply_text or m.body_text,
            "help": HELP,
            "from": m.from_addr,
            "from_name": m.from_name,
            "cc_not_added": over_cap,
        }
        if decision.triaged or not ticket.assignee:
            triage = [decision.triage or s.rules.triage_for(ctx.desk.key)]
            tell(
                s,
                repo,
                ctx,
                ticket,
                triage,
                template="triage_needed",
                kind="triage-needed",
                context=agent_ctx,
            )
        else:
            tell(
                s,
                repo,
                ctx,
                ticket,
                [ticket.assignee],
                template="new_ticket",
                kind="new-ticket",
                context=agent_ctx,
            )
        agents = s.rules.team.agents
        agent_watchers = [w for w in decision.watchers if w in agents and w != ticket.assignee]
        if agent_watchers:
            tell(
                s,
                repo,
                ctx,
                ticket,
                agent_watchers,
                template="new_ticket",
                kind="new-ticket",
                context=agent_ctx,
            )
