"""An admin's decision on mail the pipeline held: `mailgate inbox release ID` lets it through,
`mailgate inbox drop ID` discards it.

The pipeline holds two kinds of message in the inbox instead of ticketing them: an automatic
answer that answers no ticket (`held:auto-reply`) and new mail past a sender's flood limit
(`held:flood`). Both are guesses, and an admin who reads one and finds a person's real request
must be able to overrule them. Zammad keeps mail it could not process in a spool directory that
an admin re-runs through its parser by hand; Jira Service Management's email log shows why a
mail was ignored (an auto-reply, say) but offers no way to process it. Here it is one command,
the message takes the normal path, and the ticket names who decided.

Release is one committed change of the row (done → new, attempts reset, `released_by` and
`released_at` set), made only while the row is still held (the UPDATE's WHERE says so: two
admins releasing at once release once). The message then takes the one path every message
takes (pipeline/runner.py), which skips the hold that stopped it — and nothing else: screening,
threading, routing and the loop limits apply as to any mail, and an automatic answer still gets
no acknowledgement. The ticket's audit trail names who released it (`EventKind.RELEASED`).
A crash after the release's commit leaves a row waiting like any new one; the claim, the lease
and the outcome written in the ticket's own commit make it one ticket, never two or none.

Drop records the decision (`dropped`, who, and what it was held as) and keeps the row and its
bytes: a redelivery of the same message is still known and not ticketed, and a drop made by
mistake can be released.

A stranger's mail held on a ticket (`held:stranger`) is not released here: it is stored on the
ticket already, and an agent lets its writer in with `#cc add` (docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, update
from sqlmodel import Session, col

from mailgate.pipeline.apply import row
from mailgate.pipeline.context import Context
from mailgate.pipeline.outcomes import Disposition
from mailgate.store.kinds import EventKind
from mailgate.store.models import InboxItem, Ticket, now_utc, utc
from mailgate.store.repo import Repo

# What the pipeline holds in the inbox, and so what an admin may drop.
HELD = frozenset({Disposition.HELD_AUTO_REPLY, Disposition.HELD_FLOOD})
# What may be released: a held message, or one dropped by mistake.
RELEASABLE = HELD | {Disposition.DROPPED}


@dataclass(frozen=True)
class Answer:
    """What became of one id: `ok` when it is released (or dropped) — now, or by an earlier run
    of the same command, which a retry after a crash must not call an error — and the words."""

    item_id: int
    ok: bool
    text: str
    now: bool = False  # changed by this call


def is_released(ctx: Context) -> bool:
    """Whether an admin released this message: the holds that stopped it do not apply."""
    return ctx.item.released_by is not None


def record(ctx: Context, repo: Repo) -> None:
    """After the handler: a released message's trace and ticket say who let it through, and
    what it had been held as (the row still carries that until its outcome is written)."""
    item = ctx.item
    if item.released_by is None:
        return
    was = _held_as(item)
    ctx.note("release", f"released by {item.released_by}: it had been held as {was}")
    if ctx.ticket is not None:
        repo.event(
            row(ctx.ticket),
            EventKind.RELEASED,
            actor=item.released_by,
            inbox=item.id,
            was=was,
            reason=item.reason or "",
        )


# How `drop` writes a dropped row's reason, read again by `_held_as`.
_DROPPED_BY = "dropped by "
_HELD_AS = "; held as "


def _held_as(item: InboxItem) -> str:
    """What the message had been held as. A dropped one's row says `dropped` and keeps the hold
    and who dropped it in its reason (written by `drop` below): the trail names both."""
    was = item.disposition or "held"
    reason = item.reason or ""
    if was != Disposition.DROPPED or not reason.startswith(_DROPPED_BY) or _HELD_AS not in reason:
        return was
    head, held = reason.split(_HELD_AS, 1)
    by = head.removeprefix(_DROPPED_BY).rsplit(" at ", 1)[0]  # "… at 2026-12-07 18:33 UTC"
    held = held.split(": ", 1)[0]
    return f"{held}, then dropped by {by}"


def _when(at: datetime | None) -> str:
    return f"{utc(at):%Y-%m-%d %H:%M} UTC" if at is not None else "earlier"


def _ticket_key(session: Session, item: InboxItem) -> str | None:
    ticket = session.get(Ticket, item.ticket_id) if item.ticket_id else None
    return ticket.key if ticket is not None else None


def _not_held(session: Session, item: InboxItem, verb: str) -> Answer:
    """Why `item` cannot be released or dropped — or that an earlier run already did it, which
    a retry after a crash must not call an error."""
    n = item.id or 0
    key = _ticket_key(session, item)
    if item.released_by is not None:
        released = f"inbox item {n} was released by {item.released_by} at {_when(item.released_at)}"
        if item.state in ("new", "processing"):
            return Answer(n, verb == "release", f"{released}; it waits for the pipeline")
        if item.state == "failed":
            return Answer(n, False, f"{released}, then quarantined ({item.stage}: {item.reason})")
        outcome = f"ticket {key} ({item.disposition})" if key else f"{item.disposition or item.state}"
        return Answer(n, verb == "release", f"{released}: {outcome}")
    if item.disposition == Disposition.DROPPED and verb == "drop":
        return Answer(n, True, f"inbox item {n} was dropped already: {item.reason}")
    if item.state == "failed":
        return Answer(
            n,
            False,
            f"inbox item {n} is not held but quarantined ({item.stage}: {item.reason}); "
            f"`mailgate inbox retry {n}` processes it again",
        )
    if item.state != "done":
        return Answer(n, False, f"inbox item {n} is not held: it is {item.state}, not processed yet")
    if item.disposition == Disposition.HELD_STRANGER:
        return Answer(
            n,
            False,
            f"inbox item {n} is a stranger's mail, kept on {key} for its agents: an agent lets its "
            "writer in with `#cc add ADDRESS` in a reply on that ticket",
        )
    outcome = f"{item.disposition or 'done'}" + (f", ticket {key}" if key else "")
    which = "held:auto-reply, held:flood" + (", dropped" if verb == "release" else "")
    done = "released" if verb == "release" else "dropped"
    return Answer(
        n, False, f"inbox item {n} is not held (its outcome: {outcome}): only {which} can be {done}"
    )


def release(session: Session, item_id: int, by: str) -> Answer:
    """Put a held (or dropped) message back in the queue, to be processed as if never held.
    One UPDATE that holds only while the row is still held; the caller commits."""
    result = session.execute(
        update(InboxItem)
        .where(
            col(InboxItem.id) == item_id,
            col(InboxItem.state) == "done",
            col(InboxItem.disposition).in_(sorted(RELEASABLE)),
        )
        .values(
            state="new",
            attempts=0,
            stage=None,
            claimed_by=None,
            claimed_until=None,
            released_by=by,
            released_at=now_utc(),
        )
    )
    if cast("CursorResult[Any]", result).rowcount:
        return Answer(item_id, True, f"inbox item {item_id} released by {by}", now=True)
    item = session.get(InboxItem, item_id)
    if item is None:
        return Answer(item_id, False, f"no inbox item {item_id}")
    return _not_held(session, item, "release")


def drop(session: Session, item_id: int, by: str) -> Answer:
    """Record that a held message is discarded: `dropped`, by whom, and what it was held as.
    The row and its bytes stay (a redelivery is still known; a drop can be released)."""
    item = session.get(InboxItem, item_id)
    if item is None:
        return Answer(item_id, False, f"no inbox item {item_id}")
    if item.state != "done" or item.disposition not in HELD:
        return _not_held(session, item, "drop")
    was = f"{item.disposition}" + (f": {item.reason}" if item.reason else "")
    reason = f"{_DROPPED_BY}{by} at {_when(now_utc())}{_HELD_AS}{was}"[:2000]
    result = session.execute(
        update(InboxItem)
        .where(
            col(InboxItem.id) == item_id,
            col(InboxItem.state) == "done",
            col(InboxItem.disposition) == item.disposition,
        )
        .values(disposition=Disposition.DROPPED, reason=reason)
    )
    if not cast("CursorResult[Any]", result).rowcount:  # another admin decided first
        session.expire(item)
        return _not_held(session, session.get(InboxItem, item_id) or item, "drop")
    return Answer(item_id, True, f"inbox item {item_id} dropped by {by} (it was held as {was})", now=True)
