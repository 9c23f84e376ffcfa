"""A new conversation becomes a ticket: the flood limit first, then routing (which rules hit,
and why this assignee), the ticket with its requester and first watchers, the message, and the
mail it causes: the assignee (or triage) and agent watchers hear of it, the requester gets an
acknowledgement (or the rule's automatic answer), never an automatic sender.

An agent may open a ticket for a customer (phone, walk-in, a forwarded mail): `#requester ADDRESS`
at the top of a new mail, or a forwarded mail (inline block or attached message/rfc822). When the
relay proves the agent (Authentication-Results), the customer is the requester at once and gets
the acknowledgement; a From alone proves nothing, so the ticket stays the agent's and they are
asked to confirm by replying (their reply token proves them), docs/security.md "On behalf".

It runs last in the registry: whatever no other handler took. It must not ticket a sender past
the flood limit (held in the inbox instead) nor acknowledge an automatic mail. An automatic answer
(an out-of-office: `Auto-Submitted: auto-replied`) got here because it answers no ticket: it is
held too, not ticketed; a system's own notification (`auto-generated`, a monitoring alert) is a
request and opens a ticket, unacknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from mailgate.domain import routing as routing_mod
from mailgate.domain.commands import ADDR_RE, HELP, command_addresses, split_commands
from mailgate.domain.routing import RoutingDecision
from mailgate.domain.threading import strip_prefixes
from mailgate.domain.workflow import Workflow
from mailgate.mail.forwarded import attached_sender, inline_sender
from mailgate.mail.screen import automatic_answer
from mailgate.pipeline.apply import row
from mailgate.pipeline.canned import is_article
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import AutoReplyHeld, FloodHeld, ProcessingError
from mailgate.pipeline.handlers.common import (
    Services,
    Travelling,
    add_first_cc,
    store_message,
    tell,
    tell_rejected_attachments,
    travelling,
)
from mailgate.pipeline.identity import auth_results_proof
from mailgate.pipeline.outcomes import Disposition
from mailgate.pipeline.release import is_released
from mailgate.pipeline.similar import Asked, Similar, ask_similar
from mailgate.store.kinds import EventKind, Role
from mailgate.store.models import Ticket, now_utc
from mailgate.store.repo import Repo


def _flood_words(sender: str) -> str:
    """How a held:flood reason starts: the admin is told once per sender per window, when no
    row held with these words is in the window yet."""
    return f"{sender} opened "


@dataclass(frozen=True)
class OnBehalf:
    """A new mail from an agent naming the customer it is for, and whether the agent is proven."""

    agent: str
    customer: str
    name: str
    source: str  # "#requester", "forwarded inline", "forwarded as an attachment"
    proven: bool
    how: str
    comment: str  # the agent's words without the #requester line


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
        answer = automatic_answer(m)
        if is_released(ctx):  # an admin read it and let it through (pipeline/release.py)
            ctx.note("dispatch", f"released by {ctx.item.released_by}: not held again")
        elif answer:
            raise AutoReplyHeld(f"automatic answer ({answer}) to no ticket of this desk: held, not ticketed")
        else:
            self._check_flood(ctx, repo)
        workflow = self.services.rules.workflow(ctx.desk)
        decision = self._route(ctx, repo)
        behalf = None if ctx.auto_reason else self._on_behalf(ctx)
        ticket, over_cap, asked = self._create(ctx, repo, workflow, decision, behalf)
        self._tell_agents(ctx, repo, ticket, decision, over_cap, asked, behalf)
        # The requester: an acknowledgement (or the rule's automatic answer), never to an automatic mail.
        if ctx.auto_reason:
            ctx.note("notify", f"no acknowledgement: {ctx.auto_reason}")
            return
        if behalf is not None and not behalf.proven:
            self._ask_to_confirm(ctx, repo, ticket, behalf)
            return
        sent = tell(
            self.services,
            repo,
            ctx,
            ticket,
            [ticket.requester],
            template=decision.auto_reply or "acknowledgement",
            kind="acknowledgement",
            context={"message": m, "requester_name": ticket.requester_name},
            auto_submitted="auto-replied",
        )
        if sent and is_article(decision.auto_reply):  # the request page links it (web/app.py)
            repo.event(row(ticket), EventKind.KB_SENT, article=decision.auto_reply)
        tell_rejected_attachments(self.services, repo, ctx, ticket)

    def _on_behalf(self, ctx: Context) -> OnBehalf | None:
        """The customer a new mail from an agent is for: a `#requester` line at the top, else the
        writer of an attached message, else of an inline forwarded block; None when the sender
        is no agent of team.toml or names nobody."""
        s = self.services
        m = ctx.mail
        agent = m.from_addr
        if agent not in s.rules.team.agents:
            return None
        commands, comment = split_commands(m.reply_text or m.body_text)
        found: tuple[str, str] | None = None
        source = ""
        for c in commands:
            named = command_addresses(c.args)
            addr = named[0] if len(named) == 1 else ""
            if c.name == "requester" and ADDR_RE.match(addr):
                found, source = (addr, ""), "#requester"
                break
        if found is None:
            for att in m.attachments:
                if att.content_type != "message/rfc822":
                    continue
                raw = att.content
                if not raw and att.sha256 and s.blobs is not None:
                    try:
                        raw = s.blobs.get(att.sha256)
                    except (OSError, ValueError):  # gone or corrupt: it names nobody
                        continue
                found, source = attached_sender(raw), "forwarded as an attachment"
                if found:
                    break
        if found is None:
            found, source = inline_sender(m.body_text), "forwarded inline"
        if found is None:
            return None
        customer, name = found
        if customer in s.rules.team.agents or customer in s.config.own_addresses:
            ctx.note("dispatch", f"{source} names {customer}, of this desk: not made the requester")
            return None
        proof = auth_results_proof(m, agent, s.config.security)
        ctx.note("identity", f"agent {agent} opens it for {customer} ({source}): {proof.how}")
        return OnBehalf(agent, customer, name, source, proof.proven, proof.how, comment if commands else "")

    def _ask_to_confirm(self, ctx: Context, repo: Repo, ticket: Ticket, behalf: OnBehalf) -> None:
        """A From alone proves nothing: the ticket stays the agent's, and the agent is asked to
        confirm by replying with `#requester` (their reply token proves them). Until then the
        customer gets nothing, so nobody can make the desk mail a stranger in an agent's name."""
        tell(
            self.services,
            repo,
            ctx,
            ticket,
            [behalf.agent],
            template="on_behalf_confirm",
            kind="on-behalf-confirm",
            context={"customer": behalf.customer, "source": behalf.source, "why": behalf.how},
        )

    def _check_flood(self, ctx: Context, repo: Repo) -> None:
        """Past `[limits] new_tickets_per_sender` in the window, new mail of a sender is held in
        the inbox, not ticketed; the admin is told once per sender per window."""
        s = self.services
        sender = ctx.mail.from_addr
        since = now_utc() - s.flood_window
        n = repo.tickets_opened_since(sender, since)
        if n < s.flood_limit:
            return
        opened = f"{n} ticket{'' if n == 1 else 's'} in {s.flood_window // timedelta(minutes=1)} minutes"
        held = FloodHeld(f"{_flood_words(sender)}{opened}: held, not ticketed")
        # Only when no earlier message of this sender was held in the window (rows of this batch
        # are flushed, so they count).
        if not repo.held_since(FloodHeld.disposition, _flood_words(sender), since):
            held.admin_notice = (
                f"mailgate: new tickets from {sender} are held (flood limit)",
                f"{sender} opened {opened}, the limit set by\n"
                "[limits] new_tickets_per_sender / flood_window_minutes. Further new mail from them\n"
                "is kept in the inbox as held:flood and not ticketed; replies to their existing\n"
                "tickets still thread. This notice is sent once per sender per window.\n\n"
                "See them with `mailgate inbox list`; each keeps its raw message\n"
                "(`mailgate inbox show ID --raw`). `mailgate inbox release ID` makes one a ticket,\n"
                "`mailgate inbox drop ID` discards it.\n",
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
        self,
        ctx: Context,
        repo: Repo,
        workflow: Workflow,
        decision: RoutingDecision,
        behalf: OnBehalf | None = None,
    ) -> tuple[Ticket, list[str], Asked]:
        """The ticket, its people and the message, with their events. Returns the ticket, the
        To/Cc the cap kept from becoming watchers, and its similar tickets, asked for with the
        statement that makes the ticket (pipeline/similar.py `ask_similar`). For a proven agent's
        mail on behalf of a customer, the customer is the requester and the agent takes part as
        an agent."""
        s = self.services
        m = ctx.mail
        desk = ctx.desk
        initial = self._initial_status(ctx, workflow, decision)
        for_customer = behalf is not None and behalf.proven
        requester = behalf.customer if behalf and for_customer else m.from_addr
        requester_name = behalf.name if behalf and for_customer else m.from_name
        now = now_utc()
        subject = strip_prefixes(m.subject)[:500] or "(no subject)"
        asked = ask_similar(repo, subject, requester, desk.key, now)
        ticket = repo.open_ticket(
            desk.key,
            m.message_id,
            subject=subject,
            requester=requester,
            requester_name=requester_name,
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
        repo.add_participant(tid, requester, Role.REQUESTER, requester_name)
        if behalf is not None and for_customer:
            repo.add_participant(tid, behalf.agent, Role.AGENT, s.agent_name(behalf.agent))
            repo.event(
                tid,
                EventKind.REQUESTER,
                actor=behalf.agent,
                old=behalf.agent,
                new=behalf.customer,
                source=behalf.source,
                proof=behalf.how,
            )
        watchers, over_cap = add_first_cc(ctx, repo, s, ticket)
        for w in decision.watchers:
            repo.add_participant(tid, w, Role.AGENT if w in s.rules.team.agents else Role.WATCHER)
        # A `#requester` line is an instruction to the desk, not words to the customer.
        store_message(ctx, repo, s, ticket, reply_text=behalf.comment if behalf and behalf.comment else None)
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
        return ticket, over_cap, asked

    def _tell_agents(
        self,
        ctx: Context,
        repo: Repo,
        ticket: Ticket,
        decision: RoutingDecision,
        over_cap: list[str],
        asked: Asked,
        behalf: OnBehalf | None = None,
    ) -> None:
        """The assignee (or the triage person when no rule placed it), and agent watchers."""
        s = self.services
        m = ctx.mail
        agent_ctx: dict[str, Any] = {
            "decision": decision,
            "comment": (behalf.comment if behalf and behalf.comment else "") or m.reply_text or m.body_text,
            "help": HELP,
            "from": m.from_addr,
            "from_name": m.from_name,
            "cc_not_added": over_cap,
        }
        files = travelling(s, ticket, ctx.stored, ctx.contents)
        found = self._similar(ctx, repo, ticket, asked)
        if decision.triaged or not ticket.assignee:
            triage = [decision.triage or s.rules.triage_for(ctx.desk.key)]
            told = set(triage)
            self._tell_each(
                ctx, repo, ticket, triage, "triage_needed", "triage-needed", agent_ctx, found, files
            )
        else:
            told = {ticket.assignee}
            self._tell_each(
                ctx, repo, ticket, [ticket.assignee], "new_ticket", "new-ticket", agent_ctx, found, files
            )
        agents = s.rules.team.agents
        # `notify_new = "members"`: every member of the group has it in their inbox too.
        members = [a for a in s.rules.team.told_of_new(ticket.group) if a not in told]
        if m.from_addr in agents and m.from_addr != ticket.requester and m.from_addr not in told:
            members.append(m.from_addr)  # the agent who opened it for a customer: its key, its mail
        agent_watchers = [w for w in decision.watchers if w in agents and w not in told and w not in members]
        agent_watchers = members + agent_watchers
        if agent_watchers:
            self._tell_each(
                ctx, repo, ticket, agent_watchers, "new_ticket", "new-ticket", agent_ctx, found, files
            )

    def _similar(self, ctx: Context, repo: Repo, ticket: Ticket, asked: Asked) -> Similar:
        """The new ticket's similar tickets (pipeline/similar.py), recorded on it when any: `tickets
        show` and the history name them, and the likely duplicate."""
        found = asked.similar(ticket)
        if found.hits:
            duplicate = found.duplicate.key if found.duplicate else None
            repo.event(row(ticket), EventKind.SIMILAR, keys=found.keys(), duplicate=duplicate)
            ctx.note(
                "apply",
                f"similar: {', '.join(found.keys())}"
                + (f"; likely duplicate of {duplicate}" if duplicate else ""),
            )
        return found

    def _tell_each(
        self,
        ctx: Context,
        repo: Repo,
        ticket: Ticket,
        agents: list[str],
        template: str,
        kind: str,
        context: dict[str, Any],
        similar: Similar,
        files: Travelling,
    ) -> None:
        """`tell`, with the similar tickets each agent may see: agents who see the same ones
        share one `tell` (one render)."""
        team = self.services.rules.team
        by_view: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for agent in agents:
            view = similar.for_agent(team, agent)
            by_view.setdefault(repr(view), (view, []))[1].append(agent)
        for view, rcpts in by_view.values():
            tell(
                self.services,
                repo,
                ctx,
                ticket,
                rcpts,
                template=template,
                kind=kind,
                context={**context, **view},
                attachments=files,
            )
