"""One handler per kind of inbound mail, chosen from an ordered registry (STYLE.md habit 6).

bounce → unsubscribe → agent reply → requester/watcher reply → new ticket. The first whose
`can_handle` says yes runs `execute`, which applies the change through the Repo (one
transaction) and queues the mail it causes. Each reads as guard clauses; a test pins the order.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, func, select

from mailgate.config import Config
from mailgate.domain import routing as routing_mod
from mailgate.domain.commands import HELP, TicketView, plan, split_commands
from mailgate.domain.team import may_change
from mailgate.domain.threading import strip_prefixes
from mailgate.domain.tokens import KeyState, Purpose, read_token
from mailgate.mail.attachments import apply_limits
from mailgate.mail.decode import plus_parts
from mailgate.mail.reply import extract_reply
from mailgate.mail.thanks import is_thanks_only
from mailgate.pipeline.apply import agent_side, apply_plan, change_status, requester_side
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import BounceUnmatched, FloodHeld, ProcessingError
from mailgate.pipeline.identity import prove, token_keys
from mailgate.pipeline.membership import FanOut, copied_people, standing
from mailgate.pipeline.notify import Notifier
from mailgate.ruleset import RulesSource, Snapshot
from mailgate.store.models import InboxItem, Message, Ticket, now_utc
from mailgate.store.repo import Repo

RATING_RE = re.compile(
    r"^\s*(?:rating\s*[:=]?\s*)?([1-5])(?:\s*(?:/\s*5|stars?|of 5))?\s*(?:[-–:,.!]\s*|\n|$)", re.I
)
# Mail that answers mail claiming to come from an agent: the one agent-bound kind that can loop.
LOOP_PRONE = frozenset({"forged-agent", "command-error", "command-help"})
RATING_SUBJECT_RE = re.compile(r"\brating\s*[:=]?\s*([1-5])\b", re.I)
# Agents hear of a held stranger's mail on a ticket at most once per stranger per ticket in this
# time: each held mail is kept and listed on the ticket, but a stranger cannot flood the agents.
HELD_NOTICE_EVERY = timedelta(hours=1)


class Handler(Protocol):
    """Contract: `can_handle` only reads the context; `execute` writes through `repo` and sets
    `ctx.disposition`; neither sends mail nor touches the network (the outbox does)."""

    name: str

    def can_handle(self, ctx: Context) -> bool: ...

    def execute(self, ctx: Context, repo: Repo) -> None: ...


class Services:
    """What handlers need, constructed once by the runner and passed in."""

    def __init__(
        self, config: Config, notifier: Notifier, rules: RulesSource, blobs: Any | None = None
    ) -> None:
        self.config = config
        self.notifier = notifier
        self.rules_source = rules
        self.blobs = blobs
        self.flood_limit = config.limits.new_tickets_per_sender
        self.flood_window = timedelta(minutes=config.limits.flood_window_minutes)
        self.membership = config.membership

    @property
    def rules(self) -> Snapshot:
        """The rules snapshot in force. Only the runner's thread swaps it, between batches, so
        every read during one message sees the same snapshot."""
        return self.rules_source.current

    def agents(self) -> set[str]:
        return set(self.rules.team.agents)

    def agent_name(self, address: str) -> str:
        agent = self.rules.team.agents.get(address)
        return agent.name if agent else address

    def group_members(self, ticket: Ticket) -> tuple[str, ...]:
        group = self.rules.team.groups.get(ticket.group) if ticket.group else None
        return tuple(group.members) if group else ()


# --- shared steps ---------------------------------------------------------------------------------


def store_message(
    ctx: Context,
    repo: Repo,
    services: Services,
    ticket: Ticket,
    kind: str = "public",
    reply_text: str | None = None,
    thread: bool = True,
) -> Message:
    """Store the message and its attachments (once per content hash). Attachments over the size
    or count limits are recorded by name and size, not stored, and listed in `ctx.rejected`.
    `thread=False` (a held stranger's mail) keeps its Message-ID out of the conversation: our
    later mail does not reference it, and replies to it are not taken as replies to the ticket."""
    m = ctx.mail
    limits = services.config.limits
    kept, rejected = apply_limits(m.attachments, limits.max_attachment_size, limits.max_attachments)
    attachments: list[dict[str, Any]] = []
    for att in kept:
        entry: dict[str, Any] = {"filename": att.filename, "content_type": att.content_type, "size": att.size}
        if att.sha256 is not None:  # stored already, durably, by the parse helper
            entry["sha256"] = att.sha256
        elif services.blobs is not None:
            entry["sha256"] = services.blobs.put(att.content)
        attachments.append(entry)
    attachments.extend({"rejected": why} for why in rejected)
    ctx.rejected = rejected
    if rejected:
        ctx.note("apply", f"attachments not stored: {'; '.join(rejected)}")
    repo.add_message(
        ticket_id=ticket.id,
        direction="in",
        kind=kind,
        author=m.from_addr,
        message_id=m.message_id,
        inbox_id=ctx.item.id,
        subject=m.subject,
        text=m.body_text,
        reply_text=m.reply_text if reply_text is None else reply_text,
        attachments=attachments,
    )
    if thread:
        repo.add_thread_ref(ctx.desk.key, m.message_id, ticket.id)  # type: ignore[arg-type]


def tell_rejected_attachments(services: Services, repo: Repo, ctx: Context, ticket: Ticket) -> None:
    """The sender hears which attachments were not kept, and why (never an automatic sender)."""
    if ctx.rejected and not ctx.auto_reason and ctx.mail.from_addr:
        tell(
            services,
            repo,
            ctx,
            ticket,
            [ctx.mail.from_addr],
            template="attachments_rejected",
            kind="attachments-rejected",
            context={"rejected": ctx.rejected},
        )


def add_first_cc(ctx: Context, repo: Repo, services: Services, ticket: Ticket) -> tuple[list[str], list[str]]:
    """The To/Cc of a new request (besides us) become watchers, up to `[security] max_initial_cc`:
    their replies thread like the requester's. Returns (added, left out by the cap)."""
    copied = copied_people(ctx.mail, services.config.own_addresses)
    cap = services.membership.max_initial_cc  # one mail must not make a thousand watchers
    admitted, over = copied[:cap], copied[cap:]
    added = [a for a in admitted if repo.add_participant(ticket.id, a, "watcher")]  # type: ignore[arg-type]
    if over:
        ctx.note("apply", f"{len(over)} To/Cc address(es) past [security] max_initial_cc not made watchers")
    return added, over


def cc_not_added(ctx: Context, repo: Repo, services: Services, ticket: Ticket) -> list[str]:
    """To/Cc of a later reply who are not on the ticket: being copied proves nothing (anyone can
    put anyone on Cc), so they are recorded for the agents, who may `#cc add` them."""
    people = {p.address for p in repo.participants(ticket.id)}  # type: ignore[arg-type]
    agents = services.agents()
    copied = copied_people(ctx.mail, services.config.own_addresses)
    left = [a for a in copied if a not in people and a not in agents]
    if left:
        repo.event(ticket.id, "cc-not-added", actor=ctx.mail.from_addr, addresses=left)  # type: ignore[arg-type]
        ctx.note("apply", f"copied but not on {ticket.key}, not added: {', '.join(left[:20])}")
    return left


def tell(
    services: Services,
    repo: Repo,
    ctx: Context,
    ticket: Ticket,
    recipients: list[str],
    *,
    template: str,
    kind: str,
    context: dict[str, Any],
    from_name: str | None = None,
    auto_submitted: str = "auto-generated",
    human: bool = False,
) -> list[str]:
    """Queue one mail per recipient; returns who was queued (loop limits may hold some back).

    Loop limits apply to automatic mail to requesters and watchers, and to what answers mail
    claiming to be an agent's (a forged-agent notice, a command error): that is where an
    auto-responder can loop. A person's words (`human`: a proven agent's reply or change) are
    never held by them: a loop needs a machine on both ends. Other mail to our own agents (new
    tickets, replies to work on) is never held: a triage person must hear about the hundredth
    ticket of the hour too. Every mail of the event to someone outside the team counts against
    `[security] max_recipients_per_event` (ctx.fanout); who is past it gets nothing.
    """
    sent = []
    agents = services.agents()
    if ctx.fanout is None:
        ctx.fanout = FanOut(services.membership.max_recipients_per_event)
    for rcpt in dict.fromkeys(r.lower() for r in recipients if r):
        if rcpt not in agents and not ctx.fanout.admit(rcpt):
            continue
        item = services.notifier.send(
            repo,
            desk=ctx.desk,
            ticket=ticket,
            kind=kind,
            template=template,
            to=rcpt,
            context=context,
            in_reply_to=ctx.mail.message_id,
            auto_submitted=auto_submitted,
            from_name=from_name,
            check_loops=(rcpt not in agents and not human) or kind in LOOP_PRONE,
        )
        if item is not None:
            sent.append(rcpt)
    if sent:
        ctx.note("notify", f"{template} queued to {', '.join(sent)}")
    return sent


# --- handlers -------------------------------------------------------------------------------------


class BounceHandler:
    """A delivery failure of one of our mails: a system note on its ticket, never a reply."""

    name = "bounce"

    def __init__(self, services: Services) -> None:
        self.services = services

    def can_handle(self, ctx: Context) -> bool:
        return ctx.mail.is_bounce

    def execute(self, ctx: Context, repo: Repo) -> None:
        if ctx.ticket is None:
            raise BounceUnmatched("a bounce that names no message of ours")
        bounce = ctx.mail.bounce
        failed = [a.lower() for a in bounce.failed_recipients] if bounce else []
        store_message(ctx, repo, self.services, ctx.ticket, kind="system")
        permanent = bool(bounce and bounce.permanent)
        # Anyone can write a delivery report: it mutes only addresses the bounced mail of ours
        # (its original Message-ID) was sent to, or a stranger could silence a ticket's people.
        original = bounce.original_message_id if bounce else None
        sent_to = repo.mailed_to(ctx.ticket.id, [original] if original else [])  # type: ignore[arg-type]
        muted = [a for a in failed if a in sent_to] if permanent else []
        if muted:
            repo.mute(ctx.ticket.id, muted)  # type: ignore[arg-type]
        repo.event(
            ctx.ticket.id,
            "bounce",
            failed=failed,
            muted=muted,
            status=bounce.status if bounce else None,
            permanent=permanent,
        )  # type: ignore[arg-type]
        ctx.disposition = "bounce"
        unproven = [a for a in failed if a not in muted] if permanent else []
        ctx.note(
            "apply",
            f"bounce for {', '.join(failed) or 'an unknown recipient'} noted on {ctx.ticket.key}"
            + (f"; no more mail to {', '.join(muted)} on this ticket" if muted else "")
            + (f"; not muted, it names no mail of ours to {', '.join(unproven)}" if unproven else ""),
        )


class UnsubscribeHandler:
    """Mail to support+<token>-off@: the sender turns off this ticket's notifications (the
    mailto in List-Unsubscribe, RFC 2369; "Turn off this request's notifications")."""

    name = "unsubscribe"

    def __init__(self, services: Services) -> None:
        self.services = services

    def _token(self, ctx: Context) -> str | None:
        for addr in ctx.recipients:
            _, tag = plus_parts(addr)
            if tag is not None and tag.endswith("-off"):
                return tag[: -len("-off")]
        return None

    def can_handle(self, ctx: Context) -> bool:
        return self._token(ctx) is not None

    def execute(self, ctx: Context, repo: Repo) -> None:
        word = self._token(ctx) or ""
        claim = read_token(word)
        keys = token_keys(self.services.config, now_utc().date())
        state = None if claim is None else keys.verify(claim, ctx.mail.from_addr, Purpose.UNSUBSCRIBE)
        if claim is None or state not in (KeyState.CURRENT, KeyState.OLD):
            raise ProcessingError("an unsubscribe request whose token was not issued to its sender")
        ticket = repo.ticket_by_key(claim.ticket_key)
        if ticket is None:
            raise ProcessingError(f"an unsubscribe request for {claim.ticket_key}, which does not exist")
        ctx.ticket = ticket
        repo.mute(ticket.id, [ctx.mail.from_addr])  # type: ignore[arg-type]
        repo.event(ticket.id, "unsubscribed", actor=ctx.mail.from_addr)  # type: ignore[arg-type]
        ctx.disposition = "unsubscribed"
        ctx.note("apply", f"{ctx.mail.from_addr} gets no more mail about {ticket.key}")


class AgentReplyHandler:
    """An agent's reply to a ticket: commands at the top, then the comment."""

    name = "agent-reply"

    def __init__(self, services: Services) -> None:
        self.services = services

    def can_handle(self, ctx: Context) -> bool:
        return ctx.ticket is not None and ctx.mail.from_addr in self.services.rules.team.agents

    def execute(self, ctx: Context, repo: Repo) -> None:
        s = self.services
        ticket = ctx.ticket
        assert ticket is not None
        author = ctx.mail.from_addr
        workflow = s.rules.workflow(ctx.desk)
        proof = prove(
            ctx.mail,
            keys=token_keys(s.config, now_utc().date()),
            ticket_key=ticket.key,
            ticket_id=ticket.id,
            recipients=ctx.recipients,
            security=s.config.security,
            sent_to=repo.sent_to,
        )
        reply = ctx.mail.reply_text or extract_reply(ctx.mail.body_text)
        commands, comment = split_commands(reply)
        if not proof.proven and ctx.auto_reason:
            # An agent's out-of-office (or a forgery marked automatic): kept, never answered, so
            # a "forged agent" notice can never feed a loop.
            store_message(ctx, repo, s, ticket, kind="internal")
            ctx.disposition = "agent-auto-reply"
            ctx.note(
                "identity",
                f"automatic mail claiming agent {author}, unproven ({proof.how}): stored, nobody told",
            )
            return
        if not proof.proven:
            self._forged(ctx, repo, ticket, proof.how, bool(commands))
            if proof.retired_key:
                ctx.disposition = "token-retired"
            return
        ctx.note("identity", f"agent {author} proven: {proof.how}")
        if ctx.auto_reason:
            # An out-of-office, with or without RFC 3834 headers: an internal note, never a reply
            # to the customer, never a first response, no command run.
            store_message(ctx, repo, s, ticket, kind="internal")
            ctx.disposition = "agent-auto-reply"
            ctx.note("apply", f"an automatic mail from agent {author}: kept as an internal note, nothing run")
            return
        changing = any(c.name not in ("internal", "help") for c in commands)
        public = bool(comment) and not any(c.name == "internal" for c in commands)
        if changing or public:
            access = may_change(s.rules.team, author, ticket.key, ticket.group, ticket.assignee)
            ctx.note("identity", f"access: {access.rule}")
            if not access.allowed:
                self._refused(ctx, repo, ticket, access.rule, reply, comment)
                return
        # Taking part, after the role allowed it: a refused agent does not join the ticket's mail.
        repo.add_participant(ticket.id, author, "agent", s.agent_name(author))  # type: ignore[arg-type]
        the_plan, errors = plan(
            commands,
            ticket=TicketView(
                ticket.key, ticket.status, tuple(ticket.tags or []), tuple(ticket.fields or {})
            ),
            workflow=workflow,
            team=s.rules.team,
            author=author,
            ticket_exists=lambda key: key.startswith(ctx.desk.key + "-") and repo.key_exists(key),
        )
        for c in commands:
            ctx.note("commands", f"line {c.line_no}: {c.line}")
        if errors:
            store_message(ctx, repo, s, ticket, kind="internal", reply_text=reply)
            repo.event(ticket.id, "commands-refused", actor=author, errors=[str(e) for e in errors])  # type: ignore[arg-type]
            tell(
                s,
                repo,
                ctx,
                ticket,
                [author],
                template="command_error",
                kind="command-error",
                context={"errors": [str(e) for e in errors], "help": HELP, "comment": comment},
            )
            ctx.disposition = "commands-refused"
            ctx.note("commands", f"refused, nothing applied: {'; '.join(e.reason for e in errors)}")
            return
        internal = the_plan.internal
        kind = "internal" if internal else "public"
        store_message(ctx, repo, s, ticket, kind=kind, reply_text=comment)
        tell_rejected_attachments(s, repo, ctx, ticket)
        old_assignee = ticket.assignee
        actor_name = s.agent_name(author)
        if comment:
            repo.event(ticket.id, "comment", actor=author, internal=internal)  # type: ignore[arg-type]
        # The first public human reply: record it, and move a ticket still in its initial status
        # where the workflow says (care desk: Pending → Open).
        first_public = bool(comment) and not internal and ticket.first_response_at is None
        changes = apply_plan(repo, ticket, workflow, the_plan, author)
        if first_public:
            ticket.first_response_at = now_utc()
            repo.event(ticket.id, "first-response", actor=author)  # type: ignore[arg-type]
            if the_plan.status is None and workflow.first_response and ticket.status == workflow.initial:
                changes.append(
                    change_status(
                        repo,
                        ticket,
                        workflow,
                        workflow.status(workflow.first_response),
                        author,
                        "first response",
                    )
                )
        repo.session.add(ticket)
        for line in changes:
            ctx.note("apply", f"{author} {line}")
        status = workflow.statuses.get(ticket.status)
        status_changed = any(line.startswith("changed the status") for line in changes)
        agents = s.agents()
        context = {
            "actor": actor_name,
            "actor_address": author,
            "comment": comment,
            "changes": changes,
            "status": status,
            "internal": internal,
            "help": HELP,
        }
        # Requester and watchers: the comment and the status change, unless internal. Who it was
        # assigned to, tags and fields are the desk's business, not the customer's.
        public_changes = [c for c in changes if c.startswith(("changed the status", "merged"))]
        if not internal and (comment or status_changed):
            template = status.template if (status_changed and status) else "agent_comment"
            tell(
                s,
                repo,
                ctx,
                ticket,
                requester_side(repo, ticket, agents),
                template=template,
                kind=template,
                from_name=actor_name,
                context={**context, "changes": public_changes, "survey": bool(status and status.resolved)},
                human=True,
            )
        # A new assignee hears about it ("assignee will receive an email").
        if ticket.assignee and ticket.assignee != old_assignee and ticket.assignee != author:
            tell(
                s, repo, ctx, ticket, [ticket.assignee], template="assigned", kind="assigned", context=context
            )
        # Other agents on the ticket (assignee, else group or triage, and agents who took part)
        # see internal notes. Public replies are not copied to them (the ticket history has them).
        others = agent_side(
            repo,
            ticket,
            s.group_members(ticket),
            s.rules.team.triage,
            exclude={author, ticket.assignee if ticket.assignee != old_assignee else ""},
        )
        if internal and comment:
            tell(
                s,
                repo,
                ctx,
                ticket,
                [a for a in others if a in agents] or [],
                template="internal_note",
                kind="internal-note",
                context=context,
            )
        if the_plan.help:
            tell(
                s, repo, ctx, ticket, [author], template="command_help", kind="command-help", context=context
            )
        ctx.disposition = "agent-reply"

    def _refused(self, ctx: Context, repo: Repo, ticket: Ticket, rule: str, reply: str, comment: str) -> None:
        """A proven agent asked for a change their role does not allow: kept as an internal note,
        nothing applied, and they are told the rule."""
        s = self.services
        author = ctx.mail.from_addr
        store_message(ctx, repo, s, ticket, kind="internal", reply_text=reply)
        repo.event(ticket.id, "commands-refused", actor=author, errors=[rule])  # type: ignore[arg-type]
        tell(
            s,
            repo,
            ctx,
            ticket,
            [author],
            template="command_error",
            kind="command-error",
            context={"errors": [f"not allowed: {rule}"], "help": HELP, "comment": comment},
        )
        ctx.disposition = "commands-refused"
        ctx.note("commands", f"refused by role, nothing applied: {rule}")

    def _forged(self, ctx: Context, repo: Repo, ticket: Ticket, why: str, had_commands: bool) -> None:
        """Claims an agent's address without proof: stored as an ordinary comment, nothing run,
        nothing forwarded, and the real agent is told."""
        s = self.services
        claimed = ctx.mail.from_addr
        store_message(ctx, repo, s, ticket, kind="internal")
        repo.event(ticket.id, "forged-agent", actor="system", claimed=claimed, why=why, commands=had_commands)  # type: ignore[arg-type]
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
        ctx.disposition = "forged-agent"


class ReplyHandler:
    """A requester's or watcher's reply to a ticket we know; a stranger's mail there is held."""

    name = "reply"

    def __init__(self, services: Services) -> None:
        self.services = services

    def can_handle(self, ctx: Context) -> bool:
        return ctx.ticket is not None

    def _hold(self, ctx: Context, repo: Repo, ticket: Ticket, why: str) -> None:
        """Someone not on the ticket wrote there: keep the mail as a held note only agents see,
        tell the agents how to let them in (once an hour per stranger), and send the stranger
        nothing: no acknowledgement, no reply, not even a refusal that confirms the ticket."""
        s = self.services
        m = ctx.mail
        store_message(ctx, repo, s, ticket, kind="held", thread=False)
        since = now_utc() - HELD_NOTICE_EVERY
        told_lately = any(
            e.get("from") == m.from_addr and e.get("told")
            for e in repo.recent_events(ticket.id, "held", since)  # type: ignore[arg-type]
        )
        told: list[str] = []
        if not ctx.auto_reason and not told_lately:
            agents = agent_side(repo, ticket, s.group_members(ticket), s.rules.team.triage, exclude=set())
            told = tell(
                s,
                repo,
                ctx,
                ticket,
                agents,
                template="held_message",
                kind="held-message",
                context={
                    "from": m.from_addr,
                    "from_name": m.from_name,
                    "why": why,
                    "subject_seen": m.subject,
                    "comment": (m.reply_text or extract_reply(m.body_text))[:2000],
                },
            )
        repo.event(ticket.id, "held", actor=m.from_addr, why=why, told=told, **{"from": m.from_addr})  # type: ignore[arg-type]
        ctx.disposition = "held:stranger"
        ctx.note(
            "apply",
            f"held on {ticket.key}: {m.from_addr} is not on it; "
            + (f"agents told ({', '.join(told)})" if told else "agents not told again")
            + f"; `#cc add {m.from_addr}` lets them in",
        )

    def execute(self, ctx: Context, repo: Repo) -> None:
        s = self.services
        ticket = ctx.ticket
        assert ticket is not None
        m = ctx.mail
        keys = token_keys(s.config, now_utc().date())
        who = standing(repo, ticket, m, recipients=ctx.recipients, keys=keys, policy=s.membership)
        ctx.note("membership", who.how)
        if not who.member:
            self._hold(ctx, repo, ticket, who.how)
            return
        if ctx.auto_reason:
            store_message(ctx, repo, s, ticket, kind="system")
            repo.event(ticket.id, "auto-reply", actor=m.from_addr, reason=ctx.auto_reason)  # type: ignore[arg-type]
            ctx.disposition = "reply:auto"
            ctx.note(
                "apply",
                f"an automatic reply, kept on {ticket.key} as a system note; nothing reopened, nobody told",
            )
            return
        workflow = s.rules.workflow(ctx.desk)
        status = workflow.statuses.get(ticket.status)
        store_message(ctx, repo, s, ticket)
        tell_rejected_attachments(s, repo, ctx, ticket)
        if who.joins:
            repo.add_participant(ticket.id, m.from_addr, "watcher", m.from_name)  # type: ignore[arg-type]
            repo.event(ticket.id, "joined", actor=m.from_addr, how=who.how)  # type: ignore[arg-type]
        left_out = cc_not_added(ctx, repo, s, ticket)
        repo.set_ticket(ticket, updated_at=now_utc())
        repo.event(ticket.id, "reply", actor=m.from_addr)  # type: ignore[arg-type]
        text = m.reply_text or extract_reply(m.body_text)
        done = status is not None and status.category == "closed"
        if done:
            rating = RATING_SUBJECT_RE.search(m.subject) or RATING_RE.match(text)
            if rating:
                value = int(rating.group(1))  # type: ignore[union-attr]
                comment = text[rating.end() :].strip() if rating.re is RATING_RE else text.strip()  # type: ignore[union-attr]
                if comment.strip() == str(value):
                    comment = ""
                ticket.rating = value
                ticket.rating_comment = comment[:2000] or None
                repo.session.add(ticket)
                repo.event(ticket.id, "rating", actor=m.from_addr, rating=value, comment=comment[:2000])  # type: ignore[arg-type]
                ctx.disposition = "rating"
                ctx.note("apply", f"rated {value}/5 by {m.from_addr}; not reopened")
                agents = agent_side(repo, ticket, s.group_members(ticket), s.rules.team.triage, exclude=set())
                tell(
                    s,
                    repo,
                    ctx,
                    ticket,
                    agents,
                    template="rating_received",
                    kind="rating",
                    context={"rating": value, "comment": comment, "from": m.from_addr},
                )
                return
            if is_thanks_only(text):
                ctx.disposition = "reply:thanks"
                ctx.note("apply", f"only thanks: recorded on {ticket.key}, not reopened, nobody told")
                return
            if workflow.reopen and workflow.can(ticket.status, workflow.reopen):
                line = change_status(
                    repo, ticket, workflow, workflow.status(workflow.reopen), m.from_addr, "requester replied"
                )
                ctx.note("apply", f"{m.from_addr} replied to a {status.label} ticket: reopened ({line})")  # type: ignore[union-attr]
                agents = agent_side(repo, ticket, s.group_members(ticket), s.rules.team.triage, exclude=set())
                tell(
                    s,
                    repo,
                    ctx,
                    ticket,
                    agents,
                    template="reopened",
                    kind="reopened",
                    context={"from": m.from_addr, "comment": text, "help": HELP},
                )
                ctx.disposition = "reply:reopened"
                return
        elif (
            status is not None
            and status.category == "waiting"
            and not status.deferred
            and workflow.customer_reply
        ):
            if workflow.can(ticket.status, workflow.customer_reply):
                line = change_status(
                    repo,
                    ticket,
                    workflow,
                    workflow.status(workflow.customer_reply),
                    m.from_addr,
                    "requester replied",
                )
                ctx.note("apply", f"{m.from_addr} answered: back to the desk ({line})")
            else:
                ctx.note(
                    "apply",
                    f"workflow {workflow.name} allows no move from {status.label} to "
                    f"{workflow.customer_reply}: status kept",
                )
        repo.session.add(ticket)
        agents = agent_side(repo, ticket, s.group_members(ticket), s.rules.team.triage, exclude={m.from_addr})
        tell(
            s,
            repo,
            ctx,
            ticket,
            agents,
            template="requester_reply",
            kind="requester-reply",
            context={
                "from": m.from_addr,
                "from_name": m.from_name,
                "comment": text,
                "help": HELP,
                "cc_not_added": left_out,
            },
        )
        ctx.disposition = "reply"
        ctx.note("apply", f"added to {ticket.key} as a reply")


_TICKET = Ticket.__table__  # type: ignore[attr-defined]
_FLOOD_COUNT = (
    select(func.count())
    .select_from(_TICKET)
    .where(_TICKET.c.requester == bindparam("r"), _TICKET.c.created_at > bindparam("since"))
)


class NewTicketHandler:
    name = "new-ticket"

    def __init__(self, services: Services) -> None:
        self.services = services

    def can_handle(self, ctx: Context) -> bool:
        return True

    def _check_flood(self, ctx: Context, repo: Repo) -> None:
        since = now_utc() - self.services.flood_window
        n = repo.core(_FLOOD_COUNT, {"r": ctx.mail.from_addr, "since": since}).scalar_one()
        if n < self.services.flood_limit:
            return
        sender = ctx.mail.from_addr
        held = FloodHeld(f"{sender} opened {n} tickets in {self.services.flood_window}: held, not ticketed")
        # Tell the admin once per sender per window: only when no earlier message of this sender
        # was held in the window (rows of this batch are flushed, so they count).
        told = repo.session.execute(
            select(InboxItem.id)
            .where(
                InboxItem.disposition == FloodHeld.disposition,
                InboxItem.reason.startswith(f"{sender} opened ", autoescape=True),
                InboxItem.processed_at > since,
            )
            .limit(1)
        ).first()
        if told is None:
            held.admin_notice = (
                f"mailgate: new tickets from {sender} are held (flood limit)",
                f"{sender} opened {n} tickets in {self.services.flood_window}, the limit set by\n"
                "[limits] new_tickets_per_sender / flood_window_minutes. Further new mail from them\n"
                "is kept in the inbox as held:flood and not ticketed; replies to their existing\n"
                "tickets still thread. This notice is sent once per sender per window.\n\n"
                "See them with `mailgate inbox list`; each keeps its raw message\n"
                "(`mailgate inbox show ID --raw`).\n",
            )
        raise held

    def _last_assigned(self, repo: Repo, group: str) -> str | None:
        row = repo.session.execute(
            select(Ticket.assignee)
            .where(Ticket.group == group, Ticket.assignee.is_not(None))
            .order_by(Ticket.id.desc())
            .limit(1)
        ).first()
        return row[0] if row else None

    def _open_count(self, repo: Repo, address: str) -> int:
        return int(
            repo.session.execute(
                select(func.count())
                .select_from(Ticket)
                .where(Ticket.assignee == address, Ticket.status_category != "closed")
            ).scalar_one()
        )

    def execute(self, ctx: Context, repo: Repo) -> None:
        s = self.services
        m = ctx.mail
        if not m.from_addr:
            raise ProcessingError("no sender address: nobody to make a ticket for")
        self._check_flood(ctx, repo)
        desk = ctx.desk
        workflow = s.rules.workflow(desk)
        decision = routing_mod.evaluate(
            s.rules.routing_for(desk.key),  # the desk's own rules/<KEY>/routing.toml, else the shared
            m,
            desk_address=desk.address,
            now=now_utc(),
            open_counts=lambda a: self._open_count(repo, a),
            last_assigned=lambda g: self._last_assigned(repo, g),
        )
        # Hits and a count of misses: explaining every miss costs milliseconds at hundreds of
        # rules; `mailgate rules test MESSAGE` gives the full explanation on demand.
        for line in decision.trace_hits:
            ctx.note("dispatch", line)
        ctx.note("dispatch", f"assignee {decision.assignee or '-'}: {decision.assignment_reason}")
        initial = workflow.initial
        if decision.status:
            st = workflow.find(decision.status)
            if st is None:
                ctx.note(
                    "dispatch",
                    f"status '{decision.status}' is not in workflow {workflow.name}: using {initial}",
                )
            else:
                initial = st.id
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
            fields=dict(decision.fields),
            created_at=now,
            updated_at=now,
        )
        ctx.ticket = ticket
        repo.new_thread(ticket.id)
        repo.add_participant(ticket.id, m.from_addr, "requester", m.from_name)
        watchers, over_cap = add_first_cc(ctx, repo, s, ticket)
        for w in decision.watchers:
            repo.add_participant(ticket.id, w, "agent" if w in s.rules.team.agents else "watcher")
        store_message(ctx, repo, s, ticket)
        repo.event(
            ticket.id,
            "created",
            actor=m.from_addr,
            source=ctx.item.source,
            watchers=watchers,
            cc_not_added=over_cap,
            status=initial,
        )
        repo.event(
            ticket.id, "routed", routing=decision.to_dict(full_trace=False), rules_version=s.rules.version
        )
        ctx.disposition = "ticket-created"
        ctx.note(
            "apply",
            f"created {ticket.key} ({workflow.status(initial).label})"
            + (f", group {ticket.group}" if ticket.group else "")
            + (f", assigned to {ticket.assignee}" if ticket.assignee else "")
            + (f", watchers {', '.join(watchers)}" if watchers else ""),
        )
        # Agents: the assignee (or the triage person when no rule placed it), and agent watchers.
        agent_ctx = {
            "decision": decision,
            "comment": m.reply_text or m.body_text,
            "help": HELP,
            "from": m.from_addr,
            "from_name": m.from_name,
            "cc_not_added": over_cap,
        }
        if decision.triaged or not ticket.assignee:
            tell(
                s,
                repo,
                ctx,
                ticket,
                [decision.triage or s.rules.team.triage],
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
        agent_watchers = [w for w in decision.watchers if w in s.rules.team.agents and w != ticket.assignee]
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
        # The requester: an acknowledgement (or the rule's automatic answer), never to an automatic mail.
        if ctx.auto_reason:
            ctx.note("notify", f"no acknowledgement: {ctx.auto_reason}")
            return
        template = decision.auto_reply or "acknowledgement"
        tell(
            s,
            repo,
            ctx,
            ticket,
            [m.from_addr],
            template=template,
            kind="acknowledgement",
            context={"message": m, "requester_name": m.from_name},
            auto_submitted="auto-replied",
        )
        tell_rejected_attachments(s, repo, ctx, ticket)


class OneEvent:
    """A handler whose mail, all of it, is one event under `[security] max_recipients_per_event`:
    after it ran, whoever the cap left out is recorded on the ticket and an agent is told."""

    def __init__(self, inner: Handler, services: Services) -> None:
        self.inner = inner
        self.services = services
        self.name = inner.name

    def can_handle(self, ctx: Context) -> bool:
        return self.inner.can_handle(ctx)

    def execute(self, ctx: Context, repo: Repo) -> None:
        self.inner.execute(ctx, repo)
        fanout, ticket = ctx.fanout, ctx.ticket
        if fanout is None or not fanout.over or ticket is None:
            return
        s = self.services
        cap = fanout.cap
        repo.event(ticket.id, "fanout-limited", cap=cap, mailed=fanout.mailed, not_mailed=fanout.over)  # type: ignore[arg-type]
        ctx.note("notify", f"{len(fanout.over)} address(es) past the cap of {cap} not mailed")
        author = ctx.mail.from_addr
        agents = (
            [author]
            if author in s.agents()
            else agent_side(repo, ticket, s.group_members(ticket), s.rules.team.triage, exclude=set())
        )
        tell(
            s,
            repo,
            ctx,
            ticket,
            agents,
            template="fanout_limited",
            kind="fanout-limited",
            context={"cap": cap, "mailed": list(fanout.mailed), "not_mailed": list(fanout.over)},
        )


def registry(services: Services) -> list[Handler]:
    """The order matters and is pinned by a test: bounces first, new tickets last. Each is one
    event for the fan-out cap (OneEvent)."""
    return [
        OneEvent(handler, services)
        for handler in (
            BounceHandler(services),
            UnsubscribeHandler(services),
            AgentReplyHandler(services),
            ReplyHandler(services),
            NewTicketHandler(services),
        )
    ]
