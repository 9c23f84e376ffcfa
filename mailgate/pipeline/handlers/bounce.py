"""Bounces: a delivery failure of one of our mails becomes a system note on its ticket, never a
reply, and mutes the failed addresses the bounced mail of ours was sent to (RFC 3464).

It must not mute anyone on the word of the report alone: anyone can write a delivery report.
"""

from __future__ import annotations

from mailgate.pipeline.apply import row
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import BounceUnmatched
from mailgate.pipeline.handlers.common import Services, store_message
from mailgate.pipeline.outcomes import Disposition
from mailgate.store.kinds import EventKind, MessageKind
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
        # Anyone can write a delivery report: it mutes only addresses the bounced mail of ours
        # (its original Message-ID) was sent to, or a stranger could silence a ticket's people.
        original = bounce.original_message_id if bounce else None
        sent_to = repo.mailed_to(row(ticket), [original] if original else [])
        muted = [a for a in failed if a in sent_to] if permanent else []
        if muted:
            repo.mute(row(ticket), muted)
        repo.event(
            row(ticket),
            EventKind.BOUNCE,
            failed=failed,
            muted=muted,
            status=bounce.status if bounce else None,
            permanent=permanent,
        )
        ctx.disposition = Disposition.BOUNCE
        unproven = [a for a in failed if a not in muted] if permanent else []
        ctx.note(
            "apply",
            f"bounce for {', '.join(failed) or 'an unknown recipient'} noted on {ticket.key}"
            + (f"; no more mail to {', '.join(muted)} on this ticket" if muted else "")
            + (f"; not muted, it names no mail of ours to {', '.join(unproven)}" if unproven else ""),
        )
