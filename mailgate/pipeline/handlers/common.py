"""What every handler shares: the `Handler` contract, the `Services` they are built with, and the
steps several of them take (store the message, tell people, record who was copied), plus
`OneEvent`, which makes a handler's mail one event under the fan-out cap.

Handlers decide and write through the Repo; they never send mail or touch the network (the
outbox does). Nothing here picks a handler: the registry (handlers/__init__.py) does.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Protocol

from mailgate.config import Config
from mailgate.mail.attachments import apply_limits, human_size, safe_filename
from mailgate.mail.compose import OutAttachment
from mailgate.pipeline.apply import agent_side, row
from mailgate.pipeline.context import Context
from mailgate.pipeline.membership import FanOut, copied_people
from mailgate.pipeline.notify import Notifier
from mailgate.ruleset import RulesSource, Snapshot
from mailgate.store.blobs import BlobStore
from mailgate.store.kinds import EventKind, MessageKind, Role
from mailgate.store.models import Ticket, now_utc
from mailgate.store.repo import Repo

# Mail that answers mail claiming to come from an agent: the one agent-bound kind that can loop.
LOOP_PRONE = frozenset({"forged-agent", "command-error", "command-help"})


class Handler(Protocol):
    """Contract: `can_handle` only reads the context; `execute` writes through `repo` and sets
    `ctx.disposition`; neither sends mail nor touches the network (the outbox does)."""

    name: str

    def can_handle(self, ctx: Context) -> bool: ...

    def execute(self, ctx: Context, repo: Repo) -> None: ...


class Services:
    """What handlers need, constructed once by the runner and passed in."""

    def __init__(
        self, config: Config, notifier: Notifier, rules: RulesSource, blobs: BlobStore | None = None
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

    def agents_of(self, repo: Repo, ticket: Ticket, exclude: set[str] | None = None) -> list[str]:
        """The agents to tell about this ticket (pipeline/apply.agent_side), less `exclude`."""
        return agent_side(
            repo, ticket, self.group_members(ticket), self.rules.triage_for(ticket.desk), exclude or set()
        )


def store_attachments(ctx: Context, services: Services) -> None:
    """Put the attachments the limits keep into the blob store, before the batch's transaction
    (each put waits for its fsync; SQLite's write lock, which the intake needs for every 250,
    stays free meanwhile). The parsed mail then names each by its digest and keeps its bytes in
    `ctx.contents`, for the mail that forwards them; `store_message` records them."""
    if services.blobs is None or not ctx.mail.attachments:
        return
    limits = services.config.limits
    kept, _ = apply_limits(ctx.mail.attachments, limits.max_attachment_size, limits.max_attachments)
    digests: dict[int, str] = {}
    for att in kept:
        if att.sha256 is None and att.content:
            digest = services.blobs.put(att.content)
            digests[id(att)] = digest
            ctx.contents[digest] = att.content
    ctx.mail.attachments = [
        replace(att, sha256=digests[id(att)]) if id(att) in digests else att for att in ctx.mail.attachments
    ]


def store_message(
    ctx: Context,
    repo: Repo,
    services: Services,
    ticket: Ticket,
    kind: MessageKind = MessageKind.PUBLIC,
    reply_text: str | None = None,
    thread: bool = True,
    text: str | None = None,
) -> None:
    """Store the message and its attachments (once per content hash). Attachments over the size
    or count limits are recorded by name and size, not stored, and listed in `ctx.rejected`.
    `thread=False` (a held stranger's mail) keeps its Message-ID out of the conversation: our
    later mail does not reference it, and replies to it are not taken as replies to the ticket.
    `text` replaces the whole body as stored (an agent's reply: the quoted notification below
    it is ours, not theirs; the raw mail keeps it)."""
    m = ctx.mail
    limits = services.config.limits
    kept, rejected = apply_limits(m.attachments, limits.max_attachment_size, limits.max_attachments)
    attachments: list[dict[str, Any]] = []
    for att in kept:
        entry: dict[str, Any] = {"filename": att.filename, "content_type": att.content_type, "size": att.size}
        if att.sha256 is not None:  # stored already, durably, before the transaction
            entry["sha256"] = att.sha256
        elif services.blobs is not None:
            entry["sha256"] = services.blobs.put(att.content)
            ctx.contents[entry["sha256"]] = att.content
        attachments.append(entry)
    ctx.stored = [dict(a) for a in attachments]
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
        text=m.body_text if text is None else text,
        reply_text=m.reply_text if reply_text is None else reply_text,
        attachments=attachments,
    )
    if thread:
        repo.add_thread_ref(ctx.desk.key, m.message_id, row(ticket))


@dataclass(frozen=True)
class Travelling:
    """The attachments of one message as they go on in our mail: the files carried, and the
    list a template shows (each name, size, and whether it is attached or how to fetch it)."""

    files: tuple[OutAttachment, ...] = ()
    listed: list[dict[str, Any]] = field(default_factory=list)


def travelling(
    services: Services, ticket: Ticket, stored: list[dict[str, Any]], have: dict[str, bytes] | None = None
) -> Travelling:
    """The message's stored attachments, carried in message order while they fit in
    `[limits] max_forward_attachments_bytes` together; the rest named, with the command that
    fetches them (a relay refuses mail past its size limit, and ten people need not get 30 MB).
    `have`: bytes already in hand by digest (the message's own, `ctx.contents`), not read back."""
    budget = services.config.limits.max_forward_attachments_bytes
    files: list[OutAttachment] = []
    listed: list[dict[str, Any]] = []
    used = 0
    for entry in stored:
        name = safe_filename(str(entry.get("filename") or ""))
        size = int(entry.get("size") or 0)
        content = None
        if used + size <= budget and have and entry.get("sha256") in have:
            content = have[str(entry["sha256"])]
        elif used + size <= budget and services.blobs is not None and entry.get("sha256"):
            try:
                content = services.blobs.get(str(entry["sha256"]))
            except (OSError, ValueError):
                content = None  # gone from the store: named like one over the budget
        if content is not None:
            used += size
            files.append(OutAttachment(name, str(entry.get("content_type") or ""), content))
        listed.append(
            {
                "name": name,
                "size": human_size(size),
                "attached": content is not None,
                "fetch": f"mailgate tickets attachment {ticket.key} {shlex.quote(name)}",
            }
        )
    return Travelling(tuple(files), listed)


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
    added = [a for a in admitted if repo.add_participant(row(ticket), a, Role.WATCHER)]
    if over:
        ctx.note("apply", f"{len(over)} To/Cc address(es) past [security] max_initial_cc not made watchers")
    return added, over


def cc_not_added(ctx: Context, repo: Repo, services: Services, ticket: Ticket) -> list[str]:
    """To/Cc of a later reply who are not on the ticket: being copied proves nothing (anyone can
    put anyone on Cc), so they are recorded for the agents, who may `#cc add` them."""
    people = {p.address for p in repo.participants(row(ticket))}
    agents = services.agents()
    copied = copied_people(ctx.mail, services.config.own_addresses)
    left = [a for a in copied if a not in people and a not in agents]
    if left:
        repo.event(row(ticket), EventKind.CC_NOT_ADDED, actor=ctx.mail.from_addr, addresses=left)
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
    attachments: Travelling | None = None,
) -> list[str]:
    """Queue one mail per recipient; returns who was queued (loop limits may hold some back).

    Loop limits apply to automatic mail to requesters and watchers, and to what answers mail
    claiming to be an agent's (a forged-agent notice, a command error): that is where an
    auto-responder can loop. A person's words (`human`: a proven agent's reply or change) are
    never held by them: a loop needs a machine on both ends. Other mail to our own agents (new
    tickets, replies to work on) is never held: a triage person must hear about the hundredth
    ticket of the hour too. Every mail of the event to someone outside the team counts against
    `[security] max_recipients_per_event` (ctx.fanout); who is past it gets nothing.
    `attachments` travel with each mail, and its template lists them.
    """
    sent = []
    if attachments is not None:
        context = {**context, "attachments": attachments.listed}
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
            files=attachments.files if attachments is not None else (),
        )
        if item is not None:
            sent.append(rcpt)
            if human and rcpt not in agents:
                warn_bounced(services, repo, ctx, ticket, rcpt)
    if sent:
        ctx.note("notify", f"{template} queued to {', '.join(sent)}")
    return sent


def warn_bounced(services: Services, repo: Repo, ctx: Context, ticket: Ticket, rcpt: str) -> None:
    """A person's reply went to an address that bounced: it is sent (the address may work
    again), and the agent who wrote it is told it will probably not arrive, and why."""
    bounced = repo.bounced(rcpt, now_utc())
    author = ctx.mail.from_addr
    if bounced is None or author not in services.agents():
        return
    ctx.note("notify", f"{rcpt} bounced ({bounced.status}): sent anyway, {author} warned")
    services.notifier.send(
        repo,
        desk=ctx.desk,
        ticket=ticket,
        kind="reply-to-bounced",
        template="reply_to_bounced",
        to=author,
        context={
            "address": rcpt,
            "dsn_status": bounced.status,
            "diagnostic": bounced.diagnostic,
            "bounced_at": f"{bounced.bounced_at:%Y-%m-%d %H:%M} UTC",
        },
        in_reply_to=ctx.mail.message_id,
        check_loops=False,
    )


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
        repo.event(
            row(ticket), EventKind.FANOUT_LIMITED, cap=cap, mailed=fanout.mailed, not_mailed=fanout.over
        )
        ctx.note("notify", f"{len(fanout.over)} address(es) past the cap of {cap} not mailed")
        author = ctx.mail.from_addr
        agents = [author] if author in s.agents() else s.agents_of(repo, ticket)
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
