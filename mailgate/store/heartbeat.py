"""The daemon's heartbeat: one `DaemonBeat` row per running `mailgate run`, written every few
seconds, deleted when it stops. `mailgate status` reads it to say what runs (pid, host, the ports
it listens on, when it started, when the pipeline last worked) or that nothing does.

A row whose beat is older than `STALE_AFTER` is a daemon that died without its stop (SIGKILL, a
power cut); status reports it as gone and when it was last seen. The row is the daemon's own
word, written from its main process: it never decides anything, and nothing else writes it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col

from mailgate.store.db import Database
from mailgate.store.models import DaemonBeat, InboxItem, now_utc, utc

log = logging.getLogger(__name__)
BEAT_SECONDS = 5.0
STALE_AFTER = timedelta(seconds=4 * BEAT_SECONDS)  # three beats missed: not running


def _last_batch(db: Database) -> datetime | None:
    """When the pipeline last finished a message: the processing time of the newest done or
    quarantined row (the state index finds each newest id without a scan). A read: on SQLite it
    takes no write lock from the pipeline."""
    with db.reading() as s:
        newest = [
            s.execute(select(func.max(col(InboxItem.id))).where(col(InboxItem.state) == state)).scalar()
            for state in ("done", "failed")
        ]
        ids = [i for i in newest if i is not None]
        if not ids:
            return None
        return utc(
            s.execute(
                select(func.max(col(InboxItem.processed_at))).where(col(InboxItem.id).in_(ids))
            ).scalar()
        )


class Heartbeat:
    """Writes this process's row now and every `BEAT_SECONDS` in a thread, until `stop`."""

    def __init__(self, db: Database, listeners: list[str]) -> None:
        self.db = db
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}"
        self.listeners = listeners
        self.started_at = now_utc()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="heartbeat", daemon=True)

    def beat(self) -> None:
        last_batch = _last_batch(self.db)
        with self.db.session() as s:
            row = s.get(DaemonBeat, self.id) or DaemonBeat(
                id=self.id, host=self.host, pid=self.pid, started_at=self.started_at
            )
            row.listeners, row.beat_at, row.last_batch_at = list(self.listeners), now_utc(), last_batch
            s.add(row)

    def _serve(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self.beat()
            except SQLAlchemyError as exc:  # the database away for a moment: status will say so
                log.warning("heartbeat not written: %s", exc)

    def start(self) -> Heartbeat:
        # Rows of daemons on this host that died without their stop (SIGKILL) are history now.
        with self.db.session() as s:
            s.execute(
                delete(DaemonBeat).where(
                    col(DaemonBeat.host) == self.host, col(DaemonBeat.beat_at) < now_utc() - STALE_AFTER
                )
            )
        self.beat()  # before the caller goes on: status is right from the first moment
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and remove the row: status says at once that this daemon is gone."""
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            with self.db.session() as s:
                s.execute(delete(DaemonBeat).where(col(DaemonBeat.id) == self.id))
        except SQLAlchemyError as exc:
            log.warning("heartbeat row not removed (status will see it go stale): %s", exc)


@dataclass(frozen=True)
class Beat:
    """One daemon as status reports it."""

    host: str
    pid: int
    listeners: list[str]
    started_at: datetime
    beat_at: datetime
    last_batch_at: datetime | None
    alive: bool


def daemons(db: Database, now: datetime | None = None) -> list[Beat]:
    """Every daemon that wrote a heartbeat, newest first, each marked alive or not: alive when its
    last beat is recent and, on this host, its process still exists."""
    now = now or now_utc()
    here = socket.gethostname()
    with db.reading() as s:
        rows = list(s.execute(select(DaemonBeat).order_by(col(DaemonBeat.beat_at).desc())).scalars())
    out = []
    for r in rows:
        alive = now - utc(r.beat_at) < STALE_AFTER and (r.host != here or _pid_exists(r.pid))
        out.append(
            Beat(
                r.host,
                r.pid,
                list(r.listeners),
                utc(r.started_at),
                utc(r.beat_at),
                utc(r.last_batch_at),
                alive,
            )
        )
    return out


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True
