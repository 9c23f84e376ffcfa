"""Leases on claimed rows: who holds an inbox or outbox row, and until when.

A worker claims rows under a claim id that is new for every worker run: a random token, never a
PID. A PID says nothing about liveness — a zombie not yet reaped answers `kill(pid, 0)`, a reused
PID answers for a stranger, and in a fresh PID namespace (a container restart) the new worker gets
the dead one's PID every time. With the claim it writes `claimed_until` = now + the lease, and
renews it every `renew_seconds` while it holds the rows (`Keeper`, a thread). A worker that dies,
freezes or loses its machine stops renewing; once `claimed_until` has passed the row belongs to
nobody, and the next claim of any worker, on any machine, takes it (store.inbox.claim,
outbox.sender). On PostgreSQL every time is the database's clock, so the machines' clocks need
not agree.

This module must not decide what a row means or touch a row another worker holds; it only keeps
the times.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import DateTime, func, literal, or_
from sqlmodel import Session

from mailgate.store.db import Database
from mailgate.store.models import now_utc

log = logging.getLogger(__name__)

LEASE_SECONDS = 30.0  # long enough for a slow message, short enough that a restart picks up at once
RENEW_SECONDS = 10.0  # a third of the lease: two renewals may fail before it runs out


@dataclass(frozen=True)
class Lease:
    """One worker run's claim id and its lease. Made once per Runner or Sender, never reused."""

    token: str
    seconds: float = LEASE_SECONDS
    renew_seconds: float = RENEW_SECONDS

    @classmethod
    def new(cls, role: str, seconds: float = LEASE_SECONDS, renew_seconds: float = RENEW_SECONDS) -> Lease:
        """A fresh claim id. The host and role are only for people reading `mailgate status`;
        the random part is what makes it this run's and no other's."""
        return cls(f"{socket.gethostname()}/{role}/{secrets.token_hex(8)}", seconds, renew_seconds)


def clock(session: Session) -> Any:
    """Now, as an SQL expression: the database's clock on PostgreSQL (one clock for every machine
    sharing it), this process's clock on SQLite (one machine)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.statement_timestamp()
    return literal(now_utc(), DateTime(timezone=True))


def until(session: Session, lease: Lease) -> Any:
    """The `claimed_until` a claim or renewal writes."""
    if session.get_bind().dialect.name == "postgresql":
        return func.statement_timestamp() + timedelta(seconds=lease.seconds)
    return now_utc() + timedelta(seconds=lease.seconds)  # SQLite has no date arithmetic of this type


def expired(claimed_until: Any, now: Any) -> Any:
    """The condition "nobody holds this row any more" (a row from before leases has no time)."""
    return or_(claimed_until.is_(None), claimed_until < now)


class Keeper:
    """Renews a worker's lease from a thread, every `renew_seconds`, while rows are held
    (`with keeper.held():`). A thread, not the work loop, so a slow message or a slow relay never
    loses its rows; the process dying or freezing is what stops it.

    `renew(session, lease)` is the table's own UPDATE of the rows this lease holds."""

    def __init__(
        self, db: Database, lease: Lease, renew: Callable[[Session, Lease], int], name: str = "lease"
    ) -> None:
        self.db = db
        self.lease = lease
        self.renew = renew
        self.name = name
        self._held = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self._held += 1
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1

    def _run(self) -> None:
        while not self._stop.wait(self.lease.renew_seconds):
            with self._lock:
                if not self._held:
                    continue
            self.renew_now()

    def renew_now(self) -> None:
        """One renewal; a failure (the database briefly away) is logged once and tried again on
        the next tick: the lease allows two to fail."""
        try:
            with self.db.session(durable=False) as session:
                self.renew(session, self.lease)
        except Exception as exc:  # noqa: BLE001 - the next tick tries again
            if not self._failing:
                log.warning("%s: cannot renew the lease of %s: %s", self.name, self.lease.token, exc)
            self._failing = True
        else:
            if self._failing:
                log.info("%s: lease of %s renewed again", self.name, self.lease.token)
            self._failing = False

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
