"""Facts for `mailgate status`: what an operator (or a monitoring check) needs to know at a glance.

`gather(config, db)` reads the database and the rules files once and returns a `Status`: the
running daemons as their heartbeat rows report them (pid, host, the listeners with the ports they
really bound, started at, last beat, last batch; mailgate/store/heartbeat.py), the last progress
of each IMAP poller, inbox and outbox depth, the age of the oldest unsent mail and of the oldest
unprocessed message, failed and quarantined counts, and the rules version in force.
`Status.attention` lists, in words, what needs a human; the CLI exits 1 when it is not empty.

Read-only: it never changes a row, never sends mail and never talks to a mail server. It does not
know about the IMAP tables' module (another part owns it); it looks the table up by name and
carries on without it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, inspect, select, text
from sqlmodel import col

from mailgate.config import Config
from mailgate.store.db import Database
from mailgate.store.heartbeat import Beat, daemons
from mailgate.store.kinds import EventKind
from mailgate.store.models import Event, InboxItem, OutboxItem, now_utc, utc

# Mail older than this still unsent means the relay is down or refusing: a human should look.
DEFAULT_MAX_UNSENT_AGE = timedelta(minutes=15)


@dataclass(frozen=True)
class ImapMailbox:
    account: str
    folder: str
    last_progress: str | None  # ISO time the poller last moved forward, None = never polled
    given_up: int = 0  # messages left on the server after repeated failures


@dataclass(frozen=True)
class Daemon:
    """A `mailgate run` by its heartbeat; times in ISO form, as JSON carries them."""

    host: str
    pid: int
    listeners: list[str]
    started_at: str
    beat_at: str
    last_batch_at: str | None
    alive: bool

    @classmethod
    def of(cls, b: Beat) -> Daemon:
        last = b.last_batch_at.isoformat() if b.last_batch_at else None
        return cls(b.host, b.pid, b.listeners, b.started_at.isoformat(), b.beat_at.isoformat(), last, b.alive)


@dataclass(frozen=True)
class Status:
    listeners: list[str]  # what the running daemons listen on, real ports; [] when none runs
    configured_listeners: list[str]  # what config.toml asks for
    daemons: list[Daemon]
    imap: list[ImapMailbox]
    inbox_new: int
    inbox_processing: int
    quarantined: int
    outbox_pending: int
    outbox_failed: int
    oldest_unsent_seconds: float | None
    oldest_unprocessed_seconds: float | None
    rules_on_disk: str | None  # fingerprint of the files now; None when they do not load
    rules_in_force: str | None  # the version the pipeline last routed a ticket with
    rules_errors: list[str] = field(default_factory=list)
    attention: list[str] = field(default_factory=list)
    no_database: str = ""  # why there is none yet: a desk that never ran (`nothing_yet`)

    @property
    def ok(self) -> bool:
        return not self.attention

    @property
    def running(self) -> list[Daemon]:
        return [d for d in self.daemons if d.alive]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def listeners(config: Config, smtp_port: int | None = None) -> list[str]:
    """The intakes this configuration runs, as an operator would name them; `smtp_port` is the
    port the running listener bound (the daemon passes it for its heartbeat)."""
    out = []
    if config.smtp.enabled:
        proto = "lmtp" if config.smtp.lmtp else "smtp"
        out.append(f"{proto}://{config.smtp.host}:{smtp_port or config.smtp.port}")
    for acct in getattr(config, "imap", ()):  # [[imap]] accounts, when this build has them
        out.append(f"imap://{acct.user}@{acct.host}:{acct.port}/{acct.folder} -> {acct.desk}")
    return out


def rules_fingerprint(config: Config) -> tuple[str | None, list[str]]:
    """(version, errors) of the rules files and templates on disk, by the daemon's own loader, so
    the version compares with the one the daemon records on every routed ticket."""
    from mailgate.domain.rulesfile import RulesInvalid
    from mailgate.ruleset import load

    try:
        return load(config.rules_dir, config.templates_dir, config.desks).version, []
    except RulesInvalid as exc:
        return None, [str(e) for e in exc.errors]


def _imap(db: Database) -> list[ImapMailbox]:
    insp = inspect(db.engine)
    if not insp.has_table("imap_folder_state"):
        return []
    given_up: dict[tuple[str, str], int] = {}
    with db.engine.connect() as conn:
        if insp.has_table("imap_failure"):
            for account, folder, n in conn.execute(
                text(
                    "SELECT account, folder, COUNT(*) FROM imap_failure WHERE given_up "
                    "GROUP BY account, folder"
                )
            ):
                given_up[(account, folder)] = int(n)
        rows = conn.execute(
            text("SELECT account, folder, updated_at FROM imap_folder_state ORDER BY account, folder")
        ).all()
    out = []
    for account, folder, updated in rows:
        if isinstance(updated, str):  # SQLite hands back text for a raw SELECT
            updated = datetime.fromisoformat(updated)
        out.append(
            ImapMailbox(
                account=account,
                folder=folder,
                last_progress=utc(updated).isoformat() if updated else None,
                given_up=given_up.pop((account, folder), 0),
            )
        )
    out.extend(ImapMailbox(a, f, None, n) for (a, f), n in given_up.items())
    return out


def gather(
    config: Config,
    db: Database,
    *,
    now: datetime | None = None,
    max_unsent_age: timedelta = DEFAULT_MAX_UNSENT_AGE,
) -> Status:
    now = now or now_utc()
    with db.session() as s:
        inbox_counts = dict(
            s.execute(select(col(InboxItem.state), func.count()).group_by(col(InboxItem.state))).all()
        )
        outbox_counts = dict(
            s.execute(select(col(OutboxItem.state), func.count()).group_by(col(OutboxItem.state))).all()
        )
        oldest = s.execute(
            select(func.min(col(OutboxItem.created_at))).where(col(OutboxItem.state) == "pending")
        ).scalar_one()
        oldest_new = s.execute(
            select(func.min(col(InboxItem.received_at))).where(col(InboxItem.state) == "new")
        ).scalar_one()
        last_routed = s.execute(
            select(col(Event.data))
            .where(col(Event.kind) == EventKind.ROUTED)
            .order_by(col(Event.id).desc())
            .limit(1)
        ).scalar_one_or_none()
    oldest_age = (now - utc(oldest)).total_seconds() if oldest is not None else None
    new_age = (now - utc(oldest_new)).total_seconds() if oldest_new is not None else None
    on_disk, rules_errors = rules_fingerprint(config)
    in_force = (last_routed or {}).get("rules_version") if isinstance(last_routed, dict) else None
    beats = [Daemon.of(b) for b in daemons(db, now)]
    status = Status(
        listeners=[x for d in beats if d.alive for x in d.listeners],
        configured_listeners=listeners(config),
        daemons=beats,
        imap=_imap(db),
        inbox_new=int(inbox_counts.get("new", 0)),
        inbox_processing=int(inbox_counts.get("processing", 0)),
        quarantined=int(inbox_counts.get("failed", 0)),
        outbox_pending=int(outbox_counts.get("pending", 0)),
        outbox_failed=int(outbox_counts.get("failed", 0)),
        oldest_unsent_seconds=round(oldest_age, 1) if oldest_age is not None else None,
        oldest_unprocessed_seconds=round(new_age, 1) if new_age is not None else None,
        rules_on_disk=on_disk,
        rules_in_force=in_force,
        rules_errors=rules_errors,
    )
    status.attention.extend(_attention(status, max_unsent_age, oldest_age, new_age) + _stranded(db, now))
    return status


def nothing_yet(config: Config, missing: str) -> Status:
    """The status of a desk that never ran: no database yet, so nothing received, nothing to send,
    and no daemon. Told as a status, not as an error: a monitoring check gets the exit 1 of "no
    daemon is running" with the reason, and a new admin is told what to do next."""
    on_disk, rules_errors = rules_fingerprint(config)
    status = Status(
        listeners=[],
        configured_listeners=listeners(config),
        daemons=[],
        imap=[],
        inbox_new=0,
        inbox_processing=0,
        quarantined=0,
        outbox_pending=0,
        outbox_failed=0,
        oldest_unsent_seconds=None,
        oldest_unprocessed_seconds=None,
        rules_on_disk=on_disk,
        rules_in_force=None,
        rules_errors=rules_errors,
        no_database=missing,
    )
    status.attention.append(
        f"no daemon has run with this configuration yet: {missing}; start it with `mailgate run`"
        " (or, if the desk is elsewhere, name its config: --config FILE)"
    )
    status.attention.extend(_attention(status, DEFAULT_MAX_UNSENT_AGE, None, None))
    return status


def _attention(
    st: Status, max_unsent_age: timedelta, oldest_age: float | None, new_age: float | None
) -> list[str]:
    """What needs a human, one sentence each, with the command that shows more."""
    out = []
    if not st.running and not st.no_database:  # a desk that never ran says so in its own words
        out.append(
            "no daemon is running: mail piped in is stored but not processed, and nothing is sent;"
            " start it with `mailgate run`"
        )
    if new_age is not None and new_age > max_unsent_age.total_seconds():
        out.append(
            f"the oldest unprocessed message came in {_age(new_age)} ago (limit"
            f" {_age(max_unsent_age.total_seconds())}): is the pipeline working? see `mailgate inbox list`"
        )
    if st.quarantined:
        out.append(f"{st.quarantined} message(s) quarantined: see `mailgate inbox failed`")
    if st.outbox_failed:
        out.append(f"{st.outbox_failed} outgoing mail(s) failed for good: see `mailgate outbox failed`")
    # The age as measured, not as shown: rounded to a tenth, a mail queued 40 ms ago was not
    # over a limit of zero.
    if (
        st.oldest_unsent_seconds is not None
        and oldest_age is not None
        and oldest_age > max_unsent_age.total_seconds()
    ):
        out.append(
            f"oldest unsent mail is {_age(st.oldest_unsent_seconds)} old (limit {_age(max_unsent_age.total_seconds())}):"
            " is the relay reachable? see `mailgate outbox list`"
        )
    if st.rules_errors:
        out.append(
            f"rules on disk do not load ({len(st.rules_errors)} error(s)); the daemon keeps the last good"
            " rules: run `mailgate config check`"
        )
    for box in st.imap:
        if box.given_up:
            out.append(
                f"IMAP {box.account}/{box.folder}: {box.given_up} message(s) given up, left on the server"
            )
    return out


def _stranded(db: Database, now: datetime, show: int = 5) -> list[str]:
    """Rows claimed by a worker that is not alive: its lease (store/lease.py) ran out without a
    renewal, so it died, froze or lost its machine. A running worker takes them on its next
    claim; one listed here means none has yet (is a worker running?)."""
    out: list[str] = []
    with db.reading() as s:
        for model, state, what in ((InboxItem, "processing", "inbox"), (OutboxItem, "sending", "outbox")):
            until = col(model.claimed_until)
            rows = s.execute(
                select(col(model.id), col(model.claimed_by), col(model.claimed_at), until)
                .where(col(model.state) == state, until.is_(None) | (until < now))
                .order_by(col(model.id))
            ).all()
            for row_id, by, at, end in rows[:show]:
                age = _age((now - utc(at)).total_seconds()) if at else "?"
                past = _age((now - utc(end)).total_seconds()) if end else "?"
                out.append(
                    f"{what} row {row_id} claimed {age} ago by {by}, not alive (lease ran out"
                    f" {past} ago): it waits for a running worker to take it"
                )
            if len(rows) > show:
                out.append(f"... and {len(rows) - show} more {what} row(s) like it")
    return out


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _when(iso: str | None, now: datetime) -> str:
    if iso is None:
        return "never"
    at = datetime.fromisoformat(iso)
    return f"{at:%Y-%m-%d %H:%M:%S} UTC ({_age(max((now - at).total_seconds(), 0))} ago)"


def render_text(st: Status, now: datetime | None = None) -> str:
    """The human form of `mailgate status`."""
    now = now or now_utc()
    lines = []
    for d in st.running:
        lines.append(
            f"daemon:   running, pid {d.pid} on {d.host}, started {_when(d.started_at, now)};"
            f" last beat {_age(max((now - datetime.fromisoformat(d.beat_at)).total_seconds(), 0))} ago;"
            f" last batch {_when(d.last_batch_at, now)}"
        )
    if not st.running:
        gone = st.daemons[0] if st.daemons else None
        lines.append(
            "daemon:   NOT RUNNING"
            + (f" (last seen: pid {gone.pid} on {gone.host}, {_when(gone.beat_at, now)})" if gone else "")
            + (" (never started here: nothing received yet)" if st.no_database else "")
        )
        configured = ", ".join(st.configured_listeners) or "none (pipe/ingest only)"
        lines.append(f"intake:   nothing listens (config.toml: {configured})")
    else:
        lines.append("intake:   " + (", ".join(st.listeners) if st.listeners else "none (pipe/ingest only)"))
    for box in st.imap:
        last = box.last_progress or "never"
        lines.append(f"imap:     {box.account} {box.folder}: last progress {last}")
    waiting = (
        f" (oldest {_age(st.oldest_unprocessed_seconds)})"
        if st.oldest_unprocessed_seconds is not None
        else ""
    )
    lines.append(
        f"inbox:    {st.inbox_new} new{waiting}, {st.inbox_processing} processing, {st.quarantined} quarantined"
    )
    oldest = f", oldest {_age(st.oldest_unsent_seconds)}" if st.oldest_unsent_seconds is not None else ""
    lines.append(f"outbox:   {st.outbox_pending} pending{oldest}, {st.outbox_failed} failed")
    rules = st.rules_on_disk or "INVALID"
    if st.rules_in_force and st.rules_in_force != st.rules_on_disk:
        rules += f" (last used by the pipeline: {st.rules_in_force})"
    lines.append(f"rules:    {rules}")
    lines.extend(f"  {e}" for e in st.rules_errors)
    if st.attention:
        lines.append("ATTENTION:")
        lines.extend(f"  - {a}" for a in st.attention)
    else:
        lines.append("ok")
    return "\n".join(lines)
