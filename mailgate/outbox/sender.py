"""The sender: the only code that sends mail. The outbox only moves forward (STYLE.md habit 9).

pending → (claimed: sending) → sent | pending again with a later next_attempt_at | failed.
A pass claims what is due under this sender's lease (committed before anything goes to the relay;
store/lease.py: a random claim id, renewed by a thread while the pass runs; a row whose lease ran
out — its sender died — is due again for any sender), hands it over on kept-alive
connections, one mail after another per connection, and records every outcome of the pass in the
commit that claims the next pass (or one of its own when nothing more is due). A crash can at
worst resend the mails of the pass in flight (handed over, not yet recorded: at most
`batch_size`), never lose one. A relay that is down is logged once per
outage, not once per try; temporary failures back off exponentially with jitter up to a deadline;
a permanent 5xx is recorded and shown by `mailgate outbox failed`.
"""

from __future__ import annotations

import logging
import random
import threading
import zlib
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import CursorResult, bindparam, or_, select, update
from sqlmodel import Session, col

from mailgate.config import Config
from mailgate.outbox.transports import PermanentFailure, TemporaryFailure, Transport, make_transport
from mailgate.store.db import Database
from mailgate.store.lease import Keeper, Lease, clock, expired, until
from mailgate.store.models import OutboxItem, now_utc, utc

log = logging.getLogger(__name__)
_OUTBOX = OutboxItem.__table__  # type: ignore[attr-defined]


Outcome = tuple[int | None, dict[str, Any]]  # an outbox row's id and its new values
# What a pass reads of each claimed mail: plain rows, not ORM objects (nothing is changed through
# them; the outcomes go by `_write`), so loading a pass costs no per-object bookkeeping in the
# worker process, whose interpreter lock the pipeline shares.
_CLAIMED = select(
    _OUTBOX.c.id,
    _OUTBOX.c.mail_from,
    _OUTBOX.c.recipients,
    _OUTBOX.c.raw,
    _OUTBOX.c.message_id,
    _OUTBOX.c.attempts,
    _OUTBOX.c.created_at,
)


class Claimed(Protocol):
    """A claimed mail as a pass reads it (a row of `_CLAIMED`)."""

    id: int
    mail_from: str
    recipients: list[str]
    raw: bytes
    message_id: str
    attempts: int
    created_at: datetime


# Passes one `run_once` makes at most while mail keeps coming (the loop's bound; `serve` calls
# it again at once while it sends).
_PASSES = 100


class Sender:
    """Claims due mail and hands it to the relay over `[outgoing] connections` lanes at once.

    Each lane is one thread with one kept-alive connection; a recipient's mail always takes the
    same lane, so what one person receives keeps its order. Lanes matter because an SMTP
    transaction waits on the relay's replies (a hosted relay takes 100 ms or more per mail):
    one lane at a time would cap a desk at a handful of mails a second whatever the CPU."""

    def __init__(
        self, db: Database, config: Config, transport: Transport | None = None, *, batch_size: int = 50
    ) -> None:
        self.db = db
        self.config = config
        # A transport given (tests, tools) is one lane; otherwise one transport per lane.
        self.transports: list[Transport] = (
            [transport]
            if transport is not None
            else [make_transport(config.relay) for _ in range(max(1, config.relay.connections))]
        )
        self.transport = self.transports[0]
        self.batch_size = batch_size
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._outage_since: datetime | None = None
        self._lock = threading.Lock()  # _outage_since, shared by the lanes
        p = config.pipeline
        self.lease = Lease.new("sender", p.lease_seconds, p.renew_seconds)  # this run's claim id
        self.keeper = Keeper(db, self.lease, _renew, name="outbox-lease")
        self._lanes: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(len(self.transports), thread_name_prefix="sender-lane")
            if len(self.transports) > 1
            else None
        )

    def backoff(self, attempts: int) -> timedelta:
        r = self.config.relay
        seconds = min(r.retry_base_seconds * (2 ** max(attempts - 1, 0)), r.retry_max_seconds)
        return timedelta(seconds=seconds * random.uniform(0.8, 1.2))

    def _claim(self, now: datetime, outcomes: list[Outcome]) -> list[Claimed]:
        """Record the outcomes of the pass before (if any) and claim the next, in one durable
        commit: a commit holds the write lock, which the pipeline and the intake wait for, and
        waits for the disk."""

        def due(s: Session) -> Any:
            """Pending and due, or being sent by a sender whose lease ran out (it died: what it
            had in hand goes again, at-least-once)."""
            return select(col(OutboxItem.id)).where(
                or_(
                    (col(OutboxItem.state) == "pending") & (col(OutboxItem.next_attempt_at) <= now),
                    (col(OutboxItem.state) == "sending") & expired(col(OutboxItem.claimed_until), clock(s)),
                )
            )

        # Most passes after a send find nothing due: asking first takes no write lock, so the
        # intake does not wait behind an empty claim.
        if not outcomes:
            with self.db.reading() as s:
                if s.execute(due(s).limit(1)).first() is None:
                    return []
        with self.db.session() as s:
            self._write(s, outcomes)
            # Select-and-lock the ids, then update exactly those: in one UPDATE … IN (SELECT …
            # LIMIT n FOR UPDATE SKIP LOCKED) PostgreSQL re-scans the subquery and claims every
            # due row, not n (see store/inbox.claim).
            due_ids = (
                s.execute(
                    due(s)
                    .order_by(col(OutboxItem.id))
                    .limit(self.batch_size)
                    .with_for_update(skip_locked=True)
                )
                .scalars()
                .all()
            )
            if not due_ids:
                return []
            ids = (
                s.execute(
                    update(OutboxItem)
                    .where(col(OutboxItem.id).in_(due_ids))
                    .values(
                        state="sending",
                        claimed_by=self.lease.token,
                        claimed_at=now,
                        claimed_until=until(s, self.lease),
                    )
                    .returning(col(OutboxItem.id))
                )
                .scalars()
                .all()
            )
        if not ids:
            return []
        # The claimed rows (each with its whole mail) are read after the commit, outside the write
        # lock the pipeline and the intake wait for: they are this sender's under its lease now.
        with self.db.reading() as s:
            rows = s.execute(_CLAIMED.where(_OUTBOX.c.id.in_(ids)).order_by(_OUTBOX.c.id)).all()
            return cast("list[Claimed]", rows)

    def _write(self, s: Session, outcomes: list[Outcome]) -> None:
        """Every outcome of a pass in the caller's transaction: one executemany per kind of
        outcome (sent, failed, retry later, put back), not a commit per mail, which kept the
        write lock from the pipeline and the intake once per mail. Only rows this sender still
        holds are written: one another sender took after this one's lease ran out is that
        sender's to record."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for item_id, values in outcomes:
            groups[tuple(sorted(values))].append({"row_id": item_id, "claimed_by": None, **values})
        conn = s.connection()  # Core on the connection: no ORM state is involved
        for keys, rows in groups.items():
            columns: dict[str, Any] = {k: bindparam(k) for k in (*keys, "claimed_by")}
            mine = (_OUTBOX.c.id == bindparam("row_id")) & (_OUTBOX.c.claimed_by == self.lease.token)
            conn.execute(update(_OUTBOX).where(mine).values(columns), rows)

    def run_once(self, now: datetime | None = None) -> int:
        """Send what is due, pass after pass while every mail of a pass goes out; returns how
        many were handed over. The outcomes of a pass go in the commit that claims the next
        (pipelined: one durable commit per pass, not two); the last pass's in one of their own,
        so all that was handed over is recorded when this returns. A crash can at worst resend
        the one pass in flight, as before."""
        now = now or now_utc()
        sent = 0
        outcomes: list[Outcome] = []
        with self.keeper.held():  # from the first claim's commit to the last outcomes' commit
            try:
                for _ in range(_PASSES):
                    items = self._claim(now, outcomes)
                    outcomes = []
                    if not items:
                        break
                    outcomes = self._pass(items, now)
                    n = sum(1 for _, values in outcomes if values["state"] == "sent")
                    sent += n
                    if n < len(items) or self._stop.is_set():
                        break  # the relay is refusing or slow to take it: back off first
                    now = now_utc()
            finally:
                if outcomes:
                    with self.db.session() as s:
                        self._write(s, outcomes)
        return sent

    def _pass(self, items: list[Claimed], now: datetime) -> list[Outcome]:
        """Hand the claimed mails to the relay over the lanes; the outcome of each."""
        n = len(self.transports)
        lanes: list[list[Claimed]] = [[] for _ in range(n)]
        for item in items:
            key = (item.recipients[0] if item.recipients else "").lower().encode()
            lanes[zlib.crc32(key) % n].append(item)
        if self._lanes is None:
            return self._send_lane(self.transports[0], lanes[0], now)
        futures = [
            self._lanes.submit(self._send_lane, transport, lane, now)
            for transport, lane in zip(self.transports, lanes, strict=True)
            if lane
        ]
        return [outcome for f in futures for outcome in f.result()]

    def _send_lane(self, transport: Transport, items: list[Claimed], now: datetime) -> list[Outcome]:
        """Hand this lane's mails to the relay one after another on its one connection; returns
        the outcome of each, for `_write`."""
        outcomes: list[Outcome] = []
        for n, item in enumerate(items):
            try:
                transport.send(item.mail_from, item.recipients, item.raw, item.message_id)
            except PermanentFailure as exc:
                log.warning("outbox %s to %s failed permanently: %s", item.id, ",".join(item.recipients), exc)
                outcomes.append(
                    (
                        item.id,
                        {"state": "failed", "attempts": item.attempts + 1, "last_error": str(exc)[:2000]},
                    )
                )
                continue
            except TemporaryFailure as exc:
                outcomes.append((item.id, self._temporary(item, str(exc), now)))
                # The relay is down or refusing: put the rest back untouched and wait.
                outcomes += [(rest.id, {"state": "pending"}) for rest in items[n + 1 :]]
                return outcomes
            with self._lock:
                back, self._outage_since = self._outage_since, None
            if back is not None:
                log.info("relay is back after %s", now_utc() - back)
            outcomes.append(
                (
                    item.id,
                    {
                        "state": "sent",
                        "attempts": item.attempts + 1,
                        "sent_at": now_utc(),
                        "last_error": None,
                    },
                )
            )
        return outcomes

    def _temporary(self, item: Claimed, error: str, now: datetime) -> dict[str, Any]:
        """The new values of a mail the relay did not take this time: retry later, or give up."""
        attempts = item.attempts + 1
        deadline = utc(item.created_at) + timedelta(seconds=self.config.relay.give_up_after_seconds)
        with self._lock:
            first, self._outage_since = self._outage_since is None, self._outage_since or now
        if first:
            log.warning("cannot hand mail to the relay, will retry with backoff: %s", error)
        if now >= deadline:
            return {"state": "failed", "attempts": attempts, "last_error": f"gave up: {error}"[:2000]}
        return {
            "state": "pending",
            "attempts": attempts,
            "last_error": error[:2000],
            "next_attempt_at": now + self.backoff(attempts),
        }

    def serve(self, poll_seconds: float = 1.0) -> None:
        """Loop until stop(). Mail a dead sender had in hand is found by the claims themselves
        once its lease runs out."""
        log.info("sender claims as %s", self.lease.token)
        while not self._stop.is_set():
            try:
                n = self.run_once()
            except Exception as exc:  # noqa: BLE001 - the database may be briefly unavailable
                log.error("sender pass failed, will retry: %s", exc)
                n = 0
            if n:
                continue
            self.wake.wait(poll_seconds)
            self.wake.clear()
        if self._lanes is not None:
            self._lanes.shutdown(wait=True)
        for transport in self.transports:
            transport.close()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        self.keeper.stop()


def _renew(session: Session, lease: Lease) -> int:
    """Push the lease of every row this sender holds forward (store.lease.Keeper's renewal)."""
    result = session.execute(
        update(OutboxItem)
        .where(col(OutboxItem.state) == "sending", col(OutboxItem.claimed_by) == lease.token)
        .values(claimed_until=until(session, lease))
    )
    return cast("CursorResult[Any]", result).rowcount


def retry_failed(db: Database, item_id: int | None = None) -> int:
    """`mailgate outbox retry`: failed rows back to pending, due now."""
    with db.session() as s:
        stmt = update(OutboxItem).where(col(OutboxItem.state) == "failed")
        if item_id is not None:
            stmt = stmt.where(col(OutboxItem.id) == item_id)
        done = s.execute(stmt.values(state="pending", next_attempt_at=now_utc(), last_error=None))
        return cast("CursorResult[Any]", done).rowcount  # an UPDATE's result is a CursorResult
