"""Bounces: a delivery failure of one of our mails becomes a system note on its ticket, never a
reply (RFC 3464). A permanent failure (status 5.x.x) of an address our bounced mail was sent to
stops automatic mail to that address desk-wide for `[limits] bounce_quiet_days` — no
acknowledgement of the next request from a dead address (backscatter) — and the agents on the
ticket hear that the customer cannot be reached, and why. A temporary failure (a delay, 4.x.x)
is noted and changes nothing: the relay is still trying.

It must not quiet anyone on the word of the report alone: anyone can write a delivery report.
"""

from __future__ import annotations

from datetime import timedelta

from mailgate.mail.model import Bounce
from mailgate.pipeline.apply import row
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import BounceUnmatched
from mailgate.pipeline.handlers.common import Services, store_message, tell
from mailgate.pipeline.outcomes import Disposition
from mailgate.store.kinds import EventKind, MessageKind
from mailgate.store.models import Ticket, now_utc
from mailgate.store.repo import Repo


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
        ticket = ctx.ticket
        bounce = ctx.mail.bounce
        failed = [a.lower() for a in bounce.failed_recipients] if bounce else []
        store_message(ctx, repo, self.services, ticket, kind=MessageKind.SYSTEM)
        permanent = bool(bounce and bounce.permanent)
        # Anyone can write a delivery report: it quiets only addresses the bounced mail of ours
        # (its original Message-ID) was sent to, or a stranger could silence a ticket's people.
        original = bounce.original_message_id if bounce else None
        sent_to = repo.mailed_to(row(ticket), [original] if original else [])
        # Our own agents are not quieted: their mail is the desk's work, and telling them their
        # own address bounced would be mail to a dead address. Their bounce is noted only.
        agents = self.services.agents()
        quiet = [a for a in failed if a in sent_to and a not in agents] if permanent else []
        repo.event(
            row(ticket),
            EventKind.BOUNCE,
            failed=failed,
            muted=quiet,  # no automatic mail to these, desk-wide, for the quiet period
            status=bounce.status if bounce else None,
            permanent=permanent,
        )
        ctx.disposition = Disposition.BOUNCE
        if quiet and bounce is not None:
            self._quiet(ctx, repo, ticket, bounce, quiet)
        unproven = [a for a in failed if a not in sent_to] if permanent else []
        ctx.note(
            "apply",
            f"{'bounce' if permanent else 'delay'} for {', '.join(failed) or 'an unknown recipient'} "
            f"noted on {ticket.key}"
            + (f"; no automatic mail to {', '.join(quiet)}" if quiet else "")
            + (f"; not muted, it names no mail of ours to {', '.join(unproven)}" if unproven else ""),
        )

    def _quiet(self, ctx: Context, repo: Repo, ticket: Ticket, bounce: Bounce, addresses: list[str]) -> None:
        """Stop automatic mail to `addresses` for the quiet period and tell the ticket's agents
        (the assignee, else the group or triage) that the customer cannot be reached, and why."""
        s = self.services
        days = s.config.limits.bounce_quiet_days
        until = now_utc() + timedelta(days=days)
        status = bounce.status or ""
        diagnostic = (bounce.diagnostic or "").strip()
        for address in addresses:
            repo.record_bounce(
                address, until=until, status=status, diagnostic=diagnostic, ticket_id=row(ticket)
            )
        tell(
            s,
            repo,
            ctx,
            ticket,
            s.agents_of(repo, ticket),
            template="address_bounced",
            kind="address-bounced",
            context={
                "addresses": addresses,
                "dsn_status": status,
                "diagnostic": diagnostic,
                "quiet_days": days,
                "quiet_until": f"{until:%Y-%m-%d %H:%M} UTC",
            },
        )
