"""Turning a decision to tell someone into an outbox row, inside the caller's transaction.

One mail per recipient: each carries a reply token issued to that recipient for that ticket in
the Reply-To plus-address only, so their reply finds the ticket and proves who wrote it. The
Message-ID is opaque and random, and References name only mail this same recipient got (and mail
we received): nothing issued to one person is copied into another's mail (docs/security.md).
System mail (admin notices, digests) comes from the no-reply system sender. Loop limits are checked here, where every automatic mail passes: per recipient per
ticket and per recipient overall, in sliding windows (Zammad's defaults: 10 per ticket, 30 per
10 minutes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from mailgate.config import Config, Desk
from mailgate.domain.commands import HELP
from mailgate.domain.threading import strip_prefixes, strip_tag
from mailgate.domain.tokens import Purpose, make_token
from mailgate.mail.compose import Outgoing, build, new_message_id
from mailgate.outbox.render import Renderer
from mailgate.store.kinds import EventKind
from mailgate.store.models import Ticket, now_utc
from mailgate.store.repo import Repo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopLimits:
    per_ticket: int = 10
    per_ticket_window: timedelta = timedelta(hours=1)
    overall: int = 30
    overall_window: timedelta = timedelta(minutes=10)


def ticket_subject(ticket: Ticket) -> str:
    """`[SUP-20] subject`: our tag once, in front; any foreign tag kept (DESIGN.md threading)."""
    base = strip_tag(strip_prefixes(ticket.subject), ticket.key) or "(no subject)"
    return f"[{ticket.key}] {base}"


class SurveyLinks(Mapping[int, str]):
    """Rating n (1..5) -> a mailto link that rates the ticket by one reply. Made when a template
    reads one: every mail may use them, few do (the resolved mail)."""

    def __init__(self, reply_address: str, key: str) -> None:
        self._reply = reply_address
        self._key = key

    def __getitem__(self, n: int) -> str:
        if n not in range(1, 6):
            raise KeyError(n)
        return f"mailto:{self._reply}?subject={quote(f'Rating {n} for {self._key}')}&body={n}"

    def __iter__(self) -> Iterator[int]:
        return iter(range(1, 6))

    def __len__(self) -> int:
        return 5


class Notifier:
    def __init__(self, config: Config, renderer: Renderer, limits: LoopLimits | None = None) -> None:
        self.config = config
        self.renderer = renderer
        lim = config.limits
        self.limits = limits or LoopLimits(
            per_ticket=lim.auto_mails_per_ticket,
            per_ticket_window=timedelta(minutes=lim.auto_mails_per_ticket_window_minutes),
            overall=lim.auto_mails_per_recipient,
            overall_window=timedelta(minutes=lim.auto_mails_per_recipient_window_minutes),
        )

    def over_limit(self, repo: Repo, recipient: str, ticket_id: int | None) -> str | None:
        """Why mail to `recipient` must be held now, or None. One query for both windows."""
        now = now_utc()
        lim = self.limits
        overall, per = repo.automatic_mails(
            recipient, ticket_id, now - lim.overall_window, now - lim.per_ticket_window
        )
        if overall >= lim.overall:
            return f"{overall} automatic mails to {recipient} in {lim.overall_window}"
        if ticket_id is not None and per >= lim.per_ticket:
            return f"{per} automatic mails to {recipient} on this ticket in {lim.per_ticket_window}"
        return None

    @property
    def notice_window(self) -> timedelta:
        return max(self.limits.per_ticket_window, self.limits.overall_window)

    def held_recently(self, repo: Repo, recipient: str) -> bool:
        """Whether mail to `recipient` was already held in the notice window (the admin was told)."""
        return repo.mail_held_since(recipient, now_utc() - self.notice_window)

    def send(
        self,
        repo: Repo,
        *,
        desk: Desk,
        ticket: Ticket,
        kind: str,
        template: str,
        to: str,
        context: dict[str, Any],
        in_reply_to: str | None = None,
        auto_submitted: str = "auto-generated",
        subject: str | None = None,
        check_loops: bool = True,
        from_name: str | None = None,
    ) -> str | None:
        """Render and enqueue one mail to `to`; its Message-ID, or None when a loop limit held it
        back (recorded on the ticket, the admin told once)."""
        to = to.lower()
        if check_loops:
            why = self.over_limit(repo, to, ticket.id)
            if why:
                first = not self.held_recently(repo, to)
                repo.event(ticket.id, EventKind.MAIL_HELD, recipient=to, mail=kind, reason=why)  # type: ignore[arg-type]
                log.warning("held %s to %s on %s: %s", kind, to, ticket.key, why)
                if first:
                    self.send_admin(
                        repo,
                        f"mailgate: automatic mail to {to} held (loop limit)",
                        f"mailgate held a {kind} mail to {to} about {ticket.key}: {why}.\n\n"
                        "This is how a loop with an auto-responder looks. Mail to this address is held\n"
                        "while the limit holds ([limits] auto_mails_per_ticket, auto_mails_per_recipient);\n"
                        "the ticket records each held mail. This notice is sent once per address per\n"
                        f"{self.notice_window}.\n",
                    )
                return None
        token = make_token(self.config.secret, ticket.key, to)
        message_id = new_message_id(desk.domain)
        reply_address = desk.token_address(token)
        off = make_token(self.config.secret, ticket.key, to, Purpose.UNSUBSCRIBE)
        unsubscribe = desk.token_address(f"{off}-off")
        ctx = {
            "ticket": ticket,
            "desk": desk,
            "recipient": to,
            "subject": ticket_subject(ticket),
            "reply_address": reply_address,
            "help": HELP,
            "unsubscribe_address": unsubscribe,
            "survey_links": SurveyLinks(reply_address, ticket.key),
            **context,
        }
        text, html = self.renderer.render(desk.key, template, ctx)
        references = repo.thread_ids(ticket.id, to)  # type: ignore[arg-type]
        if in_reply_to and in_reply_to not in references:
            references.append(in_reply_to)
        out = Outgoing(
            from_addr=desk.address,
            from_name=f"{from_name} via {desk.name}" if from_name else desk.name,
            to=[to],
            subject=subject or ticket_subject(ticket),
            text=text,
            html=html,
            message_id=message_id,
            reply_to=desk.token_address(token),
            in_reply_to=in_reply_to or (references[-1] if references else None),
            references=references,
            auto_submitted=auto_submitted,
            loop_id=desk.address,
            # RFC 2369 List-Unsubscribe: "turn off this request's notifications" by one mail.
            extra_headers={"List-Unsubscribe": f"<mailto:{unsubscribe}?subject=unsubscribe>"},
        )
        repo.enqueue(
            ticket_id=ticket.id,
            desk=desk.key,
            kind=kind,
            message_id=message_id,
            mail_from=desk.address,
            recipients=[to],
            raw=build(out),
        )
        repo.add_thread_ref(desk.key, message_id, ticket.id, sent_to=to)  # type: ignore[arg-type]
        if check_loops:
            repo.log_send(to, ticket.id)
        return message_id

    def send_plain(
        self,
        repo: Repo,
        desk: Desk,
        *,
        to: str,
        subject: str,
        text: str,
        kind: str,
        html: str | None = None,
        from_name: str | None = None,
    ) -> str:
        """System mail, about no single ticket (admin notices, digests): from the no-reply system
        sender, `Auto-Submitted: auto-generated`, no reply token, no thread. An auto-responder
        answering it writes to the system sender, whose mail is never ticketed (pipeline/stages.py),
        so an admin's out-of-office cannot open tickets or loop."""
        message_id = new_message_id(desk.domain)
        sender = self.config.system_sender
        raw = build(
            Outgoing(
                from_addr=sender,
                from_name=from_name or desk.name,
                to=[to],
                subject=subject,
                text=text,
                html=html,
                message_id=message_id,
                auto_submitted="auto-generated",
                loop_id=desk.address,
            )
        )
        repo.enqueue(
            desk=desk.key, kind=kind, message_id=message_id, mail_from=sender, recipients=[to], raw=raw
        )
        return message_id

    def send_admin(self, repo: Repo, subject: str, text: str) -> str:
        """A plain mail to the configured admin address (refused rules edits, held loops)."""
        desk = self.config.desks[0]
        return self.send_plain(
            repo,
            desk,
            to=self.config.admin_address,
            subject=subject,
            text=text,
            kind="admin",
            from_name=f"mailgate at {desk.name}",
        )
