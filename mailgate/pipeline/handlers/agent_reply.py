"""An agent's reply to a ticket: commands at the top, then the comment (DESIGN.md "Agents by mail").

Read top-down, each step a guard: is the mail proven to be the agent's (else it is kept and the
real agent told), is it an out-of-office (kept, nothing run), does the agent's role allow the
change, do the commands check out as one plan (else nothing applied and the agent told why);
then the plan is applied whole and the people who should hear of it are told. Commands apply all
together or not at all; nothing here runs for a mail that only claims an agent's address.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mailgate.domain.changes import Change, GroupSet, RequesterSet, StatusChanged
from mailgate.domain.commands import (
    HELP,
    Plan,
    RawCommand,
    TicketView,
    plan,
    split_commands,
    stray_commands,
)
from mailgate.domain.team import choose_assignee, may_change
from mailgate.domain.workflow import Workflow
from mailgate.mail.reply import extract_reply
from mailgate.pipeline.apply import apply_plan, change_status, requester_side, row
from mailgate.pipeline.canned import CannedFailed, is_article, render_canned, with_canned
from mailgate.pipeline.context import Context
from mailgate.pipeline.handlers.common import (
    Services,
    store_message,
    tell,
    tell_rejected_attachments,
    travelling,
)
from mailgate.pipeline.identity import Proof, prove, token_keys
from mailgate.pipeline.outcomes import Disposition
from mailgate.pipeline.parent import to_children
from mailgate.store.kinds import EventKind, MessageKind, Role
from mailgate.store.models import Ticket, now_utc
from mailgate.store.repo import Repo


@dataclass(frozen=True)
class AgentMail:
    """What the agent wrote: the reply, its command lines, and the rest (the comment)."""

    author: str
    reply: str
    commands: list[RawCommand]
    comment: str

    @classmethod
    def read(cls, ctx: Context) -> AgentMail:
        reply = ctx.mail.reply_text or extract_reply(ctx.mail.body_text)
        commands, comment = split_commands(reply)
        return cls(ctx.mail.from_addr, reply, commands, comment)

    @property
    def changes_something(self) -> bool:
        """Commands that change the ticket, or a comment the requester will read: both need the
        agent's role to allow it (internal notes and #help do not)."""
        changing = any(c.name not in ("internal", "help") for c in self.commands)
        public = bool(self.comment) and not any(c.name == "internal" for c in self.commands)
        return changing or public


class AgentReplyHandler:
    """An agent's reply to a ticket: commands at the top, then the comment."""

    name = "agent-reply"

    def __init__(self, services: Services) -> None:
        self.services = services

    def can_handle(self, ctx: Context) -> bool:
        return ctx.ticket is not None and ctx.mail.from_addr in self.services.rules.team.agents

    def execute(self, ctx: Context, repo: Repo) -> None:
        ticket = ctx.ticket
        assert ticket is not None
        mail = AgentMail.read(ctx)
        proof = self._prove(ctx, repo, ticket)
        if not proof.proven:
            self._unproven(ctx, repo, ticket, proof, mail)
            return
        ctx.note("identity", f"agent {mail.author} proven: {proof.how}")
        if ctx.auto_reason:
            self._out_of_office(ctx, repo, ticket, mail)
            return
        if mail.changes_something and not self._allowed(ctx, repo, ticket, mail):
            return
        # Taking part, after the role allowed it: a refused agent does not join the ticket's mail.
        repo.add_participant(row(ticket), mail.author, Role.AGENT, self.services.agent_name(mail.author))
        workflow = self.services.rules.workflow(ctx.desk)
        checked = self._plan(ctx, repo, ticket, workflow, mail)
        if checked is None or not self._allowed_on_named(ctx, repo, ticket, mail, checked):
            return
        if checked.canned is not None:
            with_text = self._canned(ctx, repo, ticket, checked.canned, mail)
            if with_text is None:
                return
            mail = with_text
        old_assignee = ticket.assignee
        self._group_assignee(ctx, repo, ticket, checked)
        changes = self._apply(ctx, repo, ticket, workflow, checked, mail)
        self._tell_people(ctx, repo, ticket, workflow, checked, mail, changes, old_assignee)
        if not ticket.assignee and any(isinstance(c, GroupSet) for c in changes):
            self._tell_group(ctx, repo, ticket, mail, changes)
        to_children(self.services, ctx, repo, ticket, workflow, checked, mail.author, mail.comment)
        ctx.disposition = Disposition.AGENT_REPLY

    # -- the guards ----------------------------------------------------------------------------
    def _prove(self, ctx: Context, repo: Repo, ticket: Ticket) -> Proof:
        s = self.services
        return prove(
            ctx.mail,
            keys=token_keys(s.config, now_utc().date()),
            ticket_key=ticket.key,
            ticket_id=row(ticket),
            recipients=ctx.recipients,
            security=s.config.security,
            sent_to=repo.sent_to,
        )

    def _unproven(self, ctx: Context, repo: Repo, ticket: Ticket, proof: Proof, mail: AgentMail) -> None:
        """Claims an agent's address without proof. An automatic one (an agent's out-of-office,
        or a forgery marked automatic) is kept and never answered, so a "forged agent" notice
        can never feed a loop; any other is kept, runs nothing, and the real agent is told."""
        if ctx.auto_reason:
            store_message(ctx, repo, self.services, ticket, kind=MessageKind.INTERNAL)
            ctx.disposition = Disposition.AGENT_AUTO_REPLY
            ctx.note(
                "identity",
                f"automatic mail claiming agent {mail.author}, unproven ({proof.how}): stored, nobody told",
            )
            return
        self._forged(ctx, repo, ticket, proof.how, bool(mail.commands))
        if proof.retired_key:
            ctx.disposition = Disposition.TOKEN_RETIRED

    def _out_of_office(self, ctx: Context, repo: Repo, ticket: Ticket, mail: AgentMail) -> None:
        """An out-of-office, with or without RFC 3834 headers: an internal note, never a reply to
        the customer, never a first response, no command run."""
        store_message(ctx, repo, self.services, ticket, kind=MessageKind.INTERNAL)
        ctx.disposition = Disposition.AGENT_AUTO_REPLY
        ctx.note(
            "apply", f"an automatic mail from agent {mail.author}: kept as an internal note, nothing run"
        )

    def _allowed(self, ctx: Context, repo: Repo, ticket: Ticket, mail: AgentMail) -> bool:
        """Whether the agent's role lets them change this ticket; refused when not. The agent who
        opened a ticket (its requester) may always hand it to the customer it is for."""
        if ticket.requester == mail.author and {c.name for c in mail.commands} <= {"requester", "internal"}:
            ctx.note("identity", f"access: {mail.author} opened {ticket.key} and names its requester")
            return True
        access = may_change(self.services.rules.team, mail.author, ticket.key, ticket.group, ticket.assignee)
        ctx.note("identity", f"access: {access.rule}")
        if access.allowed:
            return True
        self._refuse(ctx, repo, ticket, mail, recorded=[access.rule], told=[f"not allowed: {access.rule}"])
        ctx.note("commands", f"refused by role, nothing applied: {access.rule}")
        return False

    def _allowed_on_named(
        self, ctx: Context, repo: Repo, ticket: Ticket, mail: AgentMail, checked: Plan
    ) -> bool:
        """Whether the agent's role lets them change the other tickets their commands name.
        `#merge KEY` puts this ticket's people on KEY (a watcher just added with `#cc add` would
        get KEY's mail and its request page), `#link KEY` writes on KEY, and `#parent KEY` makes
        KEY's broadcasts reach this ticket's people: each changes or reaches into KEY, so the role
        must allow KEY as it allowed this ticket; refused whole when it does not."""
        named = [*checked.links, *filter(None, (checked.parent, checked.merge_into))]
        refused: list[str] = []
        for key in dict.fromkeys(named):
            other = repo.ticket_by_key(key)
            if other is None:  # the plan checked it exists; nothing to reach
                continue
            access = may_change(self.services.rules.team, mail.author, other.key, other.group, other.assignee)
            if not access.allowed:
                refused.append(access.rule)
        if not refused:
            return True
        self._refuse(ctx, repo, ticket, mail, recorded=refused, told=[f"not allowed: {r}" for r in refused])
        ctx.note("commands", f"refused by role on a ticket named, nothing applied: {'; '.join(refused)}")
        return False

    def _plan(
        self, ctx: Context, repo: Repo, ticket: Ticket, workflow: Workflow, mail: AgentMail
    ) -> Plan | None:
        """The commands checked as one plan, or None when any is wrong (the agent is told)."""
        checked, errors = plan(
            mail.commands,
            ticket=TicketView(
                ticket.key, ticket.status, tuple(ticket.tags or []), tuple(ticket.fields or {})
            ),
            workflow=workflow,
            team=self.services.rules.team,
            author=mail.author,
            ticket_exists=lambda key: key.startswith(ctx.desk.key + "-") and repo.key_exists(key),
            canned=self.services.rules.templates.canned_names(),
            fields=self.services.rules.fields,
        )
        for c in mail.commands:
            ctx.note("commands", f"line {c.line_no}: {c.line}")
        # A command below the agent's text was meant as one: refused whole, rather than sent to
        # the requester as text while the ticket stays where it was.
        errors = sorted([*errors, *stray_commands(mail.reply, workflow)], key=lambda e: e.line_no)
        if not errors:
            return checked
        words = [str(e) for e in errors]
        self._refuse(ctx, repo, ticket, mail, recorded=words, told=words)
        ctx.note("commands", f"refused, nothing applied: {'; '.join(e.reason for e in errors)}")
        return None

    def _canned(
        self, ctx: Context, repo: Repo, ticket: Ticket, name: str, mail: AgentMail
    ) -> AgentMail | None:
        """`#canned <name>`: the canned text goes before the agent's words, as one reply; None
        (nothing applied, the agent told) when it does not render for this ticket."""
        try:
            text = render_canned(
                self.services.rules, ctx.desk, ticket, name, self.services.agent_name(mail.author)
            )
        except CannedFailed as exc:
            self._refuse(ctx, repo, ticket, mail, recorded=[str(exc)], told=[str(exc)])
            return None
        repo.event(row(ticket), EventKind.CANNED, actor=mail.author, name=name)
        if is_article(name):  # the request page links it (web/app.py)
            repo.event(row(ticket), EventKind.KB_SENT, actor=mail.author, article=name)
        ctx.note("commands", f"canned reply {name} goes before the agent's words")
        return replace(mail, comment=with_canned(text, mail.comment))

    def _refuse(
        self,
        ctx: Context,
        repo: Repo,
        ticket: Ticket,
        mail: AgentMail,
        *,
        recorded: list[str],
        told: list[str],
    ) -> None:
        """Nothing applied: the reply is kept as an internal note, the refusal recorded, and the
        agent told what was wrong (a rule their role broke, or commands that did not check out)."""
        s = self.services
        store_message(ctx, repo, s, ticket, kind=MessageKind.INTERNAL, reply_text=mail.reply)
        repo.event(row(ticket), EventKind.COMMANDS_REFUSED, actor=mail.author, errors=recorded)
        tell(
            s,
            repo,
            ctx,
            ticket,
            [mail.author],
            template="command_error",
            kind="command-error",
            context={"errors": told, "help": HELP, "comment": mail.comment},
        )
        ctx.disposition = Disposition.COMMANDS_REFUSED

    def _forged(self, ctx: Context, repo: Repo, ticket: Ticket, why: str, had_commands: bool) -> None:
        """Claims an agent's address without proof: stored as an ordinary comment, nothing run,
        nothing forwarded, and the real agent is told."""
        s = self.services
        claimed = ctx.mail.from_addr
        store_message(ctx, repo, s, ticket, kind=MessageKind.INTERNAL)
        repo.event(
            row(ticket),
            EventKind.FORGED_AGENT,
            actor="system",
            claimed=claimed,
            why=why,
            commands=had_commands,
        )
        ctx.note("identity", f"claims to be agent {claimed} without proof ({why}): no command run")
        tell(
            s,
            repo,
            ctx,
            ticket,
            [claimed],
            template="forged_agent",
            kind="forged-agent",
            context={
                "claimed": claimed,
                "why": why,
                "had_commands": had_commands,
                "subject_seen": ctx.mail.subject,
                "excerpt": (ctx.mail.reply_text or "")[:500],
            },
        )
        ctx.disposition = Disposition.FORGED_AGENT

    def _group_assignee(self, ctx: Context, repo: Repo, ticket: Ticket, checked: Plan) -> None:
        """`#assign group X` without `#assign AGENT`: the ticket goes to whom the group's `assign`
        strategy in team.toml picks (its lead, round-robin, least-open), as routing would; when
        nobody in the group is available it is left unassigned in the group (and the group told),
        not with whoever held it before."""
        if checked.group is None or checked.group == ticket.group or checked.assignee or checked.unassign:
            return
        team = self.services.rules.team
        plan, who, why = choose_assignee(
            team, checked.group, last_assigned=repo.last_assignee, open_counts=repo.open_count
        )
        if plan.candidates:
            checked.assignee = who
            ctx.note("commands", f"group {checked.group} assigns {who}: {why}")
        else:
            checked.unassign = True
            ctx.note("commands", f"group {checked.group}: nobody available ({why}); left unassigned")

    def _tell_group(
        self, ctx: Context, repo: Repo, ticket: Ticket, mail: AgentMail, changes: list[Change]
    ) -> None:
        """A ticket moved to a group with nobody to take it: every member hears of it (else the
        triage person), so it does not wait unseen."""
        s = self.services
        people = [a for a in (s.group_members(ticket) or (s.rules.team.triage,)) if a and a != mail.author]
        context = {
            "actor": s.agent_name(mail.author),
            "actor_address": mail.author,
            "comment": mail.comment,
            "changes": changes,
            "group": ticket.group,
            "help": HELP,
        }
        tell(s, repo, ctx, ticket, people, template="group_queue", kind="group-queue", context=context)

    # -- applying ------------------------------------------------------------------------------
    def _apply(
        self, ctx: Context, repo: Repo, ticket: Ticket, workflow: Workflow, checked: Plan, mail: AgentMail
    ) -> list[Change]:
        """Store the reply and apply the plan whole; the changes made, in command order."""
        s = self.services
        internal = checked.internal
        kind = MessageKind.INTERNAL if internal else MessageKind.PUBLIC
        if mail.comment or ctx.mail.attachments:
            store_message(ctx, repo, s, ticket, kind=kind, reply_text=mail.comment, text=mail.comment)
            tell_rejected_attachments(s, repo, ctx, ticket)
        else:
            # Commands only: nothing was said to anyone, so no message is stored (the quoted
            # notification below them would read as the agent's words); the audit trail has it.
            repo.add_thread_ref(ctx.desk.key, ctx.mail.message_id, row(ticket))
            repo.event(
                row(ticket),
                EventKind.COMMANDS,
                actor=mail.author,
                commands=[c.line for c in mail.commands],
                message_id=ctx.mail.message_id,
            )
        if mail.comment:
            repo.event(row(ticket), EventKind.COMMENT, actor=mail.author, internal=internal)
        first_public = bool(mail.comment) and not internal and ticket.first_response_at is None
        changes = apply_plan(repo, ticket, workflow, checked, mail.author)
        if first_public:
            changes += self._first_response(repo, ticket, workflow, checked, mail.author)
        repo.session.add(ticket)
        for change in changes:
            ctx.note("apply", f"{mail.author} {change}")
        return changes

    def _first_response(
        self, repo: Repo, ticket: Ticket, workflow: Workflow, checked: Plan, author: str
    ) -> list[Change]:
        """The first public human reply: record it, and move a ticket still in its initial status
        where the workflow says (care desk: Pending → Open)."""
        ticket.first_response_at = now_utc()
        repo.event(row(ticket), EventKind.FIRST_RESPONSE, actor=author)
        if checked.status is not None or not workflow.first_response or ticket.status != workflow.initial:
            return []
        target = workflow.status(workflow.first_response)
        return [change_status(repo, ticket, workflow, target, author, "first response")]

    # -- telling -------------------------------------------------------------------------------
    def _other_agents(
        self, repo: Repo, ticket: Ticket, author: str, old_assignee: str | None, agents: set[str]
    ) -> list[str]:
        """The agents on the ticket who hear of this reply's status change or internal note: not
        its author, and not a new assignee, who gets the assigned mail instead."""
        new_assignee = ticket.assignee if ticket.assignee != old_assignee else ""
        others = self.services.agents_of(repo, ticket, exclude={author, new_assignee or ""})
        return [a for a in others if a in agents]

    def _tell_people(
        self,
        ctx: Context,
        repo: Repo,
        ticket: Ticket,
        workflow: Workflow,
        checked: Plan,
        mail: AgentMail,
        changes: list[Change],
        old_assignee: str | None,
    ) -> None:
        s = self.services
        author, comment, internal = mail.author, mail.comment, checked.internal
        status = workflow.statuses.get(ticket.status)
        agents = s.agents()
        # The agent's attachments go where the words go: to the customer with a public reply,
        # to the agents only with an internal note.
        files = travelling(s, ticket, ctx.stored, ctx.contents)
        context: dict[str, Any] = {
            "actor": s.agent_name(author),
            "actor_address": author,
            "comment": comment,
            "changes": changes,
            "status": status,
            "internal": internal,
            "help": HELP,
        }
        # Requester and watchers: the comment and the status change, unless internal. Who it was
        # assigned to, tags and fields are the desk's business, not the customer's.
        status_changed = any(isinstance(c, StatusChanged) for c in changes)
        if not internal and (comment or status_changed or files.listed):
            template = status.template if (status_changed and status) else "agent_comment"
            public = [c for c in changes if c.public]
            tell(
                s,
                repo,
                ctx,
                ticket,
                requester_side(repo, ticket, agents),
                template=template,
                kind=template,
                from_name=s.agent_name(author),
                context={**context, "changes": public, "survey": bool(status and status.resolved)},
                human=True,
                attachments=files,
            )
        # Seed 000: "an email is triggered from the system to all watchers" on a status change;
        # the agents watching (assignee, agents who took part) get it in agent words, less the
        # author and a new assignee (told below).
        if not internal and status_changed and status:
            tell(
                s,
                repo,
                ctx,
                ticket,
                self._other_agents(repo, ticket, author, old_assignee, agents),
                template="watcher_update",
                kind="watcher-update",
                from_name=s.agent_name(author),
                context={**context, "changes": [c for c in changes if c.public]},
                attachments=files,
            )
        # A customer an agent opened the ticket for gets the acknowledgement a requester gets.
        for change in changes:
            if isinstance(change, RequesterSet):
                tell(
                    s,
                    repo,
                    ctx,
                    ticket,
                    [change.address],
                    template="acknowledgement",
                    kind="acknowledgement",
                    context={"message": ctx.mail, "requester_name": ticket.requester_name},
                    auto_submitted="auto-replied",
                    human=True,
                )
        # A new assignee hears about it ("assignee will receive an email").
        if ticket.assignee and ticket.assignee != old_assignee and ticket.assignee != author:
            # What the request is about: the requester's first words and their files, not just the key.
            first = next(
                (
                    m
                    for m in repo.messages(row(ticket))
                    if m.direction == "in" and m.kind == MessageKind.PUBLIC
                ),
                None,
            )
            tell(
                s,
                repo,
                ctx,
                ticket,
                [ticket.assignee],
                template="assigned",
                kind="assigned",
                context={**context, "request": (first.reply_text or first.text).strip() if first else ""},
                attachments=travelling(
                    s, ticket, [a for a in (first.attachments if first else []) if "sha256" in a]
                ),
            )
        # Other agents on the ticket (assignee, else group or triage, and agents who took part)
        # see internal notes. Public replies are not copied to them (the ticket history has them).
        if internal and comment:
            tell(
                s,
                repo,
                ctx,
                ticket,
                self._other_agents(repo, ticket, author, old_assignee, agents),
                template="internal_note",
                kind="internal-note",
                context=context,
                attachments=files,
            )
        if checked.help:
            tell(
                s, repo, ctx, ticket, [author], template="command_help", kind="command-help", context=context
            )
