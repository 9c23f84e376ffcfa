"""The tables. Unique constraints enforce what must never happen twice: one inbox row per
message and desk (its Message-ID plus a digest of its content), one per IMAP uid, one ticket per key, one outbox row per Message-ID.

Times are timezone-aware UTC (stored naive-UTC by SQLite, aware by PostgreSQL; `utc()` normalises).
Schema changes go through Alembic (mailgate/store/migrations), never `create_all` on a live database
(an empty one is made from these models at the head revision: store.migrate._create_fresh).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload

from pydantic import ConfigDict
from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


class TableModel(SQLModel):
    """The base of every table. Pydantic builds a model's validator and serializer when first
    used, not at import: a table is never validated when made (SQLModel validates only models
    that are not tables), and building them for eleven tables was a third of importing this
    module, which every `mailgate` command and MTA pipe delivery pays."""

    # SQLModel declares its config as its own TypedDict, of which pydantic's is the base.
    model_config = ConfigDict(defer_build=True)  # type: ignore[assignment]


def now_utc() -> datetime:
    return datetime.now(UTC)


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
@overload
def utc(value: datetime | None) -> datetime | None: ...
def utc(value: datetime | None) -> datetime | None:
    """Aware UTC whatever the backend returned (SQLite drops the zone)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(**kw: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), **kw))


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class Counter(TableModel, table=True):
    """Next ticket number per desk. Incremented with UPDATE … RETURNING under the row lock."""

    desk: str = Field(primary_key=True)
    next_number: int = 1


class InboxItem(TableModel, table=True):
    """One received message for one desk: the raw bytes, the envelope, and what became of it.

    state: new → processing → done | failed (quarantined). `trace` is the list of decisions each
    stage made, which `mailgate inbox show` prints; a stage's timing step also carries `ms`.
    """

    __table_args__ = (
        # A redelivery (same Message-ID, same content) is one row; another message reusing the
        # Message-ID is a row of its own: a known id never erases a different mail.
        UniqueConstraint("desk", "message_id", "digest", name="uq_inbox_desk_msgid_digest"),
        UniqueConstraint("source", "source_key", name="uq_inbox_source_key"),
        Index("ix_inbox_state_id", "state", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    desk: str
    message_id: str | None = None
    digest: str | None = None  # store.inbox.content_digest: sha256 of what the author wrote
    source: str  # smtp, lmtp, pipe, mbox, maildir, imap:<account>
    source_key: str | None = None  # e.g. imap "<uidvalidity>:<uid>"
    mail_from: str = ""
    rcpt_tos: list[str] = _json(list)
    size: int = 0  # of the message, whose bytes are in InboxRaw
    state: str = Field(default="new", index=False)
    disposition: str | None = None  # ticket-created, reply, ignored:auto-reply, bounce …
    attempts: int = 0
    claimed_by: str | None = None  # the claim id of a worker run (store/lease.py), never a PID
    claimed_at: datetime | None = _ts(nullable=True)
    claimed_until: datetime | None = _ts(nullable=True)  # the lease: free for any worker after this
    stage: str | None = None  # where it failed
    reason: str | None = None
    trace: list[dict[str, Any]] = _json(list)
    ticket_id: int | None = Field(default=None, index=True)
    received_at: datetime = _ts(nullable=False, default=now_utc)
    processed_at: datetime | None = _ts(nullable=True)
    # An admin let a held message through (`mailgate inbox release`): who, and when. The pipeline
    # then skips the hold that stopped it, and the ticket's audit trail names them.
    released_by: str | None = None
    released_at: datetime | None = _ts(nullable=True)


class InboxRaw(TableModel, table=True):
    """The bytes of an inbox row's message, in a table of their own (same id). The inbox row
    changes state three times or more (claimed, done, retried), and SQLite writes a whole row
    again on every UPDATE, blob included: a 25 MB message was written to the WAL three times."""

    id: int = Field(primary_key=True)  # InboxItem.id
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class Ticket(TableModel, table=True):
    __table_args__ = (
        UniqueConstraint("key", name="uq_ticket_key"),
        Index("ix_ticket_desk_status", "desk", "status"),
        Index("ix_ticket_requester_created", "requester", "created_at"),  # the per-sender flood limit
        Index("ix_ticket_assignee_category", "assignee", "status_category"),  # least-open assignment
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str
    desk: str
    number: int
    subject: str
    requester: str
    requester_name: str = ""
    status: str = "open"
    status_category: str = "open"  # open | waiting | closed
    priority: str | None = None
    type: str | None = None
    category: str | None = None
    group: str | None = None
    assignee: str | None = None
    tags: list[str] = _json(list)
    fields: dict[str, Any] = _json(dict)
    created_at: datetime = _ts(nullable=False, default=now_utc)
    updated_at: datetime = _ts(nullable=False, default=now_utc)
    first_response_at: datetime | None = _ts(nullable=True)
    resolved_at: datetime | None = _ts(nullable=True)
    closed_at: datetime | None = _ts(nullable=True)
    first_response_due: datetime | None = _ts(nullable=True)
    resolution_due: datetime | None = _ts(nullable=True)
    # Marks of the periodic jobs (mailgate/domain/timers.py): each is written in the same
    # transaction as the mail or change it stands for, which makes every job idempotent.
    first_response_warned_at: datetime | None = _ts(nullable=True)
    first_response_escalated_at: datetime | None = _ts(nullable=True)
    resolution_warned_at: datetime | None = _ts(nullable=True)
    resolution_escalated_at: datetime | None = _ts(nullable=True)
    first_response_admins_at: datetime | None = _ts(nullable=True)  # the ladder's last step
    resolution_admins_at: datetime | None = _ts(nullable=True)
    triage_reminded_at: datetime | None = _ts(nullable=True)
    customer_reminded_at: datetime | None = _ts(nullable=True)
    last_review_at: datetime | None = _ts(nullable=True)
    rating: int | None = None
    rating_comment: str | None = None
    merged_into: str | None = None


class Message(TableModel, table=True):
    """A message on a ticket: inbound mail, an agent's reply, an internal note or a system note."""

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(index=True)
    direction: str = "in"  # in | out
    kind: str = "public"  # public | internal | system | held (a stranger's mail, agents only)
    author: str = ""
    message_id: str | None = None
    inbox_id: int | None = None
    subject: str = ""
    text: str = ""  # the full text, HTML converted
    reply_text: str = ""  # what the writer added
    attachments: list[dict[str, Any]] = _json(list)  # {filename, content_type, size, sha256}
    created_at: datetime = _ts(nullable=False, default=now_utc)


class ThreadRef(TableModel, table=True):
    """Every Message-ID we stored or sent, and its ticket: what In-Reply-To/References look up."""

    __table_args__ = (UniqueConstraint("desk", "message_id", name="uq_threadref_desk_msgid"),)

    id: int | None = Field(default=None, primary_key=True)
    desk: str
    message_id: str
    ticket_id: int = Field(index=True)


class Participant(TableModel, table=True):
    __table_args__ = (UniqueConstraint("ticket_id", "address", name="uq_participant"),)

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(index=True)
    address: str
    name: str = ""
    role: str = "requester"  # requester | watcher | agent
    notify: bool = True


class Event(TableModel, table=True):
    """The audit trail: who changed what on a ticket, and why."""

    __table_args__ = (
        # mailgate/reports: the figures of a range are GROUP BYs over one kind of event in a time
        # range, and each ticket's status trail or latest rating is one kind of its events.
        Index("ix_event_kind_created", "kind", "created_at"),
        Index("ix_event_ticket_kind", "ticket_id", "kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(index=True)
    actor: str = "system"
    kind: str  # created, status, assign, comment, routed, …
    data: dict[str, Any] = _json(dict)
    created_at: datetime = _ts(nullable=False, default=now_utc)


class OutboxItem(TableModel, table=True):
    """One mail to send: rendered in full at enqueue time, so its Message-ID is known and threads.

    state: pending → sent | failed. Only the sender changes it after creation.
    """

    __table_args__ = (
        UniqueConstraint("message_id", name="uq_outbox_msgid"),
        Index("ix_outbox_state_next", "state", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, index=True)
    desk: str = ""
    kind: str  # acknowledgement, notification, …
    message_id: str
    mail_from: str  # envelope sender
    recipients: list[str] = _json(list)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: str = "pending"
    attempts: int = 0
    next_attempt_at: datetime = _ts(nullable=False, default=now_utc)
    claimed_by: str | None = None  # the claim id of a sender run (store/lease.py)
    claimed_at: datetime | None = _ts(nullable=True)
    claimed_until: datetime | None = _ts(nullable=True)  # the lease: free for any sender after this
    last_error: str | None = None
    created_at: datetime = _ts(nullable=False, default=now_utc)
    sent_at: datetime | None = _ts(nullable=True)


class SendLog(TableModel, table=True):
    """Automatic mails sent per recipient, for loop limits (sliding windows)."""

    __table_args__ = (Index("ix_sendlog_rcpt_time", "recipient", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    recipient: str
    ticket_id: int | None = None
    created_at: datetime = _ts(nullable=False, default=now_utc)


class JobState(TableModel, table=True):
    """What a periodic job (mailgate/scheduler.py) last did for a desk: the scheduler keeps no
    state of its own, so a restart or another process picks up from here."""

    __tablename__ = "jobstate"

    job: str = Field(primary_key=True)  # sla_check, triage_reminder, auto_close, …
    desk: str = Field(primary_key=True)
    last_run_at: datetime | None = _ts(nullable=True)
    last_digest_at: datetime | None = _ts(nullable=True)
    last_actions: int = 0


class DaemonBeat(TableModel, table=True):
    """A running `mailgate run`, as it reports itself (mailgate/store/heartbeat.py): what
    `mailgate status` shows is what the daemon really does — the ports it listens on, when it
    started, that it is alive now — not what the config file says it would do."""

    __tablename__ = "daemonbeat"

    id: str = Field(primary_key=True)  # "<host>:<pid>": several daemons may share one database
    host: str
    pid: int
    listeners: list[str] = _json(list)  # e.g. smtp://127.0.0.1:2526, with the port it bound
    started_at: datetime = _ts(nullable=False, default=now_utc)
    beat_at: datetime = _ts(nullable=False, default=now_utc)
    last_batch_at: datetime | None = _ts(nullable=True)  # the pipeline's newest processed message


class BouncedAddress(TableModel, table=True):
    """An address whose mail failed permanently (RFC 3464 DSN, status 5.x.x): automatic mail to
    it stops desk-wide until `quiet_until` ([limits] bounce_quiet_days), so a dead address does
    not get an acknowledgement for every new request (backscatter). A human's reply still goes.
    One row per address; a later bounce moves `quiet_until` on."""

    __tablename__ = "bouncedaddress"

    address: str = Field(primary_key=True)
    quiet_until: datetime = _ts(nullable=False)
    status: str = ""  # the DSN's Status, e.g. 5.1.1
    diagnostic: str = ""  # the DSN's words (Diagnostic-Code), as the receiving server gave them
    ticket_id: int | None = None  # the ticket whose mail bounced
    bounced_at: datetime = _ts(nullable=False, default=now_utc)


class AdminNotice(TableModel, table=True):
    """Something an admin must hear of (a quarantined message, a refused rules edit, a held flood
    or loop). Admins get at most one mail per kind per `[limits] admin_notice_minutes`: the first
    notice of a quiet kind goes at once, later ones wait (`sent_at` empty) for the next digest."""

    __tablename__ = "adminnotice"
    __table_args__ = (Index("ix_adminnotice_kind_sent", "kind", "sent_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # quarantine, rules-refused, held:flood, loop
    subject: str
    text: str
    created_at: datetime = _ts(nullable=False, default=now_utc)
    sent_at: datetime | None = _ts(nullable=True)


class ReportOptOut(TableModel, table=True):
    """People who asked not to get the weekly report mail (`mailgate report --opt-out ADDRESS`);
    group leads and admins get it otherwise."""

    __tablename__ = "reportoptout"

    address: str = Field(primary_key=True)
    created_at: datetime = _ts(nullable=False, default=now_utc)


class ReportFacts(TableModel, table=True):
    """A ticket's figures as `mailgate report` measured them (mailgate/reports/facts.py): its
    first-response and resolution times in business hours and its SLA targets. They need its
    status trail and the business calendar, which SQL has not, and they change only when the
    ticket does, so a year's report measures only the tickets changed since the last one.
    `fingerprint` covers everything the figures depend on (the ticket's columns, its status
    trail, the SLA rules and workflow): a row whose fingerprint differs from the ticket's now is
    stale and measured again. Instants are microseconds since the epoch, so reading a year of
    them parses no timestamps."""

    __tablename__ = "reportfacts"

    ticket_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})  # Ticket.id
    fingerprint: str
    stable_us: int = Field(sa_column=Column(BigInteger, nullable=False))  # the last fact's instant
    policy: str | None = None
    first_response_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    first_response_s: float | None = None
    resolved_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    resolution_s: float | None = None
    # Per SLA target: when it was completed, whether late then, and when it falls due (for one
    # still outstanding: breached once a report's clock passes it).
    fr_done_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    fr_breached: bool | None = None
    fr_due_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    res_done_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    res_breached: bool | None = None
    res_due_us: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class SpentLink(TableModel, table=True):
    """A single-use link already used: an agent's sign-in link signs in once (docs/web.md). The
    primary key makes the spending atomic across threads and processes: of two POSTs of one link,
    one inserts and the other meets the key. A row is needed only until the link expires."""

    __tablename__ = "spentlink"

    mac: str = Field(primary_key=True)  # the link's MAC: unique per payload, and no secret
    address: str
    expires_at: datetime = _ts(nullable=False)
    spent_at: datetime = _ts(nullable=False, default=now_utc)
