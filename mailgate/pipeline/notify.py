"""Turning a decision to tell someone into an outbox row, inside the caller's transaction.

One mail per recipient: each carries a reply token issued to that recipient for that ticket in
the Reply-To plus-address only, so their reply finds the ticket and proves who wrote it, and goes
out from an envelope sender carrying a bounce token bound to that recipient (VERP), so a delivery
report proves which address failed; From: and Reply-To are as they were. The Message-ID is opaque
and random, and References name only mail this same recipient got (and mail we received):
nothing issued to one person is copied into another's mail (docs/security.md); what someone
wrote and a template quotes (a request that forwards our earlier mail, with its links and reply
address) reaches anyone else with those proofs blanked (`Notifier.only_theirs`). System mail
(admin notices, digests) comes from the no-reply system sender, envelope sender included (a
bounce of it concerns no ticket). Loop limits are checked here, where every automatic mail
passes: per recipient per ticket and per recipient overall, in sliding windows (Zammad's
defaults: 10 per ticket, 30 per 10 minutes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from mailgate.config import Config, Desk
from mailgate.domain.commands import HELP
from mailgate.domain.team import desk_admins
from mailgate.domain.threading import strip_prefixes, strip_tag
from mailgate.domain.tokens import UNSUBSCRIBE_SUFFIX, Purpose, bounce_word, make_token, without_proofs
from mailgate.mail.compose import OutAttachment, Outgoing, build, new_message_id
from mailgate.mail.screen import is_own_address
from mailgate.outbox.render import Renderer
from mailgate.pipeline.identity import token_keys
from mailgate.pipeline.links import NO_LINKS, mail_links
from mailgate.ruleset import RulesSource
from mailgate.store.kinds import AdminKind, EventKind
from mailgate.store.models import Ticket, now_utc, utc
from mailgate.store.repo import Bounced, Repo

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
    def __init__(
        self,
        config: Config,
        renderer: Renderer,
        limits: LoopLimits | None = None,
        rules: RulesSource | None = None,
    ) -> None:
        self.config = config
        self.renderer = renderer
        self.rules = rules  # for team.toml `admins`
        lim = config.limits
        self.limits = limits or LoopLimits(
            per_ticket=lim.auto_mails_per_ticket,
            per_ticket_window=timedelta(minutes=lim.auto_mails_per_ticket_window_minutes),
            overall=lim.auto_mails_per_recipient,
            overall_window=timedelta(minutes=lim.auto_mails_per_recipient_window_minutes),
        )

    def loop_checks(
        self, repo: Repo, recipient: str, ticket_id: int | None
    ) -> tuple[Bounced | None, str | None]:
        """The bounce that keeps automatic mail from `recipient` now, and why a loop limit holds
        it now (None each when neither does). One query for the bounce and both windows on
        PostgreSQL (Repo.mail_checks)."""
        now = now_utc()
        lim = self.limits
        bounced, (overall, per) = repo.mail_checks(
            recipient, ticket_id, now, now - lim.overall_window, now - lim.per_ticket_window
        )
        return bounced, self._over_limit(recipient, ticket_id, overall, per)

    def _over_limit(self, recipient: str, ticket_id: int | None, overall: int, per: int) -> str | None:
        lim = self.limits
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

    def only_theirs(self, to: str) -> Callable[[str], str]:
        """What makes a text fit for a mail to `to`: every proof of ours in it (signed link, token
        address) that was issued to anyone else is blanked (tokens.without_proofs). Templates put
        in what people wrote — a request, a reply, a subject, a name — and a person who forwards
        our mail to the desk hands us their own links and reply address inside it: mailed to the
        agent and the watchers as written, those let them act as that person. Applied to the
        whole rendered mail, so no template can forget it; `to`'s own links and reply address,
        which the templates put in for them, stay."""
        keys, now, own = (
            token_keys(self.config, now_utc().date()),
            int(time.time()),
            self.config.own_addresses,
        )
        return lambda text: without_proofs(text, keys, own, now, keep_for=to)

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
        files: Sequence[OutAttachment] = (),
    ) -> str | None:
        """Render and enqueue one mail to `to`; its Message-ID, or None when a loop limit held it
        back (recorded on the ticket, the admin told once). `files` travel with it as attachments;
        templates list them from `attachments` (what the caller gives, else nothing)."""
        to = to.lower()
        if is_own_address(to, self.config.own_addresses):
            # Never to ourselves, in any plus form: a desk's address may be a group that relays
            # to it (Google Groups, a mailing list), and mail to it reaches every member. The
            # requester is never one (the screen cuts such mail); `#cc add`, `#requester` can be.
            repo.event(
                ticket.id,  # type: ignore[arg-type]
                EventKind.MAIL_HELD,
                recipient=to,
                mail=kind,
                reason="one of the desk's own addresses",
            )
            log.warning("not sent %s to %s on %s: one of our own addresses", kind, to, ticket.key)
            return None
        bounced, why = self.loop_checks(repo, to, ticket.id) if check_loops else (None, None)
        if bounced is not None:
            # A dead address gets no automatic mail desk-wide for [limits] bounce_quiet_days:
            # acknowledging every new request from it is backscatter. A person's reply still goes.
            repo.event(
                ticket.id,  # type: ignore[arg-type]
                EventKind.MAIL_QUIET,
                recipient=to,
                mail=kind,
                status=bounced.status,
                until=bounced.quiet_until.isoformat(),
            )
            log.info("not sent %s to %s on %s: it bounced (%s)", kind, to, ticket.key, bounced.status)
            return None
        if why:
            first = not self.held_recently(repo, to)
            repo.event(ticket.id, EventKind.MAIL_HELD, recipient=to, mail=kind, reason=why)  # type: ignore[arg-type]
            log.warning("held %s to %s on %s: %s", kind, to, ticket.key, why)
            if first:
                self.send_admin(
                    repo,
                    AdminKind.LOOP,
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
        unsubscribe = desk.token_address(f"{off}{UNSUBSCRIBE_SUFFIX}")
        links = mail_links(self.config, ticket.key, to)  # None when the web side is off
        ctx = {
            "ticket": ticket,
            "desk": desk,
            "recipient": to,
            "subject": ticket_subject(ticket),
            "reply_address": reply_address,
            "help": HELP,
            "unsubscribe_address": unsubscribe,
            "survey_links": SurveyLinks(reply_address, ticket.key),
            **(links.as_context() if links else NO_LINKS),
            "attachments": [],
            **context,
        }
        text, html = self.renderer.render(desk.key, template, ctx)
        mine = self.only_theirs(to)
        text, html = mine(text), (mine(html) if html is not None else None)
        references = repo.thread_ids(ticket.id, to)  # type: ignore[arg-type]
        if in_reply_to and in_reply_to not in references:
            references.append(in_reply_to)
        out = Outgoing(
            from_addr=desk.address,
            from_name=mine(f"{from_name} via {desk.name}" if from_name else desk.name),
            to=[to],
            subject=mine(subject or ticket_subject(ticket)),
            text=text,
            html=html,
            message_id=message_id,
            reply_to=desk.token_address(token),
            in_reply_to=in_reply_to or (references[-1] if references else None),
            references=references,
            auto_submitted=auto_submitted,
            loop_id=desk.address,
            # RFC 2369 List-Unsubscribe: "turn off this request's notifications" by one mail, and
            # with the web side on, RFC 8058 one-click: the mail client POSTs to the https URL.
            extra_headers=(
                {
                    "List-Unsubscribe": f"<{links.unsubscribe_url}>, <mailto:{unsubscribe}?subject=unsubscribe>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                }
                if links
                else {"List-Unsubscribe": f"<mailto:{unsubscribe}?subject=unsubscribe>"}
            ),
            attachments=files,
        )
        repo.enqueue(
            ticket_id=ticket.id,
            desk=desk.key,
            kind=kind,
            message_id=message_id,
            # VERP: a delivery report for this mail comes back to a token bound to `to`, which
            # alone proves that `to` bounced (pipeline/handlers/bounce.py, docs/security.md).
            mail_from=desk.envelope_sender(bounce_word(self.config.secret, ticket.key, to)),
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
        mine = self.only_theirs(to)  # a notice may quote a subject or words someone wrote
        raw = build(
            Outgoing(
                from_addr=sender,
                from_name=mine(from_name or desk.name),
                to=[to],
                subject=mine(subject),
                text=mine(text),
                html=mine(html) if html is not None else None,
                message_id=message_id,
                auto_submitted="auto-generated",
                loop_id=desk.address,
            )
        )
        repo.enqueue(
            desk=desk.key, kind=kind, message_id=message_id, mail_from=sender, recipients=[to], raw=raw
        )
        return message_id

    def admins(self) -> list[str]:
        """Who hears what needs an admin: team.toml `admins` and config's `admin_address`."""
        team = self.rules.current.team if self.rules is not None else None
        return desk_admins(team, self.config.admin_address) if team else [self.config.admin_address]

    def send_admin(self, repo: Repo, kind: AdminKind | str, subject: str, text: str) -> None:
        """Tell the admins (quarantine, refused rules edits, held floods and loops). At most one
        mail per kind per `[limits] admin_notice_minutes`: a notice of a kind that was quiet goes
        at once; later ones are kept and go together as one digest when the time has passed
        (`flush_admin`, run by the scheduler), so a storm of failures is one mail, not hundreds."""
        now = now_utc()
        repo.add_admin_notice(str(kind), subject, text, now)
        self.flush_admin(repo, now, kinds=[str(kind)])

    def flush_admin(self, repo: Repo, now: datetime, kinds: list[str] | None = None) -> int:
        """Mail the admins every kind of notice that waits and whose quiet time has passed;
        returns the number of mails queued."""
        window = timedelta(minutes=self.config.limits.admin_notice_minutes)
        desk = self.config.desks[0]
        queued = 0
        for kind in kinds if kinds is not None else repo.admin_kinds_waiting():
            last = repo.admin_last_sent(kind)
            if last is not None and now - last < window:
                continue
            waiting = repo.admin_waiting(kind)
            if not waiting:
                continue
            if len(waiting) == 1:
                subject, text = waiting[0].subject, waiting[0].text
            else:
                subject = (
                    f"mailgate: {len(waiting)} notices ({kind}) since {utc(waiting[0].created_at):%H:%M} UTC"
                )
                text = (
                    f"{len(waiting)} notices of one kind ({kind}) came within [limits] admin_notice_minutes;\n"
                    "they are collected here, oldest first.\n\n"
                    + "\n\n".join(
                        f"== {n.subject} ({utc(n.created_at):%Y-%m-%d %H:%M} UTC)\n\n{n.text}"
                        for n in waiting
                    )
                )
            for admin in self.admins():
                self.send_plain(
                    repo,
                    desk,
                    to=admin,
                    subject=subject,
                    text=text,
                    kind="admin",
                    from_name=f"mailgate at {desk.name}",
                )
                queued += 1
            for n in waiting:
                n.sent_at = now
                repo.session.add(n)
        return queued
