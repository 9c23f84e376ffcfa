"""Unsubscribe: mail to support+<token>-off@ turns off one ticket's notifications for its sender
(the mailto in List-Unsubscribe, RFC 2369; "Turn off this request's notifications").

It must not mute anyone but the address the token was issued to: the token is checked against
the sender before anything changes.
"""

from __future__ import annotations

from mailgate.domain.tokens import UNSUBSCRIBE_SUFFIX, KeyState, Purpose, read_token
from mailgate.mail.decode import plus_parts
from mailgate.pipeline.apply import row
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import ProcessingError
from mailgate.pipeline.handlers.common import Services
from mailgate.pipeline.identity import token_keys
from mailgate.pipeline.outcomes import Disposition
from mailgate.store.kinds import EventKind
from mailgate.store.models import now_utc
from mailgate.store.repo import Repo


class UnsubscribeHandler:
    """Mail to support+<token>-off@: the sender turns off this ticket's notifications."""

    name = "unsubscribe"

    def __init__(self, services: Services) -> None:
        self.services = services

    def _token(self, ctx: Context) -> str | None:
        for addr in ctx.recipients:
            _, tag = plus_parts(addr)
            if tag is not None and tag.lower().endswith(UNSUBSCRIBE_SUFFIX):
                return tag[: -len(UNSUBSCRIBE_SUFFIX)]
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
        repo.mute(row(ticket), [ctx.mail.from_addr])
        repo.event(row(ticket), EventKind.UNSUBSCRIBED, actor=ctx.mail.from_addr)
        ctx.disposition = Disposition.UNSUBSCRIBED
        ctx.note("apply", f"{ctx.mail.from_addr} gets no more mail about {ticket.key}")
