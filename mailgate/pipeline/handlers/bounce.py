"""Bounces: a delivery failure of one of our mails becomes a system note on its ticket, never a
reply (RFC 3464). A permanent failure (status 5.x.x) of an address stops automatic mail to that
address desk-wide for `[limits] bounce_quiet_days` — no acknowledgement of the next request from
a dead address (backscatter) — and the agents on the ticket hear that the customer cannot be
reached, and why. A temporary failure (a delay, 4.x.x) is noted and changes nothing: the relay
is still trying.

It must not quiet anyone on the word of the report alone: anyone can write a delivery report, and
name in it a Message-ID of ours that a reply made public. What proves it is where the report came:
each mail about a ticket goes out from an envelope sender support+<token>-b@ whose token is bound
to its one recipient (VERP, notify.py), MTAs send their reports there, and only a report that
came to a bounce token issued to the failed recipient it names quiets that address. Any other
report (to the plain address, or to the token of someone else) is noted as unproven.
"""

from __future__ import annotations

from datetime import timedelta

from mailgate.domain.tokens import KeyState, Purpose, TokenClaim, TokenKeys, read_bounce_word
from mailgate.mail.decode import bare_address, plus_parts
from mailgate.mail.model import Bounce
from mailgate.pipeline.apply import row
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import BounceUnmatched
from mailgate.pipeline.handlers.common import Services, store_message, tell
from mailgate.pipeline.identity import token_keys
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
        bounce = ctx.mail.bounce
        failed = [a.lower() for a in bounce.failed_recipients] if bounce else []
        claims = bounce_claims(ctx)
        ticket = ctx.ticket
        # A bounce token names its ticket: a report that came to one is about that ticket, even
        # when it returns nothing of the mail (or names another ticket's mail).
        keys = token_keys(self.services.config, now_utc().date())
        proofs = _verified(keys, claims, failed)
        if not failed and claims:
            # The report names no recipient, but the address it came to does: the one of the
            # token's ticket's people the token was issued to.
            named = next((repo.ticket_by_key(c.ticket_key) for _, c in claims), None)
            people = [p.address for p in repo.participants(row(named))] if named is not None else []
            proofs = _verified(keys, claims, people)
            failed = list(proofs)
        if proofs:
            ticket = repo.ticket_by_key(next(iter(proofs.values())).ticket_key) or ticket
        if ticket is None:
            raise BounceUnmatched("a bounce that names no message of ours")
        ctx.ticket = ticket
        store_message(ctx, repo, self.services, ticket, kind=MessageKind.SYSTEM)
        permanent = bool(bounce and bounce.permanent)
        # Our own agents are not quieted: their mail is the desk's work, and telling them their
        # own address bounced would be mail to a dead address. Their bounce is noted only.
        agents = self.services.agents()
        quiet = [a for a in failed if a in proofs and a not in agents] if permanent else []
        unproven = [a for a in failed if a not in proofs] if permanent else []
        repo.event(
            row(ticket),
            EventKind.BOUNCE,
            failed=failed,
            muted=quiet,  # no automatic mail to these, desk-wide, for the quiet period
            unproven=unproven,  # the report did not come to a bounce token issued to these
            status=bounce.status if bounce else None,
            permanent=permanent,
        )
        ctx.disposition = Disposition.BOUNCE
        if quiet and bounce is not None:
            self._quiet(ctx, repo, ticket, bounce, quiet)
        ctx.note(
            "apply",
            f"{'bounce' if permanent else 'delay'} for {', '.join(failed) or 'an unknown recipient'} "
            f"noted on {ticket.key}"
            + (f"; no automatic mail to {', '.join(quiet)}" if quiet else "")
            + (
                f"; not muted, it did not come to the bounce address of a mail of ours to "
                f"{', '.join(unproven)} (it came to {', '.join(a for a, _ in claims) or 'no bounce address'})"
                if unproven
                else ""
            ),
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


def bounce_claims(ctx: Context) -> list[tuple[str, TokenClaim]]:
    """The bounce tokens of this desk (support+<token>-b@) the report came to, with the address
    each was in: the envelope recipients (SMTP RCPT TO, a pipe's recipient) and the To,
    Delivered-To and X-Original-To headers, where an MTA that delivered it to a mailbox (IMAP)
    or a pipe without a recipient leaves that address; and a complaint's Original-Mail-From, the
    envelope sender of the mail it reports (RFC 5965: complaints go to the address the desk gave
    the mailbox provider). Any of these can be written by anyone; the token's MAC is the proof."""
    mail = ctx.mail
    found = [*ctx.recipients, *mail.header_all("Delivered-To"), *mail.header_all("X-Original-To")]
    if mail.bounce is not None and mail.bounce.original_mail_from:
        found.append(mail.bounce.original_mail_from)
    own = {a.lower() for a in ctx.desk.addresses}
    claims: list[tuple[str, TokenClaim]] = []
    for value in found:
        address = bare_address(value)
        if address is None:
            continue
        base, tag = plus_parts(address)
        claim = read_bounce_word(tag) if tag is not None and base in own else None
        if claim is not None and claim.desk_key == ctx.desk.key and (address, claim) not in claims:
            claims.append((address, claim))
    return claims


def _verified(
    keys: TokenKeys, claims: list[tuple[str, TokenClaim]], addresses: list[str]
) -> dict[str, TokenClaim]:
    """Each of `addresses` a bounce token among `claims` was issued to (under a live key), with
    that token: the addresses the report proves failed."""
    proofs: dict[str, TokenClaim] = {}
    for address in addresses:
        for _, claim in claims:
            if keys.verify(claim, address, Purpose.BOUNCE) in (KeyState.CURRENT, KeyState.OLD):
                proofs[address.lower()] = claim
                break
    return proofs
