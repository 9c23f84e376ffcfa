"""Who is on a ticket, and how many people one event may mail (DESIGN.md "Who is on a ticket").

Membership is earned, never taken. On a ticket are: the requester; the To/Cc of the requester's
first mail up to `[security] max_initial_cc`; whoever an agent adds (`#cc add`); and whoever
proves they were in the conversation: a reply sent to a reply-token address issued to the
sender's own address, or whose In-Reply-To names a mail we sent to that address. Knowing a
ticket's key (a subject tag), holding someone else's token address, or being Cc'd on a later
reply proves nothing: such mail is held on the ticket for the agents to let its author in.

This module decides and reads; the handlers write what it decides. It never sends mail.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mailgate.config import Membership
from mailgate.domain.tokens import TokenKeys
from mailgate.mail.decode import plus_parts
from mailgate.mail.model import ParsedMail
from mailgate.mail.msgid import parse_msgids
from mailgate.pipeline.identity import token_proof
from mailgate.store.kinds import EventKind
from mailgate.store.models import Ticket
from mailgate.store.repo import Repo


@dataclass(frozen=True)
class Standing:
    """Whether the sender of a mail on a ticket may take part, and the evidence (for the trace)."""

    member: bool
    how: str
    joins: bool = False  # proven now, not yet a participant: becomes a watcher


def _domain(address: str) -> str:
    return address.rpartition("@")[2].lower()


def copied_people(mail: ParsedMail, own_addresses: Iterable[str]) -> list[str]:
    """The To/Cc of a mail besides the desk's own addresses and the sender, in header order."""
    own = {a.lower() for a in own_addresses}
    sender = mail.from_addr.lower()
    people: list[str] = []
    for addr in [*mail.to_addrs, *mail.cc_addrs]:
        addr = addr.lower()
        if not _domain(addr) or addr == sender or addr in own or plus_parts(addr)[0] in own or addr in people:
            continue
        people.append(addr)
    return people


def standing(
    repo: Repo,
    ticket: Ticket,
    mail: ParsedMail,
    *,
    recipients: Sequence[str],
    keys: TokenKeys,
    policy: Membership,
) -> Standing:
    """Decide whether the sender of `mail` is on `ticket` or proves they belong there.

    References are not evidence: a reply carries the References of everyone before it, so a
    forwarded mail would hand them on. Only the In-Reply-To of a mail sent to this very address,
    or a token issued to it, shows the sender was written to.
    """
    sender = mail.from_addr.lower()
    people = {p.address: p.role for p in repo.participants(ticket.id)}  # type: ignore[arg-type]
    if sender in people:
        return Standing(True, f"{sender} is on {ticket.key} ({people[sender]})")
    proof = None
    token = token_proof(keys, ticket.key, sender, recipients)
    answered = parse_msgids(mail.in_reply_to)
    if token.proven:
        proof = token.how
    elif sender in repo.mailed_to(ticket.id, answered):  # type: ignore[arg-type]
        proof = f"answers <{answered[0]}>, which was sent to {sender}"
    if proof and removed_by_agent(repo, ticket, sender):
        return Standing(False, f"{sender} was removed from {ticket.key} by an agent (#cc remove); {proof}")
    if proof:
        return Standing(True, proof, joins=True)
    if policy.join_same_domain and _domain(sender) and _domain(sender) == _domain(ticket.requester):
        return Standing(
            True, f"{sender} shares the requester's domain ([security] join_same_domain)", joins=True
        )
    return Standing(
        False,
        f"{sender} is not on {ticket.key}: no reply address issued to them, no mail of ours answered",
    )


def removed_by_agent(repo: Repo, ticket: Ticket, address: str) -> bool:
    """Whether an agent's last word on `address` was `#cc remove`: mail we sent them before then
    proves they were in the conversation, not that they may come back."""
    last = None
    for data in repo.recent_events(ticket.id, EventKind.CC, datetime(1970, 1, 1, tzinfo=UTC)):  # type: ignore[arg-type]
        if address in (data.get("added"), data.get("removed")):
            last = "added" if data.get("added") == address else "removed"
    return last == "removed"


@dataclass
class FanOut:
    """The addresses outside the team one event may mail (`[security] max_recipients_per_event`).

    One inbound mail is one event, however many mails it causes (an agent's reply to watchers,
    the assignee's notice ...). Agents of team.toml are not counted: their number is the admin's
    to set, and a notice an agent misses is work lost. Whoever would be past the cap is recorded
    here; the handler writes them on the ticket and tells an agent.
    """

    cap: int
    mailed: list[str] = field(default_factory=list)
    over: list[str] = field(default_factory=list)

    def admit(self, address: str) -> bool:
        """Whether mail to `address` fits (someone already mailed in this event always fits)."""
        if address in self.mailed:
            return True
        if len(self.mailed) >= self.cap:
            if address not in self.over:
                self.over.append(address)
            return False
        self.mailed.append(address)
        return True
