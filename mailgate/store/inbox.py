"""The inbox table's life cycle: insert (deduplicated), claim, hold, finish, fail, retry.

Claiming is a committed state change (new → processing, attempts + 1, a lease: store/lease.py)
before any work. A process that dies mid-message stops renewing its lease, and once it has run
out every claim, of any worker, takes the row again — or quarantines it once it has been tried
`max_attempts` times (Mailman's switchboard: claim, recover, poison cap; recovery on every
claim rather than only at start, so a running worker picks up what a dead one left).
On PostgreSQL the claim uses FOR UPDATE SKIP LOCKED so several workers never take the same row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, Row, and_, func, or_, select, text, update
from sqlmodel import Session, col

from mailgate.store.db import insert_for
from mailgate.store.lease import Lease, clock, expired, until
from mailgate.store.models import InboxItem, InboxRaw, now_utc


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
_DIGEST_PIECE = 1 << 20
_BLOB_PIECE = 1 << 20  # larger messages are written into SQLite piece by piece (_stream_raw)


def content_digest(raw: bytes) -> str:
    """sha256 of a message as its author wrote it: the DIGESTED_FIELDS in order, unfolded with
    runs of white space made one space (DKIM's relaxed form, RFC 6376 3.4.2), then the body with
    line ends made LF and trailing empty lines dropped (a pipe delivery has LF, SMTP CRLF). The
    same message delivered twice has one digest; another message under the same Message-ID has
    another (the dedup key is Message-ID plus this)."""
    end = _HEADER_END.search(raw, 0, _HEAD_LIMIT)
    head, body_at = (
        (raw[: end.start()], end.end()) if end else (raw[:_HEAD_LIMIT], min(len(raw), _HEAD_LIMIT))
    )
    h = hashlib.sha256()
    for name, value in _FIELD.findall(head):
        name = name.lower()
        if name in DIGESTED_FIELDS:
            h.update(name + b":" + b" ".join(value.split()) + b"\n")
    h.update(b"\n")
    # The body piece by piece, never copied whole (the listener holds the largest messages
    # already): what `body.replace(b"\r\n", b"\n").rstrip(b"\n")` would give.
    stop = len(raw)
    while stop > body_at and raw[stop - 1] == 0x0A:  # the trailing line ends, CRLF or LF
        stop -= 2 if stop - 2 >= body_at and raw[stop - 2] == 0x0D else 1
    carry = b""
    for start in range(body_at, stop, _DIGEST_PIECE):
        piece = carry + raw[start : min(start + _DIGEST_PIECE, stop)]
        carry = b"\r" if piece.endswith(b"\r") else b""  # its LF may begin the next piece
        h.update(piece[: len(piece) - len(carry)].replace(b"\r\n", b"\n"))
    h.update(carry)
    return h.hexdigest()


def insert_items(session: Session, items: Sequence[NewItem]) -> list[int | None]:
    """Insert rows; a duplicate (same desk, Message-ID and content digest, or same source key)
    gives None.

    INSERT … ON CONFLICT DO NOTHING keeps the check and the write one atomic statement, so two
    intakes receiving the same message at once (several MX hosts) store it once. Rows go in in
    arrival order (ids are the processing order: an mbox's original before its reply).
    """
    dialect = session.get_bind().dialect.name
    conn = session.connection()
    now = now_utc()
    params = [_row(item, now) for item in items]
    if dialect == "postgresql":
        _lock_keys(session, params)
        ids = _insert_together(conn, params)
    else:
        # One statement per row: SQLite runs in this process (no round trip to save), and
        # with ON CONFLICT DO NOTHING a batch's RETURNING would not say which rows were dropped.
        stmt = _insert_statement(dialect)
        ids = [conn.execute(stmt, row).scalar_one_or_none() for row in params]
    stored = [(row_id, item.raw) for row_id, item in zip(ids, items, strict=True) if row_id is not None]
    if dialect == "sqlite":
        for row_id, raw in stored:
            if len(raw) > _BLOB_PIECE:
                _stream_raw(conn, row_id, raw)
        stored = [(row_id, raw) for row_id, raw in stored if len(raw) <= _BLOB_PIECE]
    raws = [{"id": row_id, "raw": raw} for row_id, raw in stored]
    if raws:
        conn.execute(_INSERT_RAW, raws)  # the bytes in one executemany
    return ids


def _stream_raw(conn: Connection, row_id: int, raw: bytes) -> None:
    """SQLite: a large message's bytes written into a zeroblob piece by piece, through sqlite3's
    Blob API. Bound as a parameter, SQLite copies the whole message and builds its row from the
    copy: twice its size at once, on top of what the SMTP listener already holds of it."""
    rowid = conn.execute(_INSERT_RAW.values(id=row_id, raw=func.zeroblob(len(raw)))).lastrowid
    with conn.connection.driver_connection.blobopen(InboxRaw.__tablename__, "raw", rowid) as blob:  # type: ignore[union-attr]
        view = memoryview(raw)
        for start in range(0, len(raw), _BLOB_PIECE):
            blob.write(view[start : start + _BLOB_PIECE])


def _row(item: NewItem, now: Any) -> dict[str, Any]:
    return {
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


_IDENTITY = ("desk", "message_id", "digest", "source", "source_key")


def _insert_together(conn: Any, params: list[dict[str, Any]]) -> list[int | None]:
    """PostgreSQL: the batch in one INSERT … VALUES (…), (…) ON CONFLICT DO NOTHING, a round trip
    for all its rows instead of one each. The rows it inserted come back with what identifies
    them; ids are given in VALUES order (a dropped row uses up its id), so the rows returned,
    by id, are the inserted rows in the batch's order, and a walk along the batch tells which of
    them each is. Two copies of one message in the batch: the first is inserted, the second is
    dropped (it conflicts with the first), as one statement per row would do."""
    stmt = _insert_many_statement()
    returned = sorted(tuple(r) for r in conn.execute(stmt, params).all())
    ids: list[int | None] = []
    j = 0
    for row in params:
        if j < len(returned) and returned[j][1:] == tuple(row[k] for k in _IDENTITY):
            ids.append(int(returned[j][0]))
            j += 1
        else:
            ids.append(None)
    if j != len(returned):  # cannot happen while ids follow VALUES order; never guess
        raise RuntimeError(f"inbox insert: {len(returned)} rows came back, {j} matched the batch")
    return ids


@cache
def _insert_many_statement() -> Any:
    table = InboxItem.__table__  # type: ignore[attr-defined]
    cols = [table.c.id, *(table.c[k] for k in _IDENTITY)]
    return insert_for("postgresql")(table).on_conflict_do_nothing().returning(*cols)


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
_TABLE = InboxItem.__table__  # type: ignore[attr-defined]


def _lock_keys(session: Session, params: Sequence[dict[str, Any]]) -> None:
    """Take a transaction advisory lock per unique key, in sorted order, before inserting.

    Two batches holding the same messages in different orders (several MX hosts, each group
    committing) would otherwise each wait on the other's uncommitted index entry: a deadlock
    that PostgreSQL breaks by failing one batch, whose senders all get 451. Locks taken in one
    global order cannot deadlock; a hash collision only makes an unrelated insert wait briefly.
    One statement takes them all, in the array's order (a function scan returns its rows in
    order). (SQLite needs none of this: BEGIN IMMEDIATE admits one writer at a time.)
    """
    keys = {f"m\n{p['desk']}\n{p['message_id']}\n{p['digest']}" for p in params if p["message_id"]}
    keys |= {f"s\n{p['source']}\n{p['source_key']}" for p in params if p["source_key"]}
    if keys:
        session.execute(_LOCK_KEYS, {"keys": sorted(keys)})


_LOCK_KEYS = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) FROM unnest(CAST(:keys AS text[])) AS k"
)


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


def _claimable(now: Any) -> Any:
    """New rows, and rows whose worker's lease ran out (it died, froze or lost its machine)."""
    return or_(
        col(InboxItem.state) == "new",
        and_(col(InboxItem.state) == "processing", expired(col(InboxItem.claimed_until), now)),
    )


def has_new(session: Session) -> bool:
    """Whether any row waits, or was left by a worker whose lease ran out. For a
    `Database.reading()` session: it takes no write lock, so a worker woken for nothing does not
    make the intake wait for the lock."""
    return (
        session.execute(select(col(InboxItem.id)).where(_claimable(clock(session))).limit(1)).first()
        is not None
    )


@dataclass(frozen=True)
class Claimed:
    ids: list[int]  # claimed by this lease now, oldest first
    taken_over: int = 0  # of them, rows whose previous worker's lease had run out
    quarantined: int = 0  # rows left by dead workers `max_attempts` times: failed, not claimed


def claim(
    session: Session, limit: int, lease: Lease, max_attempts: int, max_bytes: int | None = None
) -> Claimed:
    """Take up to `limit` rows, oldest first: new ones, and ones whose lease ran out (checked on
    every claim, so a running worker picks up a dead one's rows). A row whose worker died while
    processing it `max_attempts` times is quarantined instead: a message that kills its worker
    must not kill the next one too. The caller commits before processing the rows.

    Two statements on purpose: PostgreSQL runs `UPDATE … WHERE id IN (SELECT … LIMIT n FOR UPDATE
    SKIP LOCKED)` as a semi-join that re-scans the subquery and skips the rows this very UPDATE
    just changed, so it claimed every new row, not n. Selecting (and locking) the ids first, then
    updating exactly those, keeps the limit on both backends.

    `max_bytes` bounds the messages' total size as well (the first row is always taken): the
    worker holds a batch's mail in memory, parsed, and fifty of the largest messages a desk
    accepts would be over a gigabyte.
    """
    # Rows left by a dead worker first (they are the oldest), then new ones: two index-ordered
    # selects, where one with OR made SQLite sort the whole backlog on every claim.
    now = clock(session)
    taken = [0, 0]  # rows, bytes

    def within(rows: Sequence[Row[Any]]) -> list[Row[Any]]:
        """The rows, oldest first, while their sizes fit in `max_bytes` (the first always does)."""
        kept: list[Row[Any]] = []
        for row in rows:
            if max_bytes is not None and taken[0] and taken[1] + row.size > max_bytes:
                break
            taken[0] += 1
            taken[1] += row.size
            kept.append(row)
        return kept

    left = {
        row.id: row.attempts
        for row in within(
            session.execute(
                select(col(InboxItem.id), col(InboxItem.attempts), col(InboxItem.size))
                .where(col(InboxItem.state) == "processing", expired(col(InboxItem.claimed_until), now))
                .order_by(col(InboxItem.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
        )
    }
    new = (
        [
            row.id
            for row in within(
                session.execute(
                    select(col(InboxItem.id), col(InboxItem.size))
                    .where(col(InboxItem.state) == "new")
                    .order_by(col(InboxItem.id))
                    .limit(limit - len(left))
                    .with_for_update(skip_locked=True)
                ).all()
            )
        ]
        if len(left) < limit and (max_bytes is None or not taken[0] or taken[1] < max_bytes)
        else []
    )
    if not left and not new:
        return Claimed([])
    poison = [row_id for row_id, attempts in left.items() if attempts >= max_attempts]
    if poison:
        session.execute(
            update(InboxItem)
            .where(col(InboxItem.id).in_(poison))
            .values(
                state="failed",
                stage=func.coalesce(col(InboxItem.stage), "worker"),
                reason=f"its worker died (stopped renewing its lease) while processing it on each of"
                f" {max_attempts} attempts; quarantined",
                claimed_by=None,
            )
        )
    ids = [row_id for row_id in left if row_id not in poison] + list(new)
    if not ids:
        return Claimed([], 0, len(poison))
    stmt = (
        update(InboxItem)
        .where(col(InboxItem.id).in_(ids), col(InboxItem.state).in_(("new", "processing")))
        .values(
            state="processing",
            attempts=col(InboxItem.attempts) + 1,
            claimed_by=lease.token,
            claimed_at=now_utc(),
            claimed_until=until(session, lease),
        )
        .returning(col(InboxItem.id))
    )
    return Claimed(sorted(session.execute(stmt).scalars().all()), len(left) - len(poison), len(poison))


def renew(session: Session, lease: Lease) -> int:
    """Push the lease of every row this lease holds forward (store.lease.Keeper's renewal)."""
    result = session.execute(
        update(InboxItem)
        .where(col(InboxItem.state) == "processing", col(InboxItem.claimed_by) == lease.token)
        .values(claimed_until=until(session, lease))
    )
    return cast("CursorResult[Any]", result).rowcount


def hold(session: Session, lease: Lease, ids: Sequence[int]) -> set[int]:
    """Of `ids`, the rows this lease still holds, locked in the caller's transaction — which
    then records their outcome. On PostgreSQL `SELECT … FOR UPDATE` locks them until that
    commit (another worker's SKIP LOCKED claim passes them by; the Keeper renews the lease of
    the batch's rest): an UPDATE renewing them wrote a new version of each wide row and its
    index entries, the costliest statement of a transaction (bench/README.md, "PostgreSQL
    ingest, second round"). On SQLite the transaction holds the write lock, and the rows are
    renewed. A row missing from the answer was taken by another worker after this one's lease
    ran out (it froze, or could not renew): it is that worker's now, and must not be processed
    here too. A Core statement on the table: no ORM object of these rows is in the session to
    keep in step."""
    if not ids:
        return set()
    if session.get_bind().dialect.name == "postgresql":
        held = (
            select(_TABLE.c.id)
            .where(_TABLE.c.id.in_(ids), _TABLE.c.state == "processing", _TABLE.c.claimed_by == lease.token)
            .with_for_update()
        )
        return set(session.connection().execute(held).scalars().all())
    stmt = (
        update(_TABLE)
        .where(
            _TABLE.c.id.in_(ids),
            _TABLE.c.state == "processing",
            _TABLE.c.claimed_by == lease.token,
        )
        .values(claimed_until=until(session, lease))
        .returning(_TABLE.c.id)
    )
    return set(session.connection().execute(stmt).scalars().all())


def first_copies(session: Session, desk: str, message_ids: Sequence[str]) -> dict[str, int]:
    """Message-ID → the first inbox row of `desk` with it, for a whole batch in one query (on the
    desk + Message-ID unique index): a message whose first row is an earlier one reuses a
    Message-ID (pipeline/stages.thread)."""
    if not message_ids:
        return {}
    rows = session.connection().execute(
        select(_TABLE.c.message_id, func.min(_TABLE.c.id))
        .where(_TABLE.c.desk == desk, _TABLE.c.message_id.in_(sorted(set(message_ids))))
        .group_by(_TABLE.c.message_id)
    )
    return {mid: int(first) for mid, first in rows}


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
