"""Mail relayed by a web form or portal: From is the portal, Reply-To the person who wrote.

A desk lists the addresses its forms send from (`[[desks]] portals = [...]` in config.toml). Mail
from one of them is the person's request, so the person — the single address in Reply-To — is
the requester: the acknowledgement and every later mail go to them, not back to the portal
(Zammad's web form and RT's "Requestor from Reply-To" do the same).

Guards: only a configured portal sender is read this way (anybody may write a Reply-To; for any
other sender it stays what RFC 5322 says it is, a hint to mail clients); the Reply-To must be one
header with exactly one valid address, not the portal itself and not one of the desk's own
addresses (or a portal could be made to open tickets for the desk, a loop). Anything else leaves
the portal as the sender, and the trace says why.

Pure: it reads a parsed message and never touches the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailgate.mail.decode import parse_addresses, plus_parts
from mailgate.mail.model import ParsedMail

_ADDRESS = re.compile(r"^[^@\s<>\"()\[\],;:]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Relayed:
    """What a portal's mail says about who wrote it."""

    portal: str
    person: str | None  # the requester from Reply-To, or None when it cannot be trusted as one
    name: str = ""
    why: str = ""  # the evidence, or why the portal stays the sender


def relayed_by_portal(mail: ParsedMail, portals: Iterable[str], own: Iterable[str]) -> Relayed | None:
    """None when the sender is not a configured portal; else who wrote it, or why nobody can say."""
    portal = mail.from_addr.lower()
    if not portal or portal not in {p.lower() for p in portals}:
        return None
    values = mail.header_all("Reply-To")
    if len(values) != 1:
        why = "no Reply-To" if not values else f"{len(values)} Reply-To headers"
        return Relayed(portal, None, why=f"mail from portal {portal} with {why}: the portal is the sender")
    pairs = parse_addresses(values)
    if len(pairs) != 1 or not _ADDRESS.match(pairs[0][1]):
        return Relayed(
            portal,
            None,
            why=f"mail from portal {portal}: Reply-To {values[0][:120]!r} is not one valid address; "
            "the portal is the sender",
        )
    name, person = pairs[0]
    own_bases = {a.lower() for a in own}
    if person == portal or plus_parts(person)[0] in own_bases or person in own_bases:
        return Relayed(
            portal, None, why=f"mail from portal {portal}: Reply-To {person} is not a person's address"
        )
    return Relayed(portal, person, name, f"relayed by portal {portal}: the requester is {person} (Reply-To)")
