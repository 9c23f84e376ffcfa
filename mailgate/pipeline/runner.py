"""The one path through the pipeline: claim a batch, parse each message, process the batch in one
transaction, record each outcome.

    claim    up to `batch_size` inbox rows, oldest first: new ones and ones whose worker's lease
             ran out (committed: → processing, attempts + 1, under this run's lease, renewed by
             a thread while the batch is in hand: store/lease.py)
    parse    each message, before the transaction: parsing reads no table, so SQLite's write
             lock stays free for the intake meanwhile
    process  the messages together in one transaction that first makes sure this run still
             holds their rows (`inbox.hold`), each inside a SAVEPOINT: a message that
             fails or stops rolls back only its own writes (group commit: one commit for many;
             a transaction that has held the write lock `HOLD_SECONDS` commits, and the rest of
             the batch goes on in the next)
    record   done (disposition + trace) or failed (stage, reason, traceback), in the same commit

The daemon's worker and `mailgate ingest` run this same path; a batch is whatever is waiting, up
to `batch_size`, so an idle desk commits one message at a time and a backlog many at once.
Expected outcomes are `ProcessingError`s and become a disposition; anything else is caught once,
here, and never stops the loop (STYLE.md habit 3).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlmodel import Session, col

from mailgate.config import Config
from mailgate.outbox.render import Renderer
from mailgate.pipeline import release, stages
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import ProcessingError, Unattributable
from mailgate.pipeline.handlers import Handler, Services, registry
from mailgate.pipeline.handlers.common import store_attachments
from mailgate.pipeline.notify import Notifier
from mailgate.pipeline.outcomes import Disposition
from mailgate.pipeline.sla_apply import SlaService
from mailgate.ruleset import RulesSource
from mailgate.store import deferred, inbox
from mailgate.store.blobs import BlobStore
from mailgate.store.db import Database
from mailgate.store.kinds import AdminKind
from mailgate.store.lease import Keeper, Lease
from mailgate.store.models import InboxItem, now_utc
from mailgate.store.repo import Repo, write_kept

log = logging.getLogger(__name__)

# Messages claimed and processed together at most. Bigger batches save commits; smaller ones keep
# the write lock (which the intake needs for every 250) held for shorter, and fewer parsed
# messages in memory at once.
BATCH_SIZE = 50
# The mail a batch claims at most, in bytes (always at least one message): the worker holds a
# batch's messages in memory and parsed, and a burst of the largest messages a desk accepts
# would otherwise take it past a gigabyte. Ordinary mail (tens of KB) still fills BATCH_SIZE.
BATCH_BYTES = 8 * 2**20
# Messages parsed before a transaction asks for the write lock; more are parsed while another
# writer holds it. Enough for a transaction's worth (`HOLD_SECONDS`), so that an idle desk's
# batches still commit many messages at once.
READY = 10
# A batch's transaction commits early, and the rest of the batch goes on in the next one, once it
# has held the write lock this long: the intake's commit before each 250 waits for it.
HOLD_SECONDS = 0.05
# PostgreSQL has no single write lock: the intake never waits for the pipeline's transaction,
# and each commit is a round trip and a WAL flush. Its transactions stop at this bound instead,
# which keeps what they hold (the desk's ticket counter row, which another worker making a
# ticket waits for) and what their mail waits for (it goes out after the commit) short.
HOLD_SECONDS_POSTGRESQL = 0.5

_INBOX = InboxItem.__table__  # type: ignore[attr-defined]
_OUTCOME = ("state", "disposition", "reason", "stage", "trace", "ticket_id", "processed_at", "claimed_by")
# Records the outcome of every message of a batch, in one executemany.
_FINISH = update(_INBOX).where(_INBOX.c.id == bindparam("row_id")).values({c: bindparam(c) for c in _OUTCOME})


Claimed = tuple[InboxItem, bytes | None]  # a claimed row and its message (None: the bytes are missing)


@dataclass
class Failed:
    """A message that stopped (a `ProcessingError`) or crashed, waiting to be recorded."""

    ctx: Context
    exc: Exception
    trace: str  # the traceback, taken where it was caught


def _outcome(ctx: Context, state: str, reason: str | None, stage: str | None) -> dict[str, Any]:
    """The row's final values (also set on the detached row, for callers and the log line)."""
    values: dict[str, Any] = {
        "state": state,
        "disposition": ctx.disposition,
        "reason": reason,
        "stage": stage,
        "trace": ctx.trace,
        "ticket_id": ctx.ticket.id if ctx.ticket is not None else None,
        "processed_at": now_utc(),
        "claimed_by": None,
    }
    for key, value in values.items():
        setattr(ctx.item, key, value)
    return {"row_id": ctx.item.id, **values}


def _item(ctx: Context | Failed) -> InboxItem:
    return ctx.item if isinstance(ctx, Context) else ctx.ctx.item


class Runner:
    """Claims a batch of inbox rows, parses each, and processes them in one transaction.

    The daemon's worker and `mailgate ingest` both drive it through `run_once`; there is no
    other way through the pipeline."""

    def __init__(self, db: Database, config: Config, *, batch_size: int = BATCH_SIZE) -> None:
        self.db = db
        self.config = config
        self.batch_size = batch_size
        blobs = BlobStore(config.state_dir / "attachments")
        self.rules = RulesSource(config.rules_dir, config.templates_dir, config.desks)
        self.renderer = Renderer(self.rules)
        self.notifier = Notifier(config, self.renderer, rules=self.rules)
        self.services = Services(config, self.notifier, self.rules, blobs=blobs)
        self.handlers: list[Handler] = registry(self.services)
        self.sla = SlaService(config, self.rules, self.notifier)
        self.after_commit: list[Callable[[], None]] = []  # e.g. wake the sender
        # This run's claim id, new every time a Runner is made (never a PID: store/lease.py).
        p = config.pipeline
        self.lease = Lease.new("pipeline", p.lease_seconds, p.renew_seconds)
        self.keeper = Keeper(db, self.lease, inbox.renew, name="inbox-lease")
        self.wake = threading.Event()
        self._stop = threading.Event()

    # -- one message ----------------------------------------------------------------------------
    def begin(self, item: InboxItem, raw: bytes | None) -> Context | Failed:
        """The context of a claimed message, parsed. Parsing reads no table, so it runs before
        the batch's transaction, outside SQLite's write lock. A message that cannot get this far
        comes back as `Failed`, to be recorded inside the transaction."""
        ctx = Context(item=item, desk=self.config.desk_by_key(item.desk), raw=raw or b"")  # type: ignore[arg-type]
        try:
            if raw is None:
                raise RuntimeError(f"inbox row {item.id} has no message bytes (inboxraw)")
            if ctx.desk is None:
                raise ProcessingError(f"desk {item.desk} is no longer configured")
            ctx.stage = "parse"
            with ctx.timed("parse"):
                stages.parse(ctx, self.config, None)  # type: ignore[arg-type]
            # The attachments go into the blob store now, each with its fsync, while the write
            # lock is free for the intake (content-addressed: a message that ends up not stored
            # leaves a file nothing names).
            if ctx.mail.attachments:
                ctx.stage = "attachments"
                with ctx.timed("attachments"):
                    store_attachments(ctx, self.services)
        except Exception as exc:  # noqa: BLE001 - sorted into the two tiers by `_record_failure`
            return Failed(ctx, exc, traceback.format_exc())
        return ctx

    def _apply(self, ctx: Context, session: Session) -> None:
        """The stages after parse and the handler, writing through one Repo on `session`."""
        repo = Repo(session, buffered=True)
        for name in stages.ORDER:
            ctx.stage = name
            with ctx.timed(name):  # each stage's duration, for /metrics (Context.timed)
                getattr(stages, name)(ctx, self.config, repo)
        ctx.stage = "handle"
        handler = next(h for h in self.handlers if h.can_handle(ctx))
        ctx.note("handle", f"handler: {handler.name}")
        ctx.stage = handler.name
        with ctx.timed(handler.name):
            handler.execute(ctx, repo)
        release.record(ctx, repo)  # a held message an admin released: who, on its ticket
        if ctx.ticket is not None:
            # SLA due times (pipeline/sla_apply.py)
            with ctx.timed("sla"):
                self.sla.refresh(
                    repo, ctx.ticket, ctx.desk, new=ctx.disposition == Disposition.TICKET_CREATED
                )
        repo.flush_pending()  # the queued mail's rows, one executemany per table

    def _record_failure(self, failed: Failed, session: Session) -> dict[str, Any]:
        """An expected outcome (`ProcessingError`) is recorded as the message's disposition; anything
        else quarantines the message with stage, reason and traceback. Either way the message's own
        writes were rolled back, so only a ticket that existed before it is named."""
        ctx, exc = failed.ctx, failed.exc
        if ctx.ticket is not None and not ctx.hit:
            ctx.ticket = None
        if isinstance(exc, Unattributable):  # needs a human: quarantined, with its reason
            ctx.disposition = exc.disposition
            ctx.note(ctx.stage, f"quarantined: {exc.reason}")
            log.warning("message %s quarantined at %s: %s", ctx.item.id, ctx.stage, exc.reason)
            self.notifier.send_admin(
                Repo(session),
                AdminKind.QUARANTINE,
                f"mailgate: message {ctx.item.id} quarantined at {ctx.stage}",
                f"Message {ctx.item.id} (desk {ctx.item.desk}) is quarantined: {exc.reason}.\n\n"
                f"See it with `mailgate inbox show {ctx.item.id} --raw`.\n",
            )
            return _outcome(ctx, "failed", exc.reason, ctx.stage)
        if isinstance(exc, ProcessingError):
            ctx.disposition = exc.disposition
            ctx.note(ctx.stage, f"stopped: {exc.reason}")
            if exc.admin_notice:
                self.notifier.send_admin(Repo(session), str(exc.disposition), *exc.admin_notice)
            return _outcome(ctx, "done", exc.reason, None)
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        ctx.note(ctx.stage, f"failed: {reason}")
        ctx.trace.append({"stage": ctx.stage, "decision": "traceback", "detail": failed.trace[-4000:]})
        log.error("message %s quarantined at %s: %s", ctx.item.id, ctx.stage, reason)
        self.notifier.send_admin(
            Repo(session),
            AdminKind.QUARANTINE,
            f"mailgate: message {ctx.item.id} quarantined at {ctx.stage}",
            f"Message {ctx.item.id} (from {ctx.mail.from_addr or ctx.item.mail_from or '?'},"
            f" desk {ctx.item.desk}) could not be processed and is quarantined.\n\n"
            f"Stage:  {ctx.stage}\nReason: {reason}\n\n"
            f"See it with `mailgate inbox show {ctx.item.id}`; once the cause is fixed,\n"
            f"`mailgate inbox retry {ctx.item.id}` processes it again.\n",
        )
        return _outcome(ctx, "failed", reason, ctx.stage)

    # -- a batch --------------------------------------------------------------------------------
    def process_batch(self, items: list[Claimed]) -> None:
        """Parse the messages, and process them together in one transaction (group commit; a
        second one after `HOLD_SECONDS`), each inside a SAVEPOINT: a message that fails or stops
        rolls back only its own writes. Parsing needs no lock: `READY` messages are parsed
        before a transaction asks for SQLite's write lock, and more while another writer (the
        intake, the sender) holds it; the transaction takes what is parsed by then. On
        PostgreSQL the next transaction's messages are parsed during this one, one after each
        message, while the server does that message's writes. If a transaction as a whole fails
        (its commit, the connection), its messages and the rest are done again in a transaction
        each, so one bad message cannot hold the others back."""
        waiting = list(items)  # claimed, not parsed yet
        ready: list[Context | Failed] = []  # parsed, not processed yet
        ahead: list[Context | Failed] = []  # parsed during a transaction, for the next one

        def parse_next() -> bool:
            if not waiting:
                return False
            ready.append(self.begin(*waiting.pop(0)))
            return True

        def parse_ahead() -> None:
            if waiting:
                ahead.append(self.begin(*waiting.pop(0)))

        # PostgreSQL: while the server works on a message's last writes (sent, not waited for:
        # store/deferred.py `send`), this process parses a message of the next transaction.
        between = None if self.db.is_sqlite else parse_ahead
        while waiting or ready or ahead:
            ready.extend(ahead)
            ahead.clear()
            while len(ready) < READY and parse_next():
                pass
            try:
                with self.db.writer(while_waiting=parse_next):
                    done = self._transaction(ready, between)
                del ready[:done]
                self._committed()
            except Exception as exc:  # noqa: BLE001 - nothing of it was committed; try one by one
                by_id = {item.id: (item, raw) for item, raw in items}
                rest = [by_id[_item(c).id] for c in ready + ahead] + waiting
                if len(rest) == 1:
                    raise
                log.warning("a transaction of a batch failed (%s): one transaction per message", exc)
                for item, raw in rest:
                    self._transaction([self.begin(item, raw)])
                    self._committed()
                return

    def _earlier_copies(self, session: Session, contexts: list[Context | Failed]) -> None:
        """Which of these messages reuse a Message-ID an earlier inbox row of their desk has: one
        query per desk for all of them (stages.thread notes it and decides what it means)."""
        wanted: dict[str, list[Context]] = {}
        for ctx in contexts:
            if isinstance(ctx, Context) and ctx.mail.message_id and ctx.item.id is not None:
                wanted.setdefault(ctx.desk.key, []).append(ctx)
        for desk, group in wanted.items():
            first = inbox.first_copies(session, desk, [c.mail.message_id for c in group if c.mail.message_id])
            for ctx in group:
                row = first.get(ctx.mail.message_id or "")
                ctx.earlier_copy = (
                    row if row is not None and ctx.item.id is not None and row < ctx.item.id else None
                )

    def _committed(self) -> None:
        """After each commit: what it queued can go out now (the sender is woken)."""
        for fn in self.after_commit:
            fn()

    def _transaction(
        self, contexts: list[Context | Failed], between: Callable[[], None] | None = None
    ) -> int:
        """One transaction over the first of `contexts`, until they are all done or it has held the
        write lock `HOLD_SECONDS` (PostgreSQL: `HOLD_SECONDS_POSTGRESQL`); returns how many it did
        (at least one). `between` runs after each message's work, its writes sent but not waited
        for, before its SAVEPOINT's RELEASE waits for the server to have done them."""
        consumed = 0
        hold = HOLD_SECONDS if self.db.is_sqlite else HOLD_SECONDS_POSTGRESQL
        with self.db.session(durable=False) as session:
            held = inbox.hold(session, self.lease, [i for c in contexts if (i := _item(c).id) is not None])
            self._earlier_copies(session, contexts)
            start = time.perf_counter()
            for ctx in contexts:
                t0 = time.perf_counter()
                if consumed and t0 - start > hold:
                    break
                consumed += 1
                if _item(ctx).id not in held:
                    log.warning(
                        "message %s: another worker took it after this one's lease ran out; left to it",
                        _item(ctx).id,
                    )
                    continue
                if isinstance(ctx, Context):
                    savepoint = session.begin_nested()
                    try:
                        self._apply(ctx, session)
                        if between is not None:
                            deferred.send(session)  # its last writes: the server starts on them
                            between()
                        savepoint.commit()
                    except Exception as exc:  # noqa: BLE001 - recorded below, never stops the batch
                        # The objects of the rolled-back writes must never be flushed. Detached
                        # first, as they are, the rollback cannot expire what the outcome and the
                        # log still read of them (a ticket's id and key).
                        session.expunge_all()
                        savepoint.rollback()
                        ctx = Failed(ctx, exc, traceback.format_exc())
                    else:
                        write_kept(session, _FINISH, _outcome(ctx, "done", None, None))
                if isinstance(ctx, Failed):
                    write_kept(session, _FINISH, self._record_failure(ctx, session))
                    ctx = ctx.ctx
                # Each outcome is written at once, in the same commit as its work: a later
                # message of the batch may ask what became of an earlier one (the flood limit
                # tells the admin only when no earlier mail of that sender was held). On
                # PostgreSQL it goes with the next statement's round trip (store/deferred.py),
                # before anything after it is run.
                self._log(ctx, t0)
        return consumed

    def _log(self, ctx: Context, t0: float) -> None:
        if not log.isEnabledFor(logging.INFO):  # the record's fields cost more than the call
            return
        item = ctx.item
        ms = (time.perf_counter() - t0) * 1000
        message_id = ctx.mail.message_id
        key = ctx.ticket.key if ctx.ticket else None
        log.info(
            "message %s %s ticket=%s disposition=%s %.1fms",
            item.id,
            f"<{message_id}>" if message_id else "(no Message-ID)",
            key or "-",
            ctx.disposition or item.state,
            ms,
            extra={
                "fields": {
                    "inbox_id": item.id,
                    "desk": item.desk,
                    "source": item.source,
                    "message_id": message_id,
                    "ticket": key,
                    "disposition": ctx.disposition or item.state,
                    "stage": item.stage,
                    "reason": item.reason,
                    "ms": round(ms, 1),
                }
            },
        )

    # -- batches --------------------------------------------------------------------------------
    def refresh_rules(self) -> None:
        """Pick up rules edits; a refused edit is logged and mailed to the admin, once per edit."""
        refused = self.rules.poll()
        if refused is None:
            return
        with self.db.session() as session:
            self.notifier.send_admin(
                Repo(session),
                AdminKind.RULES_REFUSED,
                "mailgate: a rules edit was refused, the previous rules stay in force",
                "The last edit of the rules files has errors, so mailgate keeps using the previous rules.\n\n"
                + "\n".join(refused.lines())
                + "\n\nFix the lines above; `mailgate rules check` shows the same list.\n",
            )

    def _claim(self) -> list[Claimed]:
        """Claim a batch (committed) and read its rows and mail."""
        with self.db.reading() as session:  # most wake-ups after a batch find nothing new
            if not inbox.has_new(session):
                return []
        with self.db.session(durable=False) as session:
            claimed = inbox.claim(
                session, self.batch_size, self.lease, self.config.limits.max_attempts, BATCH_BYTES
            )
        if claimed.taken_over or claimed.quarantined:
            log.warning(
                "recovered %d message(s) whose worker stopped renewing its lease, quarantined %d",
                claimed.taken_over,
                claimed.quarantined,
            )
        if claimed.quarantined:
            limit = self.config.limits.max_attempts
            with self.db.session() as session:
                self.notifier.send_admin(
                    Repo(session),
                    AdminKind.QUARANTINE,
                    f"mailgate: {claimed.quarantined} message(s) quarantined after their worker died",
                    f"The worker processing {claimed.quarantined} message(s) died {limit} times each;"
                    " they are quarantined.\n\nSee them with `mailgate inbox failed`;"
                    " `mailgate inbox retry ID` processes one again.\n",
                )
        ids = claimed.ids
        if not ids:
            return []
        with self.db.reading() as session:  # the raw mail is read outside the write lock
            rows = session.execute(
                select(InboxItem).where(col(InboxItem.id).in_(ids)).order_by(col(InboxItem.id))
            ).scalars()
            raws = inbox.raws(session, ids)
            return [(item, raws.get(item.id)) for item in rows if item.id is not None]

    def run_once(self) -> int:
        """Claim and process one batch: whatever is waiting, up to `batch_size` messages.
        Returns how many messages were processed."""
        self.refresh_rules()
        with self.keeper.held():  # from the claim's commit to the last outcome's
            items = self._claim()
            if not items:
                return 0
            self.process_batch(items)
        return len(items)

    def run_until_idle(self, max_batches: int = 10_000) -> int:
        total = 0
        for _ in range(max_batches):
            n = self.run_once()
            if not n:
                break
            total += n
        return total

    # -- the thread -----------------------------------------------------------------------------
    def serve(self, poll_seconds: float = 2.0) -> None:
        """Loop until stop(): process while there is work, then wait for a wake-up or the poll.
        Rows a dead worker left are found by the claims themselves once their lease runs out, so
        the poll also bounds how long after that they wait."""
        log.info("pipeline claims as %s", self.lease.token)
        while not self._stop.is_set():
            try:
                n = self.run_once()
            except Exception as exc:  # noqa: BLE001 - e.g. database briefly unavailable
                log.error("pipeline batch failed, will retry: %s", exc)
                n = 0
                self._stop.wait(poll_seconds)
            if n:
                continue
            self.wake.wait(poll_seconds)
            self.wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        self.keeper.stop()
