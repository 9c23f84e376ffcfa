"""The worker that drains the inbox through the stages, oldest first.

A batch of claimed rows is processed in ONE transaction, each message inside its own savepoint:
a message that fails rolls back only its own writes and is quarantined with stage and reason,
the others commit together (group commit: one fsync for the batch). Expected outcomes are
`ProcessingError`s and become a disposition; anything else is caught once, here, and never
stops the loop (STYLE.md habit 3).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable

from sqlalchemy import bindparam, select, update
from sqlmodel import Session

from mailgate.config import Config
from mailgate.outbox.render import Renderer
from mailgate.pipeline import stages
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import ProcessingError
from mailgate.pipeline.handlers import Handler, Services, registry
from mailgate.pipeline.notify import Notifier
from mailgate.pipeline.parse_ahead import ParseAhead
from mailgate.pipeline.sla_apply import SlaService
from mailgate.ruleset import RulesSource
from mailgate.store import inbox
from mailgate.store.blobs import BlobStore
from mailgate.store.db import Database
from mailgate.store.models import InboxItem, now_utc
from mailgate.store.repo import Repo

log = logging.getLogger(__name__)


# Built once: the statement that records a message's outcome runs for every message.
_INBOX = InboxItem.__table__  # type: ignore[attr-defined]
_FINISH = (
    update(_INBOX)
    .where(_INBOX.c.id == bindparam("row_id"))
    .values(
        {
            c: bindparam(c)
            for c in (
                "state",
                "disposition",
                "reason",
                "stage",
                "trace",
                "ticket_id",
                "processed_at",
                "claimed_by",
            )
        }
    )
)


Claimed = tuple[InboxItem, bytes | None]  # a claimed row and its message (None: the bytes are missing)


class _GroupBroken(Exception):
    """The group transaction can no longer be used; carries how far the group had got."""


class Runner:
    def __init__(
        self,
        db: Database,
        config: Config,
        *,
        batch_size: int = 50,
        group_ms: float = 0,
        parse_ahead: bool = False,
    ) -> None:
        self.db = db
        self.config = config
        self.batch_size = batch_size
        self.group_ms = group_ms  # > 0: group commit (process_group); 0: a transaction per message
        # A helper process parses a batch ahead (pipeline/parse_ahead.py); started on the first
        # batch of more than one message, so a quiet daemon never starts it (or by start_helper).
        blobs = BlobStore(config.state_dir / "attachments")
        lim = config.limits
        self.ahead = (
            ParseAhead(
                config.own_addresses,
                blobs=blobs.root,
                limits=(lim.max_attachment_size, lim.max_attachments),
            )
            if parse_ahead
            else None
        )
        self.rules = RulesSource(config.rules_dir, config.templates_dir, config.desks)
        self.renderer = Renderer(self.rules)
        self.notifier = Notifier(config, self.renderer)
        self.services = Services(config, self.notifier, self.rules, blobs=blobs)
        self.handlers: list[Handler] = registry(self.services)
        self.sla = SlaService(config, self.rules, self.notifier)
        self.after_commit: list[Callable[[], None]] = []  # e.g. wake the sender
        self._next: list[Claimed] = []  # group mode with the helper: the batch claimed ahead
        self.wake = threading.Event()
        self._stop = threading.Event()

    # -- one message ----------------------------------------------------------------------------
    def _apply(self, ctx: Context, session: Session) -> None:
        """The stages after parse and the handler, writing through one Repo on `session`."""
        repo = Repo(session)
        for name in stages.ORDER:
            ctx.stage = name
            getattr(stages, name)(ctx, self.config, repo)
        ctx.stage = "handle"
        handler = next(h for h in self.handlers if h.can_handle(ctx))
        ctx.note("handle", f"handler: {handler.name}")
        ctx.stage = handler.name
        handler.execute(ctx, repo)
        if ctx.ticket is not None:
            # SLA due times (pipeline/sla_apply.py)
            self.sla.refresh(repo, ctx.ticket, ctx.desk, new=ctx.disposition == "ticket-created")
        self._finish(session, ctx.item, ctx, "done", None, None)

    def _begin(self, item: InboxItem, raw: bytes | None, ahead: bool = False) -> Context:
        """Context for a claimed message, parsed (parsing reads no table: done outside the lock,
        or ahead of time by the parse helper)."""
        desk = self.config.desk_by_key(item.desk)
        ctx = Context(item=item, desk=desk, raw=raw or b"")  # type: ignore[arg-type]
        if raw is None:
            raise RuntimeError(f"inbox row {item.id} has no message bytes (inboxraw)")
        if ahead and self.ahead is not None:
            ctx.parsed = self.ahead.take(item.id)  # None: not parsed there, parse here
        if desk is None:
            raise ProcessingError(f"desk {item.desk} is no longer configured")
        ctx.stage = "parse"
        stages.parse(ctx, self.config, None)  # type: ignore[arg-type]
        return ctx

    def _stopped(self, ctx: Context, session: Session, exc: ProcessingError) -> None:
        """An expected outcome: record it (the message's own writes were rolled back)."""
        ctx.disposition = exc.disposition
        ctx.note(ctx.stage, f"stopped: {exc.reason}")
        # Only a ticket that existed before this message: anything made here was rolled back.
        if ctx.ticket is not None and not ctx.hit:
            ctx.ticket = None
        if exc.admin_notice:
            self.notifier.send_admin(Repo(session), *exc.admin_notice)
        self._finish(session, ctx.item, ctx, "done", exc.reason, None)

    def _crashed(self, ctx: Context, session: Session, exc: Exception) -> None:
        """Anything unexpected: quarantine with stage, reason and traceback; never stop the loop."""
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        ctx.note(ctx.stage, f"failed: {reason}")
        ctx.trace.append(
            {"stage": ctx.stage, "decision": "traceback", "detail": traceback.format_exc()[-4000:]}
        )
        log.error("message %s quarantined at %s: %s", ctx.item.id, ctx.stage, reason)
        if ctx.ticket is not None and not ctx.hit:
            ctx.ticket = None
        self._finish(session, ctx.item, ctx, "failed", reason, ctx.stage)

    def process(self, item: InboxItem, raw: bytes | None, ahead: bool = False) -> Context:
        """Process one claimed message in its own transaction: short transactions keep the write
        lock free for the intake. A ProcessingError or a crash rolls the message's writes back
        and records the outcome in a fresh transaction."""
        t0 = time.perf_counter()
        ctx = Context(item=item, desk=self.config.desk_by_key(item.desk))  # type: ignore[arg-type]
        try:
            ctx = self._begin(item, raw, ahead)
            with self.db.session(durable=False) as session:
                self._apply(ctx, session)
        except ProcessingError as exc:
            with self.db.session(durable=False) as session:
                self._stopped(ctx, session, exc)
        except Exception as exc:  # noqa: BLE001 - the one catch-all
            with self.db.session(durable=False) as session:
                self._crashed(ctx, session, exc)
        self._log(ctx, t0)
        return ctx

    def process_group(self, items: list[Claimed], *, handed_over: bool = False) -> None:
        """Group commit for bulk work (`mailgate ingest --mbox`): messages share one transaction
        until `group_ms` have passed, each inside a SAVEPOINT, so a failing message rolls back
        only its own writes. One fsync per group instead of one per message; the write lock is
        held longer, which is why the daemon, which answers SMTP clients, does not use it.
        `handed_over`: the items are with the parse helper already."""
        # The next messages are parsed on the other core while this one is handled.
        if len(items) > 1 and not handed_over:
            self._parse_ahead(items)
        i = 0
        while i < len(items):
            first = i
            try:
                i = self._group(items, first)
            except _GroupBroken as broken:
                # The session itself failed (e.g. a flush error): the whole group was rolled back.
                # Do its messages again one by one, each in its own transaction.
                end = broken.args[0]
                for item, raw in items[first:end]:
                    self.process(item, raw)
                i = end

    def _group(self, items: list[Claimed], first: int) -> int:
        """One group transaction from `items[first]`; returns the index after the last one done."""
        i = first
        start = time.perf_counter()
        with self.db.session(durable=False) as session:
            conn = session.connection()
            while i < len(items) and (i == first or (time.perf_counter() - start) * 1000 < self.group_ms):
                item, raw = items[i]
                i += 1
                t0 = time.perf_counter()
                ctx = Context(item=item, desk=self.config.desk_by_key(item.desk))  # type: ignore[arg-type]
                conn.exec_driver_sql("SAVEPOINT mg_message")
                try:
                    ctx = self._begin(item, raw, ahead=True)
                    self._apply(ctx, session)
                    session.flush()
                except Exception as exc:  # noqa: BLE001 - sorted below
                    if not session.is_active:
                        raise _GroupBroken(i) from exc
                    conn.exec_driver_sql("ROLLBACK TO SAVEPOINT mg_message")
                    session.expunge_all()  # objects of the rolled-back writes must never be flushed
                    if isinstance(exc, ProcessingError):
                        self._stopped(ctx, session, exc)
                    else:
                        self._crashed(ctx, session, exc)
                conn.exec_driver_sql("RELEASE SAVEPOINT mg_message")
                self._log(ctx, t0)
        return i

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

    @staticmethod
    def _finish(
        session: Session, item: InboxItem, ctx: Context, state: str, reason: str | None, stage: str | None
    ) -> None:
        values = {
            "state": state,
            "disposition": ctx.disposition,
            "reason": reason,
            "stage": stage,
            "trace": ctx.trace,
            "ticket_id": ctx.ticket.id if ctx.ticket is not None else None,
            "processed_at": now_utc(),
            "claimed_by": None,
        }
        session.connection().execute(_FINISH, {"row_id": item.id, **values})  # no ORM state
        for key, value in values.items():  # keep the detached row in step for callers and tests
            setattr(item, key, value)

    # -- batches --------------------------------------------------------------------------------
    def refresh_rules(self) -> None:
        """Pick up rules edits; a refused edit is logged and mailed to the admin, once per edit."""
        refused = self.rules.poll()
        if refused is None:
            return
        with self.db.session() as session:
            self.notifier.send_admin(
                Repo(session),
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
            ids = inbox.claim(session, self.batch_size)
        if not ids:
            return []
        with self.db.reading() as session:  # the raw mail is read outside the write lock
            rows = session.execute(
                select(InboxItem).where(InboxItem.id.in_(ids)).order_by(InboxItem.id)
            ).scalars()
            raws = inbox.raws(session, ids)
            return [(item, raws.get(item.id)) for item in rows]  # type: ignore[arg-type]

    def _run_group_ahead(self) -> int:
        """Group commit with the parse helper: the batch after this one is claimed before this
        one is processed and handed to the helper behind it, so the helper parses on across the
        boundary. Handing each batch over only when it came up had the worker wait at every
        boundary for the helper to receive the batch and catch up, message by message (20 to 40
        waits and 0.1 to 0.2 s in an ingest of 1,000). Two batches are claimed at a time; a
        crash leaves both to `recover`, as it left one."""
        items = self._next or self._claim()
        handed_over = bool(self._next)
        if not items:
            return 0
        if not handed_over:
            self._parse_ahead(items)
        self._next = self._claim()
        self._parse_ahead(self._next, behind=True)
        self.process_group(items, handed_over=True)
        for fn in self.after_commit:
            fn()
        return len(items)

    def run_once(self) -> int:
        """Claim and process one batch. Returns how many messages were processed."""
        self.refresh_rules()
        if self.group_ms > 0 and self.ahead is not None:
            return self._run_group_ahead()
        items = self._claim()
        if self.group_ms > 0 and items:
            self.process_group(items)
            for fn in self.after_commit:
                fn()
            return len(items)
        # A backlog: the rest of the batch is parsed ahead on the other core.
        self._parse_ahead(items[1:])
        for j, (item, raw) in enumerate(items):
            self.process(item, raw, ahead=j > 0)
            for fn in self.after_commit:
                fn()
        return len(items)

    def _parse_ahead(self, items: list[Claimed], *, behind: bool = False) -> None:
        if self.ahead is not None and items:
            self.ahead.submit([(item.id, raw) for item, raw in items if raw is not None], behind=behind)

    def run_until_idle(self, max_batches: int = 10_000) -> int:
        total = 0
        for _ in range(max_batches):
            n = self.run_once()
            if not n:
                break
            total += n
        return total

    def recover(self) -> None:
        with self.db.session() as session:
            requeued, quarantined = inbox.recover(session, self.config.limits.max_attempts)
        if requeued or quarantined:
            log.warning("recovered %d interrupted message(s), quarantined %d", requeued, quarantined)

    # -- the thread -----------------------------------------------------------------------------
    def serve(self, poll_seconds: float = 2.0) -> None:
        """Loop until stop(): process while there is work, then wait for a wake-up or the poll."""
        self.recover()
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

    def start_helper(self) -> None:
        """Start the parse helper ahead of the first batch (only with parse_ahead): for a caller
        that knows a backlog is coming, so the helper's start-up overlaps its own work."""
        if self.ahead is not None:
            self.ahead.start()

    def close(self) -> None:
        """Stop the parse helper (call after the serve thread has ended)."""
        if self.ahead is not None:
            self.ahead.close()
