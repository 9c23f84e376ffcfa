"""A requester's or watcher's reply to a ticket we know (DESIGN.md "Who is on a ticket", "Workflow").

Guards first: a sender not on the ticket is held for the agents (a stranger is never answered),
an automatic reply is kept as a system note. Then the reply is stored and, on a closed ticket,
read as a rating, a thanks (recorded, not reopened) or a reopen; on a ticket waiting for the
customer it moves back to the desk. The agents hear of it. It must not reopen a ticket for a
thanks, nor tell a stranger anything that confirms the ticket exists.
"""

from __future__ import annotations

import re
from datetime import timedelta

from mailgate.domain.commands import HELP
from mailgate.domain.workflow import Status, Workflow
from mailgate.mail.reply import extract_reply
from mailgate.mail.thanks import is_thanks_only
from mailgate.pipeline.apply import change_status, row
from mailgate.pipeline.context import Context
from mailgate.pipeline.handlers import closed
from mailgate.pipeline.handlers.common import (
    Services,
    Travelling,
    cc_not_added,
    store_message,
    tell,
    tell_rejected_attachments,
    travelling,
)
from mailgate.pipeline.identity import token_keys
from mailgate.pipeline.membership import Standing, standing
from mailgate.pipeline.outcomes import Disposition
from mailgate.store.kinds import EventKind, MessageKind, Role
from mailgate.store.models import Ticket, now_utc
from mailgate.store.repo import Repo

RATING_RE = re.compile(
    r"^\s*(?:rating\s*[:=]?\s*)?([1-5])(?:\s*(?:/\s*5|stars?|of 5))?\s*(?:[-–:,.!]\s*|\n|$)", re.I
)
RATING_SUBJECT_RE = re.compile(r"\brating\s*[:=]?\s*([1-5])\b", re.I)
# The words the resolution mail prints beside each number (templates/resolved.txt): a requester
# who answers with the word ("Excellent", "5 Excellent", "Good!") alone on the first line rates
# as with the number. Only alone on its line: "Good morning, it broke again" is no rating.
SURVEY_WORDS = {"excellent": 5, "good": 4, "ok": 3, "okay": 3, "poor": 2, "bad": 1}
RATING_WORD_RE = re.compile(
    r"^\s*(?:([1-5])\s*[-–:.)]?\s*)?(" + "|".join(SURVEY_WORDS) + r")\s*[.!]*[ \t]*(?:\n|$)", re.I
)
# Agents hear of a held stranger's mail on a ticket at most once per stranger per ticket in this
# time: each held mail is kept and listed on the ticket, but a stranger cannot flood the agents.
HELD_NOTICE_EVERY = timedelta(hours=1)


class ReplyHandler:
    """A requester's or watcher's reply to a ticket we know; a stranger's mail there is held."""

    name = "reply"

    def __init__(self, services: Services) -> None:
        self.services = services

    def can_handle(self, ctx: Context) -> bool:
        return ctx.ticket is not None

    def execute(self, ctx: Context, repo: Repo) -> None:
        ticket = ctx.ticket
        assert ticket is not None
        who = self._standing(ctx, repo, ticket)
        if not who.member:
            self._hold(ctx, repo, ticket, who.how)
            return
        if ctx.auto_reason:
            self._automatic(ctx, repo, ticket)
            return
        workflow = self.services.rules.workflow(ctx.desk)
        status = workflow.statuses.get(ticket.status)
        left_out = self._record(ctx, repo, ticket, who)
        text = ctx.mail.reply_text or extract_reply(ctx.mail.body_text)
        if status is not None and status.category == "closed":
            if self._on_closed(ctx, repo, ticket, workflow, status, text):
                return
        elif status is not None and status.category == "waiting" and not status.deferred:
            self._back_to_desk(ctx, repo, ticket, workflow, status)
        repo.session.add(ticket)
        self._tell_desk(ctx, repo, ticket, text, left_out)

    # -- the guards ----------------------------------------------------------------------------
    def _standing(self, ctx: Context, repo: Repo, ticket: Ticket) -> Standing:
        s = self.services
        keys = token_keys(s.config, now_utc().date())
        who = standing(repo, ticket, ctx.mail, recipients=ctx.recipients, keys=keys, policy=s.membership)
        ctx.note("membership", who.how)
        return who

    def _hold(self, ctx: Context, repo: Repo, ticket: Ticket, why: str) -> None:
        """Someone not on the ticket wrote there: keep the mail as a held note only agents see,
        tell the agents how to let them in (once an hour per stranger), and send the stranger
        nothing: no acknowledgement, no reply, not even a refusal that confirms the ticket."""
        s = self.services
        m = ctx.mail
        store_message(ctx, repo, s, ticket, kind=MessageKind.HELD, thread=False)
        since = now_utc() - HELD_NOTICE_EVERY
        told_lately = any(
            e.get("from") == m.from_addr and e.get("told")
            for e in repo.recent_events(row(ticket), EventKind.HELD, since)
        )
        told: list[str] = []
        if not ctx.auto_reason and not told_lately:
            told = tell(
                s,
                repo,
                ctx,
                ticket,
                s.agents_of(repo, ticket),
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
        repo.event(
            row(ticket), EventKind.HELD, actor=m.from_addr, why=why, told=told, **{"from": m.from_addr}
        )
        ctx.disposition = Disposition.HELD_STRANGER
        ctx.note(
            "apply",
            f"held on {ticket.key}: {m.from_addr} is not on it; "
            + (f"agents told ({', '.join(told)})" if told else "agents not told again")
            + f"; `#cc add {m.from_addr}` lets them in",
        )

    def _automatic(self, ctx: Context, repo: Repo, ticket: Ticket) -> None:
        """An automatic reply (out-of-office, RFC 3834): a system note; nothing reopened, nobody told."""
        store_message(ctx, repo, self.services, ticket, kind=MessageKind.SYSTEM)
        repo.event(row(ticket), EventKind.AUTO_REPLY, actor=ctx.mail.from_addr, reason=ctx.auto_reason)
        ctx.disposition = Disposition.REPLY_AUTO
        ctx.note(
            "apply",
            f"an automatic reply, kept on {ticket.key} as a system note; nothing reopened, nobody told",
        )

    # -- the reply -----------------------------------------------------------------------------
    def _record(self, ctx: Context, repo: Repo, ticket: Ticket, who: Standing) -> list[str]:
        """Store the reply; who proved they belong joins as a watcher. Returns the To/Cc left
        out (copied, not on the ticket)."""
        s = self.services
        m = ctx.mail
        store_message(ctx, repo, s, ticket)
        tell_rejected_attachments(s, repo, ctx, ticket)
        if who.joins:
            repo.add_participant(row(ticket), m.from_addr, Role.WATCHER, m.from_name)
            repo.event(row(ticket), EventKind.JOINED, actor=m.from_addr, how=who.how)
        left_out = cc_not_added(ctx, repo, s, ticket)
        repo.set_ticket(ticket, updated_at=now_utc())
        repo.event(row(ticket), EventKind.REPLY, actor=m.from_addr)
        return left_out

    def _on_closed(
        self, ctx: Context, repo: Repo, ticket: Ticket, workflow: Workflow, status: Status, text: str
    ) -> bool:
        """A reply to a closed ticket is a rating, a thanks, or reopens it. False when it is none
        of these (the workflow cannot reopen it): then it is an ordinary reply."""
        rating = self._rating(ctx.mail.subject, text)
        if rating is not None:
            self._rate(ctx, repo, ticket, *rating)
            return True
        if is_thanks_only(text):
            ctx.disposition = Disposition.REPLY_THANKS
            ctx.note("apply", f"only thanks: recorded on {ticket.key}, not reopened, nobody told")
            return True
        if not closed.can_reopen(workflow, ticket):
            return False
        self._reopen(ctx, repo, ticket, workflow, status, text)
        return True

    @staticmethod
    def _rating(subject: str, text: str) -> tuple[int, str] | None:
        """The rating a reply gives, with its comment: "Rating: 4" in the subject, the number
        alone on the first line ("5", "4/5 - quick"), or the survey's word for it ("Excellent")."""
        if by_subject := RATING_SUBJECT_RE.search(subject):
            return int(by_subject.group(1)), text.strip()
        if by_number := RATING_RE.match(text):
            return int(by_number.group(1)), text[by_number.end() :].strip()
        if by_word := RATING_WORD_RE.match(text):
            value = int(by_word.group(1) or SURVEY_WORDS[by_word.group(2).lower()])
            return value, text[by_word.end() :].strip()
        return None

    def _rate(self, ctx: Context, repo: Repo, ticket: Ticket, value: int, comment: str) -> None:
        m = ctx.mail
        if comment.strip() == str(value):
            comment = ""
        notice = closed.rate(repo, ticket, m.from_addr, value, comment)
        ctx.disposition = Disposition.RATING
        ctx.note("apply", f"rated {value}/5 by {m.from_addr}; not reopened")
        self._tell_agents(ctx, repo, ticket, notice)

    def _tell_agents(
        self,
        ctx: Context,
        repo: Repo,
        ticket: Ticket,
        notice: closed.AgentNotice,
        attachments: Travelling | None = None,
    ) -> None:
        s = self.services
        tell(
            s,
            repo,
            ctx,
            ticket,
            s.agents_of(repo, ticket),
            template=notice.template,
            kind=notice.kind,
            context=notice.context,
            attachments=attachments,
        )

    def _reopen(
        self, ctx: Context, repo: Repo, ticket: Ticket, workflow: Workflow, status: Status, text: str
    ) -> None:
        m = ctx.mail
        change, notice = closed.reopen(repo, ticket, workflow, m.from_addr, "requester replied", text)
        ctx.note("apply", f"{m.from_addr} replied to a {status.label} ticket: reopened ({change})")
        self._tell_agents(
            ctx, repo, ticket, notice, attachments=travelling(self.services, ticket, ctx.stored, ctx.contents)
        )
        ctx.disposition = Disposition.REPLY_REOPENED

    def _back_to_desk(
        self, ctx: Context, repo: Repo, ticket: Ticket, workflow: Workflow, status: Status
    ) -> None:
        """The customer answered a ticket waiting for them: it goes back to the agents' queue."""
        target = workflow.customer_reply
        if not target:
            return
        m = ctx.mail
        if not workflow.can(ticket.status, target):
            ctx.note(
                "apply",
                f"workflow {workflow.name} allows no move from {status.label} to {target}: status kept",
            )
            return
        change = change_status(
            repo, ticket, workflow, workflow.status(target), m.from_addr, "requester replied"
        )
        ctx.note("apply", f"{m.from_addr} answered: back to the desk ({change})")

    def _tell_desk(self, ctx: Context, repo: Repo, ticket: Ticket, text: str, left_out: list[str]) -> None:
        m = ctx.mail
        tell(
            self.services,
            repo,
            ctx,
            ticket,
            self.services.agents_of(repo, ticket, exclude={m.from_addr}),
            template="requester_reply",
            kind="requester-reply",
            context={
                "from": m.from_addr,
                "from_name": m.from_name,
                "comment": text,
                "help": HELP,
                "cc_not_added": left_out,
            },
            attachments=travelling(self.services, ticket, ctx.stored, ctx.contents),
        )
        ctx.disposition = Disposition.REPLY
        ctx.note("apply", f"added to {ticket.key} as a reply")
