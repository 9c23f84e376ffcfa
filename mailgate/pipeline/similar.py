"""Similar tickets for a new ticket's notification (seed 002): up to three tickets of the same
desk, open or resolved in the last 30 days, whose subjects share the new subject's words, so
`#merge SUP-7` or `#link SUP-7` is one line away; a likely duplicate (same requester, a similar
subject, opened within a day) is named apart.

One short read per new ticket (store/search.py), inside the pipeline's transaction after the
new message is stored; the few candidates are ranked here, the same way on both engines. Each
agent is shown only the tickets they may see (domain.team.may_see), so a notification never
leaks another group's ticket.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mailgate.domain.team import Team, may_see
from mailgate.store import search
from mailgate.store.models import Ticket, utc
from mailgate.store.repo import Repo
from mailgate.store.search import NEIGHBOUR_MESSAGES, Hit, words

RECENT = timedelta(days=30)  # a resolved ticket older than this is history, not a suggestion
DUPLICATE_WITHIN = timedelta(days=1)
SHOWN = 3
CANDIDATES = 10  # kept, so that three remain after what an agent may not see
ALIKE = 0.5  # share of the two subjects' words (Jaccard) that makes them "similar"


@dataclass(frozen=True)
class Similar:
    """The similar tickets of one new ticket, before anyone's access is applied."""

    hits: tuple[Hit, ...]
    duplicate: Hit | None

    def keys(self) -> list[str]:
        return [h.key for h in self.hits[:SHOWN]]

    def for_agent(self, team: Team, agent: str) -> dict[str, Any]:
        """The template's `similar` and `duplicate` for one agent: what they may see only."""
        seen = [h for h in self.hits if may_see(team, agent, h.key, h.group, h.assignee)][:SHOWN]
        duplicate = self.duplicate if self.duplicate in seen else None
        return {"similar": [_view(h) for h in seen], "duplicate": _view(duplicate) if duplicate else None}


def _view(hit: Hit) -> dict[str, Any]:
    return {
        "key": hit.key,
        "subject": hit.subject,
        "status": hit.status,
        "when": f"{utc(hit.created_at):%Y-%m-%d}",
    }


def _overlap(a: set[str], b: set[str]) -> float:
    """How much two sets of subject words say the same (Jaccard): 1 for the same words."""
    return len(a & b) / len(a | b) if a and b else 0.0


def subjects_alike(a: str, b: str) -> bool:
    """Whether two subjects say the same: most of their significant words shared, or (with no
    such words, "Help!") the same text."""
    wa, wb = set(words(a, significant=True)), set(words(b, significant=True))
    if not wa or not wb:
        return a.strip().lower() == b.strip().lower()
    return _overlap(wa, wb) >= ALIKE


def similar_to(repo: Repo, ticket: Ticket, now: datetime) -> Similar:
    """The new ticket's similar tickets, most alike first (shared subject words, then the
    newest), a likely duplicate first of all. One short read (store/search.py)."""
    return ask_similar(repo, ticket.subject, ticket.requester, ticket.desk, now, exclude=ticket.key).similar(
        ticket
    )


@dataclass(frozen=True)
class Asked:
    """The look-up of `ask_similar`, ranked when its answer is needed (`similar`)."""

    candidates: Callable[[], list[Hit]]
    now: datetime

    def similar(self, ticket: Ticket) -> Similar:
        """The similar tickets of `ticket`, the new ticket asked for, ranked."""
        now = self.now
        mine = set(words(ticket.subject, significant=True))
        found = [h for h in self.candidates() if h.key != ticket.key]
        duplicate = max(
            (
                h
                for h in found
                if h.requester == ticket.requester
                and h.created_at > now - DUPLICATE_WITHIN
                and subjects_alike(h.subject, ticket.subject)
            ),
            key=lambda h: h.created_at,
            default=None,
        )
        alike = {h.key: _overlap(mine, set(words(h.subject, significant=True))) for h in found}
        # the requester's other tickets of the day came along for the duplicate check only
        ranked = sorted(
            (h for h in found if alike[h.key] > 0 or h == duplicate),
            key=lambda h: (h != duplicate, -alike[h.key], -h.created_at.timestamp()),
        )
        return Similar(tuple(ranked[:CANDIDATES]), duplicate)


def ask_similar(
    repo: Repo, subject: str, requester: str, desk: str, now: datetime, *, exclude: str | None = None
) -> Asked:
    """Ask for the similar tickets of a new ticket of `desk` with this subject and requester,
    before it is made (`exclude`: its key, once it is): the new ticket handler asks with the
    statement that makes the ticket, which waits for the server anyway, so on PostgreSQL the
    look-up costs no wait of its own (store/search.py `ask_similar`). Asked before, the new
    message is not yet the newest of the messages looked at, nor its ticket among the hits: one
    message fewer is looked at, so that the same tickets come back as asked after."""
    candidates = search.ask_similar(
        repo.session,
        subject,
        requester=requester,
        desk=desk,
        exclude=exclude,
        since=now - RECENT,
        opened_since=now - DUPLICATE_WITHIN,
        messages=NEIGHBOUR_MESSAGES - (exclude is None),
    )
    return Asked(candidates, now)
