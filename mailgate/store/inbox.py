"""The inbox table's life cycle: insert (deduplicated), claim, finish, fail, recover, retry.

Claiming is a committed state change (new → processing, attempts + 1) before any work, so a
process that dies mid-message leaves a row that `recover` hands back — or quarantines once it has
been tried `max_attempts` times (Mailman's switchboard: claim, recover at start, poison cap).
On PostgreSQL the claim uses FOR UPDATE SKIP LOCKED so several workers never take the same row.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, cast

from sqlalchemy import CursorResult, and_, func, or_, select, text, update
from sqlmodel import Session, col

from mailgate.store.db import insert_for
from mailgate.store.models import InboxItem, InboxRaw, now_utc, utc

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
LEASE = timedelta(minutes=10)


@dataclass(frozen=True)
class NewItem:
    desk: str
    raw: bytes
    source: str
    mail_from: str = ""
    rcpt_tos: tuple[str, ...] = ()
    message_id: str | None = None
    source_key: str | None = None
    digest: str | None = None  # content_digest(raw); computed by insert_items when not given


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^([!-9;-~]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)
# The fields the author's client wrote and every MTA passes on untouched (the ones DKIM signers
# sign). Trace fields an MTA adds on a redelivery (Received, Return-Path, Delivered-To,
# X-Original-To) and anything else added on the way stay out of the digest.
DIGESTED_FIELDS = frozenset(
    {b"from", b"sender", b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to", b"references"}
)
_HEAD_LIMIT = 262144


def content_digest(raw: bytes) -> str:
    """sha256 of a message as its author wrote it: the DIGESTED_FIELDS in order, unfolded with
    runs of white space made one space (DKIM's relaxed form, RFC 6376 3.4.2), then the body with
    line ends made LF and trailing empty lines dropped (a pipe delivery has LF, SMTP CRLF). The
    same message delivered twice has one digest; another message under the same Message-ID has
    another (the dedup key is Message-ID plus this)."""
    end = _HEADER_END.search(raw, 0, _HEAD_LIMIT)
    head, body = (raw[: end.start()], raw[end.end() :]) if end else (raw[:_HEAD_LIMIT], raw[_HEAD_LIMIT:])
    h = hashlib.sha256()
    for name, value in _FIELD.findall(head):
        name = name.lower()
        if name in DIGESTED_FIELDS:
            h.update(name + b":" + b" ".join(value.split()) + b"\n")
    h.update(b"\n")
    h.update(body.replace(b"\r\n", b"\n").rstrip(b"\n"))
    return h.hexdigest()


def insert_items(session: Session, items: Sequence[NewItem]) -> list[int | None]:
    """Insert rows; a duplicate (same desk, Message-ID and content digest, or same source key)
    gives None.

    INSERT … ON CONFLICT DO NOTHING keeps the check and the write one atomic statement, so two
    intakes receiving the same message at once (several MX hosts) store it once. Rows go in in
    arrival order (ids are the processing order: an mbox's original before its reply).
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        _lock_keys(session, items)
    stmt = _insert_statement(dialect)
    conn = session.connection()
    ids: list[int | None] = []
    raws: list[dict[str, Any]] = []
    now = now_utc()
    for item in items:
        params = {
            "desk": item.desk,
            "message_id": item.message_id,
            "digest": item.digest or content_digest(item.raw),
            "source": item.source,
            "source_key": item.source_key,
            "mail_from": item.mail_from,
            "rcpt_tos": list(item.rcpt_tos),
            "size": len(item.raw),
            "state": "new",
            "attempts": 0,
            "trace": [],
            "received_at": now,
        }
        # One statement per row: with ON CONFLICT DO NOTHING, a batch's RETURNING would not say
        # which of its rows were duplicates.
        row_id = conn.execute(stmt, params).scalar_one_or_none()
        if row_id is not None:
            raws.append({"id": row_id, "raw": item.raw})
        ids.append(row_id)
    if raws:
        conn.execute(_INSERT_RAW, raws)  # the bytes in one executemany
    return ids


def raws(session: Session, ids: Sequence[int]) -> dict[int, bytes]:
    """The message bytes of these inbox rows (read once, by the worker that claimed them)."""
    rows = session.execute(select(col(InboxRaw.id), col(InboxRaw.raw)).where(col(InboxRaw.id).in_(ids)))
    return {row_id: bytes(raw) for row_id, raw in rows}


@cache
def _insert_statement(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id, built once per dialect (it runs per message)."""
    table = InboxItem.__table__  # type: ignore[attr-defined]
    return insert_for(dialect)(table).on_conflict_do_nothing().returning(table.c.id)


_INSERT_RAW = InboxRaw.__table__.insert()  # type: ignore[attr-defined]


def _lock_keys(session: Session, items: Sequence[NewItem]) -> None:
    """Take a transaction advisory lock per unique key, in sorted order, before inserting.

    Two batches holding the same messages in different orders (several MX hosts, each group
    committing) would otherwise each wait on the other's uncommitted index entry: a deadlock
    that PostgreSQL breaks by failing one batch, whose senders all get 451. Locks taken in one
    global order cannot deadlock; a hash collision only makes an unrelated insert wait briefly.
    (SQLite needs none of this: BEGIN IMMEDIATE admits one writer at a time.)
    """
    keys = {f"m\n{i.desk}\n{i.message_id}\n{i.digest}" for i in items if i.message_id}
    keys |= {f"s\n{i.source}\n{i.source_key}" for i in items if i.source_key}
    for key in sorted(keys):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": key})


def is_known(
    session: Session,
    desk: str,
    message_id: str | None,
    source_key: str | None = None,
    digest: str | None = None,
) -> bool:
    """Whether this message (Message-ID and, when given, content digest) or source key is stored."""
    conds = []
    if message_id:
        same = and_(col(InboxItem.desk) == desk, col(InboxItem.message_id) == message_id)
        conds.append(same if digest is None else and_(same, col(InboxItem.digest) == digest))
    if source_key:
        conds.append(col(InboxItem.source_key) == source_key)
    if not conds:
        return False
    return session.execute(select(col(InboxItem.id)).where(or_(*conds)).limit(1)).first() is not None


def has_new(session: Session) -> bool:
    """Whether any row waits. For a `Database.reading()` session: it takes no write lock, so a
    worker woken for nothing does not make the intake wait for the lock."""
    return (
        session.execute(select(col(InboxItem.id)).where(col(InboxItem.state) == "new").limit(1)).first()
        is not None
    )


def claim(session: Session, limit: int, worker: str = WORKER_ID) -> list[int]:
    """Take up to `limit` new rows, oldest first. The caller commits before processing them.

    Two statements on purpose: PostgreSQL runs `UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE
    SKIP LOCKED)` as a semi-join that re-scans the subquery and skips the rows this very UPDATE
    just changed, so it claimed every new row, not n. Selecting (and locking) the ids first, then
    updating exactly those, keeps the limit on both backends.
    """
    ids = (
        session.execute(
            select(col(InboxItem.id))
            .where(col(InboxItem.state) == "new")
            .order_by(col(InboxItem.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        .scalars()
        .all()
    )
    if not ids:
        return []
    stmt = (
        update(InboxItem)
        .where(col(InboxItem.id).in_(ids), col(InboxItem.state) == "new")
        .values(
            state="processing", attempts=col(InboxItem.attempts) + 1, claimed_by=worker, claimed_at=now_utc()
        )
        .returning(col(InboxItem.id))
    )
    return sorted(session.execute(stmt).scalars().all())


def worker_alive(claimed_by: str | None) -> bool:
    """Whether the worker that claimed a row may still be at it (another host: assume yes)."""
    if not claimed_by:
        return False
    host, _, pid = claimed_by.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True  # another machine's worker: only the lease can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(session: Session, max_attempts: int, now: datetime | None = None) -> tuple[int, int]:
    """Hand back rows whose worker died; quarantine those tried `max_attempts` times.

    A worker is dead when it ran on this host and its pid is gone, or its lease ran out.
    Returns (requeued, quarantined).
    """
    now = now or now_utc()
    rows = session.execute(select(InboxItem).where(col(InboxItem.state) == "processing")).scalars().all()
    requeued = quarantined = 0
    for row in rows:
        claimed_at = utc(row.claimed_at)
        expired = claimed_at is None or now - claimed_at > LEASE
        if row.claimed_by == WORKER_ID or (worker_alive(row.claimed_by) and not expired):
            continue
        if row.attempts >= max_attempts:
            row.state = "failed"
            row.stage = row.stage or "worker"
            row.reason = f"the worker died while processing it {row.attempts} times; quarantined"
            quarantined += 1
        else:
            row.state = "new"
            requeued += 1
        row.claimed_by = None
        session.add(row)
    return requeued, quarantined


def retry(session: Session, item_id: int) -> bool:
    """Put a quarantined row back in the queue, attempts reset: `mailgate inbox retry`."""
    result = session.execute(
        update(InboxItem)
        .where(col(InboxItem.id) == item_id, col(InboxItem.state) == "failed")
        .values(state="new", attempts=0, stage=None, reason=None, claimed_by=None, trace=[])
    )
    return bool(cast("CursorResult[Any]", result).rowcount)  # an UPDATE's result is a CursorResult


def counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(col(InboxItem.state), func.count()).group_by(col(InboxItem.state))).all()
    return {state: n for state, n in rows}
