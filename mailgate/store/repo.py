"""Ticket-side queries and writes, bound to one session (one transaction).

The pipeline's `apply` step does all its writes through one `Repo`, so a ticket change, its
message, its audit events and the outbox rows it causes commit together or not at all.

Two ways in, both public SQLAlchemy: the ticket is an ORM object (made by an ORM INSERT …
RETURNING, loaded by an ORM SELECT, changed by setting attributes, which the session's flush
writes; the times the pipeline sets on nearly every message go by `set_ticket`'s prebuilt
UPDATE, which expires them on the object); the rows written many times per message
(events, messages, outgoing mail, thread references, participants, the send log) and the small
counts are module-level Core statements run with `Connection.execute`, whose compiled form
SQLAlchemy caches, so each is compiled once per process. This module must not reach into
SQLAlchemy's internals (compiled bind processors, instance state): a minor release may change
them without warning (issue 24).

On SQLite the pipeline's writes and its few counts go around SQLAlchemy's per-call work: each
prebuilt statement is compiled once by SQLAlchemy into its SQL text, and run as that text on the
session's own DB-API connection (in its transaction and SAVEPOINT), each value through its
column type's bind processor (`Plain`; all public API: `compile`, `positiontup`, `binds`,
`dialect_impl`, `bind_processor`). The per-call work of `Connection.execute` cost several times
what SQLite itself took for these statements (bench/README.md, "Fewer calls"). The pipeline's
Repo also keeps the message row and its audit events with the queued mail, and writes each table
with one executemany at the end of the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    String,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.engine import Dialect, Result
from sqlmodel import Session, col

from mailgate.store import deferred
from mailgate.store.db import insert_for
from mailgate.store.kinds import EventKind, Role
from mailgate.store.models import (
    AdminNotice,
    BouncedAddress,
    Counter,
    Event,
    InboxItem,
    Message,
    OutboxItem,
    Participant,
    SendLog,
    ThreadRef,
    Ticket,
    now_utc,
    utc,
)

# Statements built once: building a statement costs several times more than running it, and
# these run many times per message. Plain table statements skip the ORM's per-row bookkeeping;
# SQLAlchemy's compiled cache keys on the statement's structure, so each compiles once.
_T: dict[type, Any] = {
    m: getattr(m, "__table__")  # noqa: B009 - SQLModel declares no __table__ for the checker
    for m in (Counter, Event, Message, OutboxItem, Participant, SendLog, ThreadRef, Ticket)
}
_NEXT_NUMBER = (
    update(_T[Counter])
    .where(_T[Counter].c.desk == bindparam("d"))
    .values(next_number=_T[Counter].c.next_number + 1)
    .returning(_T[Counter].c.next_number - 1)
)
# PostgreSQL: the desk's next number taken and the ticket made with it in one statement (a
# data-modifying CTE, which SQLite lacks): one round trip where the two waited for one each.
_NUMBERED = (
    update(_T[Counter])
    .where(_T[Counter].c.desk == bindparam("d"))
    .values(next_number=_T[Counter].c.next_number + 1)
    .returning((_T[Counter].c.next_number - 1).label("number"))
    .cte("numbered")
)
_KEY_FOR_MSGID = (
    select(_T[Ticket].c.key)
    .join(_T[ThreadRef], _T[ThreadRef].c.ticket_id == _T[Ticket].c.id)
    .where(_T[ThreadRef].c.desk == bindparam("d"), _T[ThreadRef].c.message_id == bindparam("m"))
    .limit(1)
)
_KEY_EXISTS = select(_T[Ticket].c.id).where(_T[Ticket].c.key == bindparam("k")).limit(1)
# ORM statements: the ticket comes back as the session's object for its row. The INSERT is a
# Core one whose RETURNING row the ORM loads, as it loads a SELECT's (`from_statement`): a third
# cheaper than the ORM's bulk INSERT … RETURNING, whose per-statement bookkeeping (defaults,
# primary keys, versioning) a plain ticket row does not need.
_INSERT_TICKET = select(Ticket).from_statement(_T[Ticket].insert().returning(*_T[Ticket].c))
_TICKET_BY_KEY = select(Ticket).where(Ticket.key == bindparam("k"))  # type: ignore[arg-type]
_SET_TICKET = update(_T[Ticket]).where(_T[Ticket].c.id == bindparam("ticket_row"))
# inline(): no RETURNING of the new id (PostgreSQL would add one to every single-row INSERT),
# which nothing reads and which `defer` cannot wait for.
_INSERT_EVENT = _T[Event].insert().inline()
_INSERT_MESSAGE = _T[Message].insert().inline()
_INSERT_OUTBOX = _T[OutboxItem].insert().inline()
_INSERT_SENDLOG = _T[SendLog].insert().inline()
_P = _T[Participant].c
_PEOPLE = (
    select(_P.address, _P.role, _P.name, _P.notify).where(_P.ticket_id == bindparam("t")).order_by(_P.id)
)
_REMOVE_PERSON = delete(_T[Participant]).where(
    _P.ticket_id == bindparam("t"), _P.address == bindparam("a"), _P.role == bindparam("r")
)
# A ticket's Message-IDs with, for the ones we sent, whom we sent them to: the outbox row keeps
# the recipients of every mail, so no second record of "who got which Message-ID" is needed.
_THREAD_IDS = (
    select(_T[ThreadRef].c.message_id, _T[OutboxItem].c.recipients)
    .select_from(
        _T[ThreadRef].outerjoin(_T[OutboxItem], _T[OutboxItem].c.message_id == _T[ThreadRef].c.message_id)
    )
    .where(_T[ThreadRef].c.ticket_id == bindparam("t"))
    .order_by(_T[ThreadRef].c.id)
)
# The per-sender flood limit (handlers/new_ticket.py), on the (requester, created_at) index.
_OPENED_SINCE = (
    select(func.count())
    .select_from(_T[Ticket])
    .where(_T[Ticket].c.requester == bindparam("r"), _T[Ticket].c.created_at > bindparam("since"))
)
# Both loop-limit windows in one indexed query (recipient, created_at) (pipeline/notify.py).
_SL = _T[SendLog].c
_MAIL_COUNTS = select(
    func.count().filter(_SL.created_at > bindparam("overall_since")),
    func.count().filter(_SL.ticket_id == bindparam("t"), _SL.created_at > bindparam("ticket_since")),
).where(_SL.recipient == bindparam("r"), _SL.created_at > bindparam("since"))
_SENT = select(_T[OutboxItem].c.ticket_id, _T[OutboxItem].c.recipients, _T[OutboxItem].c.kind).where(
    _T[OutboxItem].c.message_id == bindparam("m")
)


_B = BouncedAddress.__table__.c  # type: ignore[attr-defined]
_BOUNCED = select(_B.address, _B.quiet_until, _B.status, _B.diagnostic, _B.bounced_at).where(
    _B.address == bindparam("a")
)


# PostgreSQL: the bounce of an address and both its loop-limit counts in one round trip (the
# counts' one row, the bounce's row if any): they are asked together for nearly every mail queued.
_COUNTS = _MAIL_COUNTS.subquery("counts")
_MAIL_CHECKS = select(
    *_COUNTS.c, _B.address, _B.quiet_until, _B.status, _B.diagnostic, _B.bounced_at
).select_from(_COUNTS.outerjoin(BouncedAddress.__table__, _B.address == bindparam("a")))  # type: ignore[attr-defined]


@cache
def _upserts(dialect: str) -> dict[str, Any]:
    ins = insert_for(dialect)
    # inline(): no RETURNING of the new id, which nothing reads. Where whether the row was new
    # is read, it is read from an explicit RETURNING, not the row count: PostgreSQL's driver
    # gives -1 for these, which read as "added" for an address already on the ticket.
    return {
        "counter": ins(_T[Counter]).on_conflict_do_nothing().inline(),
        "thread_ref": ins(_T[ThreadRef]).on_conflict_do_nothing().inline(),
        "thread_ref_new": ins(_T[ThreadRef]).on_conflict_do_nothing().returning(_T[ThreadRef].c.id),
        "participant": ins(_T[Participant]).on_conflict_do_nothing().returning(_T[Participant].c.id),
        "participant_kept": ins(_T[Participant]).on_conflict_do_nothing().inline(),
    }


@cache
def _open_ticket(columns: tuple[str, ...]) -> Any:
    """PostgreSQL's INSERT of a ticket numbered by `_NUMBERED`, its key DESK-N as `Repo.open_ticket`
    makes it on SQLite, and of its first thread reference (the Message-ID `m` of the mail that
    opens it, unless the desk has it already), loaded by the ORM as a SELECT's rows are: the
    ticket, and whether the reference was added. One statement per set of columns given."""
    tc = _T[Ticket].c
    number = _NUMBERED.c.number
    chosen = select(
        bindparam("d", type_=String),
        (bindparam("d", type_=String) + literal("-") + cast(number, String)),
        number,
        *(bindparam(c, type_=tc[c].type) for c in columns),
    )
    made = (
        _T[Ticket]
        .insert()
        .from_select(["desk", "key", "number", *columns], chosen)
        .returning(*_T[Ticket].c)
        .cte("made")
    )
    first = select(bindparam("d", type_=String), bindparam("m", type_=String), made.c.id)
    ref = (
        insert_for("postgresql")(_T[ThreadRef])
        .from_select(["desk", "message_id", "ticket_id"], first)
        .on_conflict_do_nothing()
        .returning(_T[ThreadRef].c.id)
        .cte("ref")
    )
    rows = select(made, exists(select(ref.c.id)).label("added"))
    return select(Ticket, literal_column("added", Boolean)).from_statement(rows)


class Plain:
    """A prebuilt Core statement as the SQL text SQLAlchemy compiles for `dialect`, with the
    order of its parameters and the type's bind processor of each (a datetime becomes the text
    SQLAlchemy's SQLite dialect stores, a JSON column's value its JSON), so that it runs on the
    DB-API connection itself: same SQL, same stored values, without `Connection.execute`'s
    per-call work. SQLite only (the pipeline's hot statements); PostgreSQL keeps its kept
    writes (store/deferred.py)."""

    def __init__(self, stmt: Any, dialect: Dialect, keys: tuple[str, ...] | None = None) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        self.sql = str(compiled)
        self.slots: list[tuple[str, Any, Any]] = []  # (name, value when not given, processor)
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            self.slots.append((name, bind.value, proc))

    def args(self, params: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, fixed, proc in self.slots:
            value = params.get(name, fixed)
            out.append(proc(value) if proc is not None else value)  # as SQLAlchemy: None too
        return tuple(out)


_PLAIN: dict[tuple[int, tuple[str, ...] | None], tuple[Any, Plain]] = {}


def plain(stmt: Any, dialect: Dialect, keys: tuple[str, ...] | None = None) -> Plain:
    """`stmt` compiled once per column set (`keys`: the INSERT's or the UPDATE's columns). For
    module-level statements only: the cache keeps every statement it is given."""
    found = _PLAIN.get((id(stmt), keys))
    if found is None or found[0] is not stmt:
        found = _PLAIN[(id(stmt), keys)] = (stmt, Plain(stmt, dialect, keys))
    return found[1]


def dbapi(session: Session) -> Any:
    """The DB-API connection of the session's transaction (SQLite's sqlite3.Connection)."""
    return session.connection().connection.dbapi_connection


def write_kept(session: Session, stmt: Any, params: dict[str, Any]) -> None:
    """A write whose row count nobody reads: on SQLite run now as plain SQL (`Plain`), on
    PostgreSQL kept and sent with the next statement (store/deferred.py)."""
    conn = session.connection()
    if conn.dialect.name != "sqlite":
        deferred.defer(session, stmt, params)
        return
    p = plain(stmt, conn.dialect, tuple(sorted(params)) if _is_dml(stmt) else None)
    conn.connection.dbapi_connection.execute(p.sql, p.args(params))  # type: ignore[union-attr]


def _is_dml(stmt: Any) -> bool:
    """INSERT and UPDATE compile their column list from the keys given; a SELECT does not."""
    return getattr(stmt, "is_dml", False) and not getattr(stmt, "is_delete", False)


def row_id(ticket: Ticket) -> int:
    """The row id of a ticket that is stored."""
    assert ticket.id is not None, f"{ticket.key} is not stored"
    return ticket.id


class Bounced(NamedTuple):
    """A bounced address, as read (store.models.BouncedAddress is the table)."""

    address: str
    quiet_until: datetime
    status: str
    diagnostic: str
    bounced_at: datetime


class Person(NamedTuple):
    """One participant of a ticket, as read (store.models.Participant is the table)."""

    address: str
    role: str
    name: str
    notify: bool


class Repo:
    def __init__(self, session: Session, *, buffered: bool = False) -> None:
        """`buffered`: the rows of queued mail (outbox, thread reference, send log) are kept
        and written by `flush_pending`, one executemany per table, instead of one INSERT each
        (the pipeline's Repo for one message: the runner flushes before the message's
        SAVEPOINT is released). Every read of those tables here flushes first, or counts the
        kept rows too (`automatic_mails`), so nothing reads around them. It also remembers the
        people of each ticket it read them of (`participants`), as nothing else changes them
        during one message."""
        self.session = session
        self._dialect = session.get_bind().dialect
        dialect = self._dialect.name
        self._sqlite = dialect == "sqlite"
        self._up = _upserts(dialect)
        # thread ids per ticket with whom each was sent to ("" for mail we received), kept in
        # step by add_thread_ref
        self._threads: dict[int, list[tuple[str, str]]] = {}
        # The people of the tickets this Repo made, and (the pipeline's Repo, which lives for one
        # message) of the tickets it read them of, in the order they joined: every change of them
        # meanwhile goes through this Repo (a `remove_participant` or `mute` forgets them), so
        # `participants` asks once, and `add_participant` knows whether an address is new
        # without waiting for the INSERT's answer.
        self._people: dict[int, list[Person]] = {}
        self._one_message = buffered
        # On PostgreSQL what costs is the round trip, not the call: there the same rows go out as
        # kept writes with the next statement (`defer`, store/deferred.py), not buffered here.
        self._pending: dict[str, list[dict[str, Any]]] | None = (
            {} if buffered and dialect == "sqlite" else None
        )
        # The buffered Repo lives for one message inside one transaction, so the DB-API
        # connection it writes on is the same throughout (others ask the session each time).
        self._raw: Any = None

    def _dbapi(self) -> Any:
        if self._pending is None:
            return dbapi(self.session)
        if self._raw is None:
            self._raw = dbapi(self.session)
        return self._raw

    def _keep(self, table: str, stmt: Any, params: dict[str, Any]) -> None:
        """Keep the row for `flush_pending` (a buffered Repo on SQLite), or `defer` it: written
        now on SQLite, sent with the next statement on PostgreSQL."""
        if self._pending is None:
            self.defer(stmt, params)
        else:
            self._pending.setdefault(table, []).append(params)

    def flush_pending(self) -> None:
        """Write the kept rows: one executemany per table (and per set of columns), in the order
        a reader needs them (an outbox row before the thread reference that names its
        Message-ID), as plain SQL (`Plain`: only a buffered Repo on SQLite keeps rows)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        raw = self._dbapi()
        for table, stmt in (
            ("message", _INSERT_MESSAGE),
            ("event", _INSERT_EVENT),
            ("outbox", _INSERT_OUTBOX),
            ("thread_ref", self._up["thread_ref"]),
            ("sendlog", _INSERT_SENDLOG),
        ):
            rows = pending.get(table)
            if not rows:
                continue
            by_keys: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for params in rows:
                by_keys.setdefault(tuple(sorted(params)), []).append(params)
            for keys, group in by_keys.items():
                p = plain(stmt, self._dialect, keys)
                raw.executemany(p.sql, [p.args(params) for params in group])

    def _plain(self, stmt: Any, params: dict[str, Any]) -> Any:
        """Run a prebuilt SELECT (or write with RETURNING whose columns are given) as plain SQL:
        the DB-API cursor, rows as the driver gives them (on SQLite only for integers and text;
        on PostgreSQL see store/deferred.py `read`, which sends the kept writes with it). The
        rows this Repo keeps on SQLite are not written first."""
        if not self._sqlite:
            return deferred.read(self.session, stmt, params)
        p = plain(stmt, self._dialect, tuple(sorted(params)) if _is_dml(stmt) else None)
        return self._dbapi().execute(p.sql, p.args(params))

    def core(self, stmt: Any, params: dict[str, Any]) -> Result[Any]:
        """Run a prebuilt Core SELECT (or write with RETURNING) on this transaction's connection,
        without the ORM session's per-call work (no autoflush, no entity loading). Only for
        statements that never depend on unflushed ORM changes: look-ups of rows written with
        `write`, counters, counts. The rows this Repo keeps are written first."""
        self.flush_pending()
        return self.session.connection().execute(stmt, params)

    def write(self, stmt: Any, params: dict[str, Any] | list[dict[str, Any]]) -> int:
        """Run a prebuilt INSERT, UPDATE or DELETE (no RETURNING) in this transaction; the row
        count. A list of parameter sets runs as one executemany. Same caveat as `core`."""
        return int(self.session.connection().execute(stmt, params).rowcount)

    def defer(self, stmt: Any, params: dict[str, Any]) -> None:
        """`write` for a write whose row count nobody reads: on PostgreSQL it goes out with the
        next statement's round trip instead of one of its own (store/deferred.py); on SQLite it
        runs now, as plain SQL (`write_kept`)."""
        if not self._sqlite:
            deferred.defer(self.session, stmt, params)
            return
        p = plain(stmt, self._dialect, tuple(sorted(params)) if _is_dml(stmt) else None)
        self._dbapi().execute(p.sql, p.args(params))

    # -- ticket numbers -------------------------------------------------------------------------
    def next_ticket_number(self, desk: str) -> int:
        """Unique under concurrent writers: the UPDATE takes the counter row's lock until commit.
        The row is made the first time a desk needs it."""
        if self._sqlite:
            found = self._plain(_NEXT_NUMBER, {"d": desk}).fetchone()
            if found is None:
                self.write(self._up["counter"], {"desk": desk, "next_number": 1})
                found = self._plain(_NEXT_NUMBER, {"d": desk}).fetchone()
            return int(found[0])
        number = self.core(_NEXT_NUMBER, {"d": desk}).scalar_one_or_none()
        if number is None:
            self.write(self._up["counter"], {"desk": desk, "next_number": 1})
            number = self.core(_NEXT_NUMBER, {"d": desk}).scalar_one()
        return int(number)

    # -- lookups (threading.Lookup for one desk) ------------------------------------------------
    def key_for_message_id(self, desk: str, message_id: str) -> str | None:
        params = {"d": desk, "m": message_id}
        row = (
            self.core(_KEY_FOR_MSGID, params).first()
            if self._sqlite
            else self._plain(_KEY_FOR_MSGID, params).fetchone()
        )
        return row[0] if row else None

    def ticket_by_key(self, key: str) -> Ticket | None:
        """The ticket as this session's ORM object (the one it holds already, if any: the ORM's
        identity map), with the session's pending changes flushed first."""
        return self.session.execute(_TICKET_BY_KEY, {"k": key.upper()}).scalars().first()

    def open_children(self, key: str) -> list[Ticket]:
        """The tickets filed under `key` by `#parent` that are neither resolved nor closed, oldest
        first (a JSON path on `fields`: json_extract on SQLite, ->> on PostgreSQL)."""
        query = (
            select(Ticket)
            .where(col(Ticket.fields)["parent"].as_string() == key.upper())
            .where(col(Ticket.resolved_at).is_(None), col(Ticket.closed_at).is_(None))
            .order_by(col(Ticket.id))
        )
        return list(self.session.execute(query).scalars())

    def key_exists(self, key: str) -> bool:
        params = {"k": key.upper()}
        if self._sqlite:
            return self.core(_KEY_EXISTS, params).first() is not None
        return self._plain(_KEY_EXISTS, params).fetchone() is not None

    # -- writes ---------------------------------------------------------------------------------
    def open_ticket(self, desk: str, message_id: str | None, **values: Any) -> Ticket:
        """A new ticket of `desk`, numbered with the desk's next number and keyed DESK-N, as
        `create_ticket` makes it (`values`: every other column without a default), with the
        Message-ID of the mail that opens it as its first thread reference (`add_thread_ref`).
        On PostgreSQL the number, the row and the reference in one statement (`_NUMBERED`,
        `_open_ticket`); SQLite runs `next_ticket_number`, `create_ticket` and
        `add_thread_ref`."""
        if self._sqlite or not message_id:
            number = self.next_ticket_number(desk)
            created = self.create_ticket(key=f"{desk}-{number}", desk=desk, number=number, **values)
            self.add_thread_ref(desk, message_id, row_id(created))
            return created
        stmt = _open_ticket(tuple(sorted(values)))
        params = {"d": desk, "m": message_id, **values}
        made = self.session.execute(stmt, params).first()
        if made is None:  # the desk's first ticket: no counter row yet
            self.write(self._up["counter"], {"desk": desk, "next_number": 1})
            made = self.session.execute(stmt, params).one()
        ticket: Ticket = made[0]
        self._made(ticket)
        if made[1]:  # the desk had not had this Message-ID: it is this ticket's now
            self._threads[row_id(ticket)].append((message_id, ""))
        return ticket

    def create_ticket(self, **values: Any) -> Ticket:
        """Insert a ticket and return it as the ORM object that later changes are made on: one
        INSERT … RETURNING, whose returned row becomes the session's object as a load would make
        it (no SELECT after the INSERT, no constructor validation). `values` names every column
        without a default (the ORM's own INSERT filled those in; this one does not)."""
        ticket: Ticket = self.session.execute(_INSERT_TICKET, values).scalars().one()
        self._made(ticket)
        return ticket

    def _made(self, ticket: Ticket) -> None:
        """A ticket made in this transaction has no conversation and no people yet."""
        self._threads[row_id(ticket)] = []
        self._people[row_id(ticket)] = []

    def set_ticket(self, ticket: Ticket, **values: Any) -> None:
        """Write these columns of a stored ticket now, with one prebuilt UPDATE, and expire them
        on the object, so a later read loads what the row holds. The ORM's flush of the changed
        object cost five to ten times the UPDATE (bench/README.md, "store on public APIs"), and the
        pipeline changes a ticket's times for nearly every message. Other attributes changed on
        the object still go out with the next flush."""
        if ticket.id is None or ticket not in self.session:  # not inserted yet: the INSERT carries them
            for key, value in values.items():
                setattr(ticket, key, value)
            return
        self.defer(_SET_TICKET, {"ticket_row": ticket.id, **values})
        self.session.expire(ticket, list(values))

    def add_thread_ref(self, desk: str, message_id: str | None, ticket_id: int, sent_to: str = "") -> None:
        """Remember a Message-ID of the ticket; `sent_to` is the recipient when we sent it (its
        outbox row, queued in this transaction, says the same to later transactions)."""
        if not message_id:
            return
        row = {"desk": desk, "message_id": message_id, "ticket_id": ticket_id}
        if any(mid == message_id for mid, _ in self._threads.get(ticket_id, ())):
            return  # the ticket has it already
        if self._pending is not None:  # kept: a Message-ID the ticket has already is not added again
            self._pending.setdefault("thread_ref", []).append(row)
            added = all(mid != message_id for mid, _ in self._threads.get(ticket_id, ()))
        elif sent_to:
            # A mail we are sending: its Message-ID was made for it just now, so the row is new.
            self.defer(self._up["thread_ref"], row)
            added = True
        elif ticket_id not in self._threads:  # whether it was new is never read: no wait for it
            self.defer(self._up["thread_ref"], row)
            return
        else:
            new = self._up["thread_ref_new"]
            found = self.core(new, row).first() if self._sqlite else self._plain(new, row).fetchone()
            added = found is not None
        if added and ticket_id in self._threads:
            self._threads[ticket_id].append((message_id, sent_to.lower()))

    def sent_to(self, message_id: str) -> tuple[int | None, list[str], str] | None:
        """(ticket id, recipients, kind) of a mail we sent with this Message-ID, or None when we
        sent none: what an In-Reply-To must name to prove its sender got that mail."""
        self.flush_pending()
        row = self.core(_SENT, {"m": message_id}).first()
        if row is None:
            return None
        ticket_id, recipients, kind = tuple(row)
        return ticket_id, list(recipients or []), kind

    def event(self, ticket_id: int, what: EventKind, actor: str = "system", **data: Any) -> None:
        """Append to the audit trail. `what` is the event kind: created, status, comment, …

        A plain INSERT, not an ORM add + flush: events are written many times per message and
        never read back in the same transaction by id (the pipeline's Repo keeps them until the
        end of the message; every read of events here writes them first)."""
        self._keep(
            "event",
            _INSERT_EVENT,
            {"ticket_id": ticket_id, "kind": what, "actor": actor, "data": data, "created_at": now_utc()},
        )

    def add_participant(self, ticket_id: int, address: str, role: Role, name: str = "") -> bool:
        """True when the address is new on the ticket."""
        address = address.lower()
        row = {"ticket_id": ticket_id, "address": address, "role": role, "name": name, "notify": True}
        known = self._people.get(ticket_id)
        if known is not None:  # its people are known here, so whether it is new is too
            if any(p.address == address for p in known):  # the unique (ticket, address)
                return False
            known.append(Person(address, role, name, True))
            self.defer(self._up["participant_kept"], row)
            return True
        return self._plain(self._up["participant"], row).fetchone() is not None

    def mute(self, ticket_id: int, addresses: Sequence[str]) -> None:
        """No more mail about this ticket to these addresses (unsubscribed, or bouncing)."""
        if addresses:
            self._people.pop(ticket_id, None)
            self.session.execute(
                update(Participant)
                .where(
                    col(Participant.ticket_id) == ticket_id,
                    col(Participant.address).in_([a.lower() for a in addresses]),
                )
                .values(notify=False)
            )

    def participants(self, ticket_id: int) -> list[Person]:
        """The ticket's people, in the order they joined (read-only rows: change them with
        `add_participant`, `remove_participant` and `mute`)."""
        known = self._people.get(ticket_id)
        if known is None:
            rows = (
                self.core(_PEOPLE, {"t": ticket_id})
                if self._sqlite
                else self._plain(_PEOPLE, {"t": ticket_id})
            )
            known = [Person._make(row) for row in rows]
            if self._one_message:
                self._people[ticket_id] = known
        return list(known)

    def remove_participant(self, ticket_id: int, address: str, role: Role) -> bool:
        """True when the address had that role on the ticket."""
        self._people.pop(ticket_id, None)
        return bool(self.write(_REMOVE_PERSON, {"t": ticket_id, "a": address.lower(), "r": role}))

    def messages(self, ticket_id: int) -> list[Message]:
        self.flush_pending()
        return list(
            self.session.execute(
                select(Message).where(col(Message.ticket_id) == ticket_id).order_by(col(Message.id))
            ).scalars()
        )

    def enqueue(self, **values: Any) -> None:
        """Queue one outgoing mail (an OutboxItem row) in this transaction."""
        now = now_utc()
        values.setdefault("next_attempt_at", now)
        values.setdefault("created_at", now)
        values.setdefault("state", "pending")
        values.setdefault("attempts", 0)
        values.setdefault("ticket_id", None)
        values.setdefault("claimed_by", None)
        values.setdefault("claimed_at", None)
        values.setdefault("last_error", None)
        values.setdefault("sent_at", None)
        self._keep("outbox", _INSERT_OUTBOX, values)

    def log_send(self, recipient: str, ticket_id: int | None) -> None:
        """One automatic mail to `recipient`, for the loop limits' sliding windows."""
        self._keep(
            "sendlog",
            _INSERT_SENDLOG,
            {"recipient": recipient, "ticket_id": ticket_id, "created_at": now_utc()},
        )

    def thread_ids(self, ticket_id: int, recipient: str, limit: int = 20) -> list[str]:
        """Message-IDs of this ticket's conversation, oldest first, as `recipient` may see them:
        the References of our next mail to them. Mail we sent to anyone else is left out: its id
        is that person's (an In-Reply-To naming it proves the sender got that mail), so it is
        never copied into another person's mail (STYLE.md habit 13)."""
        pairs = self._threads.get(ticket_id)
        if pairs is None:
            self.flush_pending()
            pairs = self._threads[ticket_id] = [
                (str(mid), rcpts[0].lower() if rcpts else "")
                for mid, rcpts in map(
                    tuple,
                    self.core(_THREAD_IDS, {"t": ticket_id})
                    if self._sqlite
                    else self._plain(
                        _THREAD_IDS, {"t": ticket_id}
                    ),  # JSON: psycopg reads it as SQLAlchemy does
                )
            ]
        who = recipient.lower()
        ids = [mid for mid, to in pairs if not to or to == who]
        return ids[:1] + ids[-(limit - 1) :] if len(ids) > limit else ids

    def count_tickets(self, desk: str | None = None) -> int:
        stmt = select(func.count()).select_from(Ticket)
        if desk:
            stmt = stmt.where(col(Ticket.desk) == desk)
        return int(self.session.execute(stmt).scalar_one())

    def add_message(self, **values: Any) -> None:
        """Store one message on a ticket (a plain INSERT: nothing reads its id back; the pipeline's
        Repo keeps it until the end of the message, and every read of messages here writes it
        first)."""
        values.setdefault("created_at", now_utc())
        values.setdefault("inbox_id", None)
        values.setdefault("message_id", None)
        self._keep("message", _INSERT_MESSAGE, values)

    # -- membership and dedup (pipeline/membership.py, stages.thread) ---------------------------
    def mailed_to(self, ticket_id: int, message_ids: Sequence[str]) -> set[str]:
        """The addresses our mails with these Message-IDs on this ticket were sent to: answering
        one of them proves its author was in the conversation. Read through `sent_to`, the one
        record of who got which Message-ID (the outbox row)."""
        people: set[str] = set()
        for message_id in message_ids:
            sent = self.sent_to(message_id)
            if sent is not None and sent[0] == ticket_id:
                people.update(addr.lower() for addr in sent[1])
        return people

    def recent_events(self, ticket_id: int, kind: EventKind, since: datetime) -> list[dict[str, Any]]:
        """The data of this ticket's `kind` events since `since`, oldest first."""
        self.flush_pending()
        return [
            dict(data or {})
            for data in self.session.execute(
                select(col(Event.data))
                .where(
                    col(Event.ticket_id) == ticket_id, col(Event.kind) == kind, col(Event.created_at) > since
                )
                .order_by(col(Event.id))
            ).scalars()
        ]

    def ticket_of_message(self, desk: str, message_id: str, author: str) -> str | None:
        """The key of the ticket holding an inbound message of `author` with this Message-ID."""
        self.flush_pending()
        row = self.session.execute(
            select(col(Ticket.key))
            .join(Message, col(Message.ticket_id) == col(Ticket.id))
            .where(
                col(Ticket.desk) == desk,
                col(Message.message_id) == message_id,
                col(Message.author) == author,
                col(Message.direction) == "in",
            )
            .order_by(col(Message.id))
            .limit(1)
        ).first()
        return row[0] if row else None

    # -- limits and assignment (handlers/new_ticket.py, pipeline/notify.py) ----------------------
    def tickets_opened_since(self, requester: str, since: datetime) -> int:
        """How many tickets `requester` opened after `since`: the per-sender flood limit."""
        params = {"r": requester, "since": since}
        return int(self._plain(_OPENED_SINCE, params).fetchone()[0])

    def held_since(self, disposition: str, reason_prefix: str, since: datetime) -> bool:
        """Whether an inbox row processed after `since` was stopped with this disposition and a
        reason starting with `reason_prefix` (the flood limit's "SENDER opened "): the held rows
        of this batch are flushed, so they count."""
        return (
            self.session.execute(
                select(col(InboxItem.id))
                .where(
                    col(InboxItem.disposition) == disposition,
                    col(InboxItem.reason).startswith(reason_prefix, autoescape=True),
                    col(InboxItem.processed_at) > since,
                )
                .limit(1)
            ).first()
            is not None
        )

    def last_assignee(self, group: str) -> str | None:
        """Who the group's most recent assigned ticket went to (round-robin's last turn)."""
        row = self.session.execute(
            select(col(Ticket.assignee))
            .where(col(Ticket.group) == group, col(Ticket.assignee).is_not(None))
            .order_by(col(Ticket.id).desc())
            .limit(1)
        ).first()
        return row[0] if row else None

    def open_count(self, assignee: str) -> int:
        """How many tickets not closed are assigned to `assignee` (least-open assignment)."""
        return int(
            self.session.execute(
                select(func.count())
                .select_from(Ticket)
                .where(col(Ticket.assignee) == assignee, col(Ticket.status_category) != "closed")
            ).scalar_one()
        )

    def mail_checks(
        self,
        recipient: str,
        ticket_id: int | None,
        now: datetime,
        overall_since: datetime,
        ticket_since: datetime,
    ) -> tuple[Bounced | None, tuple[int, int]]:
        """What decides whether an automatic mail to `recipient` may go: `bounced` at `now` and
        `automatic_mails`. On PostgreSQL one query (`_MAIL_CHECKS`), one round trip where the
        two waited for one each; SQLite runs the two."""
        if self._sqlite:
            found = self.bounced(recipient, now)
            if found is not None:  # the counts are not needed
                return found, (0, 0)
            return None, self.automatic_mails(recipient, ticket_id, overall_since, ticket_since)
        self.session.flush()  # a bounce recorded in this transaction (an ORM object) counts too
        params = self._counts_params(recipient, ticket_id, overall_since, ticket_since)
        row = tuple(self._plain(_MAIL_CHECKS, {**params, "a": recipient.lower()}).fetchone())
        overall, per_ticket = int(row[0]), int(row[1])
        found = Bounced._make(row[2:]) if row[2] is not None else None
        if found is not None and utc(found.quiet_until) <= now:
            found = None
        return found, (overall, per_ticket)

    @staticmethod
    def _counts_params(
        recipient: str, ticket_id: int | None, overall_since: datetime, ticket_since: datetime
    ) -> dict[str, Any]:
        return {
            "r": recipient,
            "t": ticket_id,
            "overall_since": overall_since,
            "ticket_since": ticket_since,
            "since": min(overall_since, ticket_since),
        }

    def automatic_mails(
        self, recipient: str, ticket_id: int | None, overall_since: datetime, ticket_since: datetime
    ) -> tuple[int, int]:
        """Automatic mails to `recipient` since `overall_since`, and on this ticket since
        `ticket_since`: both loop-limit windows in one query."""
        params = self._counts_params(recipient, ticket_id, overall_since, ticket_since)
        counts = self._plain(_MAIL_COUNTS, params).fetchone()
        overall, per_ticket = (int(n) for n in tuple(counts))
        for kept in (self._pending or {}).get("sendlog", ()):  # this message's mail so far
            if kept["recipient"] == recipient:
                overall += kept["created_at"] > overall_since
                per_ticket += kept["ticket_id"] == ticket_id and kept["created_at"] > ticket_since
        return overall, per_ticket

    def mail_held_since(self, recipient: str, since: datetime) -> bool:
        """Whether mail to `recipient` was held by a loop limit after `since` (on any ticket)."""
        self.flush_pending()
        return (
            self.session.execute(
                select(col(Event.id))
                .where(
                    col(Event.kind) == EventKind.MAIL_HELD,
                    col(Event.created_at) > since,
                    col(Event.data)["recipient"].as_string() == recipient,
                )
                .limit(1)
            ).first()
            is not None
        )

    # -- bounced addresses (handlers/bounce.py, pipeline/notify.py) -------------------------------
    def record_bounce(
        self, address: str, *, until: datetime, status: str, diagnostic: str, ticket_id: int | None
    ) -> None:
        """`address` failed permanently: no automatic mail to it until `until`. A later bounce
        moves the date on and keeps its own status and words."""
        row = self.session.get(BouncedAddress, address.lower())
        if row is None:
            row = BouncedAddress(address=address.lower(), quiet_until=until)
        row.quiet_until, row.status, row.diagnostic = until, status, diagnostic
        row.ticket_id, row.bounced_at = ticket_id, now_utc()
        self.session.add(row)

    def bounced(self, address: str, now: datetime) -> Bounced | None:
        """The bounce that keeps automatic mail from `address` at `now`, or None. A prebuilt Core
        SELECT (it runs for nearly every mail queued), after a flush: a bounce recorded in this
        transaction (`record_bounce`, an ORM object) counts too."""
        self.session.flush()
        # Not `core`: the rows this Repo keeps (messages, events, queued mail) are no bounces, and
        # writing them here would split their one executemany per message into several.
        row = self.session.connection().execute(_BOUNCED, {"a": address.lower()}).first()
        found = Bounced._make(row) if row is not None else None
        if found is None or utc(found.quiet_until) <= now:
            return None
        return found

    # -- admin notices (pipeline/notify.py) --------------------------------------------------------
    def add_admin_notice(self, kind: str, subject: str, text: str, now: datetime) -> None:
        self.session.add(AdminNotice(kind=kind, subject=subject, text=text, created_at=now))

    def admin_kinds_waiting(self) -> list[str]:
        """The kinds with notices not yet mailed."""
        return list(
            self.session.execute(
                select(col(AdminNotice.kind)).where(col(AdminNotice.sent_at).is_(None)).distinct()
            ).scalars()
        )

    def admin_last_sent(self, kind: str) -> datetime | None:
        """When the admins were last mailed about `kind`."""
        last = self.session.execute(
            select(func.max(col(AdminNotice.sent_at))).where(col(AdminNotice.kind) == kind)
        ).scalar_one()
        return utc(last)

    def admin_waiting(self, kind: str) -> list[AdminNotice]:
        """The notices of `kind` not yet mailed, oldest first."""
        self.session.flush()
        return list(
            self.session.execute(
                select(AdminNotice)
                .where(col(AdminNotice.kind) == kind, col(AdminNotice.sent_at).is_(None))
                .order_by(col(AdminNotice.id))
            ).scalars()
        )


class DeskLookup:
    """`threading.Lookup` for one desk over a Repo."""

    def __init__(self, repo: Repo, desk: str) -> None:
        self.repo = repo
        self.desk = desk

    def key_for_message_id(self, message_id: str) -> str | None:
        return self.repo.key_for_message_id(self.desk, message_id)

    def key_exists(self, key: str) -> bool:
        return key.upper().startswith(self.desk + "-") and self.repo.key_exists(key)
