"""IMAP intake: one poller thread per [[imap]] account; bytes in, `accept` out, flag after commit.

The order that makes it lossless and duplicate-free, per message, oldest UID first:

    FETCH BODY.PEEK[] (does not set \\Seen, RFC 3501 6.4.5)
    → Acceptor.accept(raw, source_key = account:folder:uidvalidity:uid)   commits, then returns
    → after_commit hook (tests kill the process here)
    → \\Seen | MOVE (RFC 6851; else COPY + \\Deleted + UID EXPUNGE, RFC 4315) | delete
    → last UID recorded (mailgate/store/imap_state.py)

A crash anywhere before the last step fetches the message again; `accept` recognises it by its
source key (same UIDVALIDITY and UID), or by Message-ID after a UIDVALIDITY change, and drops it,
so no second ticket and no second acknowledgement. The first visit to a folder takes only UNSEEN
mail (or SINCE a date, or all) among what is already there, so pointing mailgate at a full
mailbox never acknowledges last year's senders.

Connection trouble is one outage: logged once, retried with exponential backoff and jitter. A
message the server cannot deliver (or `accept` cannot take, the database aside) is counted per
UID and left on the server after `max_tries`, so it never blocks the ones after it. IDLE
(RFC 2177) is used where offered and re-issued every 25 minutes (the RFC asks for < 29) or every
poll_seconds if sooner, as a safety net; without IDLE the folder is polled every poll_seconds.

imapclient is blocking: it runs only in these threads, never on the SMTP event loop. This module
never parses mail and never imports the pipeline; it wakes the pipeline through a callback.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime

from imapclient import DELETED, SEEN, IMAPClient
from sqlalchemy.exc import SQLAlchemyError

from mailgate.config import Config, ImapAccount
from mailgate.intake.accept import Acceptor, AcceptResult, Envelope
from mailgate.intake.imap_auth import ImapError, classify, connect
from mailgate.store import imap_state
from mailgate.store.db import Database
from mailgate.store.locks import SessionLock
from mailgate.store.models import now_utc

log = logging.getLogger(__name__)

IDLE_RENEW_SECONDS = 25 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
IDLE_CHECK_SECONDS = 0.5  # how quickly a waiting poller notices stop()
LOCK_RETRY_SECONDS = 2.0  # a standby poller takes over this soon after the holder dies
# A running poller that made no progress for this many poll intervals is stuck (/healthz says
# so): with IDLE or without, a healthy one finishes a pass at least once per poll interval.
STUCK_POLLS = 3


class MessageBrokeSession(Exception):
    """The server closed the session while handing over one message (Dovecot answers an
    unreadable message with BYE). The failure is recorded against that UID; reconnect."""


@dataclass
class PassResult:
    """What one pass over the folder did."""

    uidvalidity: int = 0
    seen: int = 0  # candidate messages looked at
    stored: int = 0  # new inbox rows
    duplicates: int = 0  # already stored (crash before the flag, or UIDVALIDITY resync)
    failed: int = 0
    resynced: bool = False


@dataclass(frozen=True)
class PollerHealth:
    """One poller as /healthz sees it (`ImapPoller.health()`)."""

    account: str
    running: bool  # its thread is alive
    last_progress: datetime | None  # UTC: the last finished pass, stored message or standby check
    quiet_seconds: float  # since then (or since start)
    stuck_after: float  # seconds: STUCK_POLLS poll intervals
    error: str | None  # what the current outage is, if the poller is in one

    @property
    def problem(self) -> str | None:
        """Why this poller is not healthy, or None: dead, or stuck (no progress for too long)."""
        if not self.running:
            return f"IMAP poller {self.account} not running"
        if self.quiet_seconds <= self.stuck_after:
            return None
        why = f": {self.error}" if self.error else ""
        return f"IMAP poller {self.account} stuck: no progress for {self.quiet_seconds:.0f}s{why}"


def is_connection_loss(exc: BaseException) -> bool:
    """A dead socket (the server went away), as opposed to the server refusing one command."""
    if isinstance(exc, OSError | ImapError):
        return True
    return isinstance(exc, imaplib.IMAP4.abort) and "socket error" in str(exc)


class ImapPoller:
    """Polls one account's folder. `serve()` runs until `stop()`; `run_once()` does one pass.

    `wake` is called after a commit that stored something (the daemon passes runner.wake.set);
    `after_commit(uid, result)` runs right after `accept` returned and before the flag/move —
    the point a crash test kills the process at.
    """

    def __init__(
        self,
        account: ImapAccount,
        db: Database,
        acceptor: Acceptor,
        *,
        desk_address: str,
        wake: Callable[[], None] | None = None,
        after_commit: Callable[[int, AcceptResult], None] | None = None,
        max_tries: int = 3,
        retry_base: float = 1.0,
        retry_max: float = 300.0,
        timeout: float = 60.0,
        idle_renew: float = IDLE_RENEW_SECONDS,
    ) -> None:
        self.account = account
        self.db = db
        self.lock = SessionLock(db, f"imap:{account.name}:{account.folder}")
        self.acceptor = acceptor
        self.desk_address = desk_address
        self.wake = wake
        self.after_commit = after_commit
        self.max_tries = max_tries
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.timeout = timeout
        self.idle_renew = idle_renew
        self.source = f"imap:{account.name}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0  # completed passes, for tests and status
        self._progress: float | None = None  # time.monotonic() of the last progress (health())
        self._progress_at: datetime | None = None
        self._started = time.monotonic()
        self._error: str | None = None

    # -- health -------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Whether the poller's thread is running (False before start() and after it died)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def last_progress(self) -> datetime | None:
        """When (UTC) it last made progress: finished a pass over the folder, stored a message, or,
        on standby, found the mailbox still polled by another process. None: not yet."""
        return self._progress_at

    def health(self) -> PollerHealth:
        """Alive, and making progress? (The daemon's `alive()` reports `.problem` on /healthz.)"""
        quiet = time.monotonic() - (self._progress if self._progress is not None else self._started)
        return PollerHealth(
            account=self.account.name,
            running=self.alive,
            last_progress=self._progress_at,
            quiet_seconds=quiet,
            stuck_after=STUCK_POLLS * self.account.poll_seconds,
            error=self._error,
        )

    def _progressed(self) -> None:
        self._progress, self._progress_at = time.monotonic(), now_utc()

    # -- one pass over the folder -------------------------------------------------------------
    def run_once(self) -> PassResult:
        """Connect, do one pass, log out. Raises ImapError on connection trouble."""
        client = connect(self.account, self.timeout)
        try:
            self.prepare(client)
            return self.sync(client)
        finally:
            _close(client)

    def prepare(self, client: IMAPClient) -> None:
        """Make sure the MOVE target exists, so a move never fails after a commit for that reason."""
        if self.account.after == "move" and not client.folder_exists(self.account.move_to):
            client.create_folder(self.account.move_to)
            log.info("imap %s: created folder %s", self.account.name, self.account.move_to)

    def sync(self, client: IMAPClient) -> PassResult:
        acct = self.account
        info = client.select_folder(acct.folder)
        uidvalidity = int(info[b"UIDVALIDITY"])
        result = PassResult(uidvalidity=uidvalidity)
        last_uid, horizon = self._position(client, info, uidvalidity, result)
        with self.db.session() as s:
            given_up = {
                f.uid
                for f in imap_state.failures(s, acct.name)
                if f.folder == acct.folder and f.uidvalidity == uidvalidity and f.given_up
            }
        candidates: list[int] = []
        if last_uid < horizon:
            # Already there at the first visit: only what the first-run option selects.
            candidates += client.search(["UID", f"{last_uid + 1}:{horizon}", *self._first_run_criteria()])
        start = max(last_uid, horizon) + 1
        # "n:*" always matches the highest UID even when it is below n (RFC 3501 6.4.8): filter.
        candidates += [u for u in client.search(["UID", f"{start}:*"]) if u >= start]
        blocked = False  # a UID before this one is still pending: do not move last_uid past it
        for uid in sorted(set(candidates)):
            if self._stop.is_set():
                break
            if uid in given_up:
                if not blocked:
                    self._advance(uidvalidity, uid)
                continue
            result.seen += 1
            done = self._one(client, uid, uidvalidity, result)
            if done and not blocked:
                self._advance(uidvalidity, uid)
            blocked = blocked or not done
        self.passes += 1
        self._progressed()
        return result

    def _position(
        self, client: IMAPClient, info: dict, uidvalidity: int, result: PassResult
    ) -> tuple[int, int]:
        acct = self.account
        with self.db.session() as s:
            state = imap_state.get_state(s, acct.name, acct.folder)
            if state is not None and state.uidvalidity == uidvalidity:
                return state.last_uid, state.horizon_uid
            first = state is None
            if state is None:
                log.info(
                    "imap %s: first visit to %s (first_run = %s)", acct.name, acct.folder, acct.first_run
                )
            else:
                # RFC 3501 2.3.1.1: the old UIDs mean nothing now. Take the folder again; what we
                # already stored is recognised by Message-ID at accept and only flagged/moved.
                log.warning(
                    "imap %s: UIDVALIDITY of %s changed from %s to %s; resynchronising",
                    acct.name,
                    acct.folder,
                    state.uidvalidity,
                    uidvalidity,
                )
                result.resynced = True
            horizon = 0
            # In move/delete mode everything still in the folder is unfinished business after a
            # resync; in seen mode (and on any first visit) the first-run selection applies.
            if acct.first_run != "all" and (first or acct.after == "seen"):
                uidnext = info.get(b"UIDNEXT")
                horizon = int(uidnext) - 1 if uidnext else max(client.search(["ALL"]) or [0])
            state = imap_state.reset(s, acct.name, acct.folder, uidvalidity, horizon)
            return state.last_uid, state.horizon_uid

    def _first_run_criteria(self) -> list[object]:
        if self.account.first_run == "since":
            return ["SINCE", date.fromisoformat(self.account.since)]
        if self.account.first_run == "unseen":
            return ["UNSEEN"]
        return []

    def _advance(self, uidvalidity: int, uid: int) -> None:
        with self.db.session() as s:
            imap_state.advance(s, self.account.name, self.account.folder, uidvalidity, uid)
        self._progressed()

    def _one(self, client: IMAPClient, uid: int, uidvalidity: int, result: PassResult) -> bool:
        """Fetch, accept, then flag/move/delete one message. True when it is finished with."""
        acct = self.account
        try:
            data = client.fetch([uid], ["BODY.PEEK[]"])
            raw = data[uid][b"BODY[]"] if uid in data else None
        except Exception as exc:  # noqa: BLE001 - sorted below: dead connection vs this message
            if is_connection_loss(exc):
                raise
            return self._failed(uid, uidvalidity, exc, result)
        if raw is None:
            log.info("imap %s: UID %d vanished before it could be fetched", acct.name, uid)
            return True
        envelope = Envelope(
            rcpt_tos=(self.desk_address,),
            source=self.source,
            source_key=f"{acct.name}:{acct.folder}:{uidvalidity}:{uid}",
        )
        try:
            accepted = self.acceptor.accept(bytes(raw), envelope)
        except SQLAlchemyError:
            raise  # the database is away: an outage, not this message's fault; retried whole
        except Exception as exc:  # noqa: BLE001 - this message cannot be stored; count it
            return self._failed(uid, uidvalidity, exc, result)
        # Committed. From here on a crash only means: fetched again, recognised, dropped.
        if self.after_commit is not None:
            self.after_commit(uid, accepted)
        result.stored += len(accepted.stored)
        result.duplicates += 0 if accepted.stored else 1
        if accepted.stored and self.wake is not None:
            self.wake()
        self._after(client, uid)
        return True

    def _after(self, client: IMAPClient, uid: int) -> None:
        """Tell the server the message is safely stored: \\Seen, MOVE, or delete."""
        acct = self.account
        try:
            if acct.after == "seen":
                client.add_flags([uid], [SEEN], silent=True)
            elif acct.after == "move":
                if client.has_capability("MOVE"):
                    client.move([uid], acct.move_to)
                else:
                    client.copy([uid], acct.move_to)
                    self._delete(client, uid)
            else:
                self._delete(client, uid)
        except Exception as exc:  # noqa: BLE001 - stored already; only the server-side tidy-up failed
            if is_connection_loss(exc):
                raise
            log.warning("imap %s: UID %d is stored but %s failed: %s", acct.name, uid, acct.after, exc)

    @staticmethod
    def _delete(client: IMAPClient, uid: int) -> None:
        client.add_flags([uid], [DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([uid])  # RFC 4315: expunge only this one, not others' \Deleted mail
        else:
            client.expunge()

    def _failed(self, uid: int, uidvalidity: int, exc: BaseException, result: PassResult) -> bool:
        acct = self.account
        result.failed += 1
        with self.db.session() as s:
            row = imap_state.record_failure(
                s, acct.name, acct.folder, uidvalidity, uid, f"{type(exc).__name__}: {exc}", self.max_tries
            )
            attempts, given_up = row.attempts, row.given_up
        if given_up:
            log.error(
                "imap %s: giving up on UID %d in %s after %d tries, left on the server: %s",
                acct.name,
                uid,
                acct.folder,
                attempts,
                exc,
            )
        else:
            log.warning(
                "imap %s: UID %d failed (try %d of %d): %s", acct.name, uid, attempts, self.max_tries, exc
            )
        if isinstance(exc, imaplib.IMAP4.abort):
            raise MessageBrokeSession(str(exc)) from exc
        return given_up

    # -- the thread ---------------------------------------------------------------------------
    def serve(self) -> None:
        """Connect, sync, wait (IDLE or poll), repeat; reconnect with backoff until stop()."""
        acct = self.account
        outage_since: float | None = None
        failures = 0
        standby_logged = False
        while not self._stop.is_set():
            try:
                # One poller per mailbox across processes sharing a PostgreSQL (DESIGN.md "Scale").
                if not self.lock.acquire():
                    if not standby_logged:
                        log.info("imap %s: another process polls this mailbox; standing by", acct.name)
                        standby_logged = True
                    self._progressed()  # standing by is this poller's job while another polls
                    self._stop.wait(LOCK_RETRY_SECONDS)
                    continue
                standby_logged = False
                client = connect(acct, self.timeout)
                try:
                    if outage_since is not None:
                        log.info(
                            "imap %s: connected again after %.0fs", acct.name, time.monotonic() - outage_since
                        )
                        outage_since = None
                    failures = 0
                    self._error = None
                    self.prepare(client)
                    while not self._stop.is_set() and self.lock.alive():
                        self.sync(client)
                        self._wait(client)
                finally:
                    _close(client)
            except MessageBrokeSession:
                self._stop.wait(self.retry_base)  # already logged against the UID
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect, never give up
                self._error = _describe(exc, acct)
                if outage_since is None:
                    outage_since = time.monotonic()
                    # Once per outage (STYLE habit 9), not once per retry.
                    log.warning("imap %s: %s; retrying with backoff", acct.name, self._error)
                else:
                    log.debug("imap %s: still failing: %s", acct.name, exc)
                delay = min(self.retry_max, self.retry_base * 2**failures)
                failures += 1
                self._stop.wait(random.uniform(delay / 2, delay))  # jitter: pollers never retry in step

    def _wait(self, client: IMAPClient) -> None:
        if not (self.account.idle and client.has_capability("IDLE")):
            self._stop.wait(self.account.poll_seconds)
            return
        client.idle()
        try:
            # Also bounded by poll_seconds: a safety net for a notification that came in the same
            # packet as the "+ idling" continuation, which imaplib's buffered reader holds back
            # from idle_check() (seen with Dovecot when mail arrives just as IDLE starts).
            renew = min(self.idle_renew, IDLE_RENEW_SECONDS, self.account.poll_seconds)
            deadline = time.monotonic() + renew
            while not self._stop.is_set() and time.monotonic() < deadline:
                responses = client.idle_check(timeout=IDLE_CHECK_SECONDS)
                if any(
                    isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses
                ):
                    return
        finally:
            client.idle_done()

    def start(self) -> ImapPoller:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self.serve, name=f"imap-{self.account.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.lock.release()


def _describe(exc: BaseException, account: ImapAccount) -> str:
    if isinstance(exc, SQLAlchemyError):
        return f"database unavailable: {type(exc).__name__}"
    return str(classify(exc, account))


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection may be dead already
        with contextlib.suppress(Exception):
            client.shutdown()


def pollers_for(
    config: Config, db: Database, acceptor: Acceptor, *, wake: Callable[[], None] | None = None
) -> list[ImapPoller]:
    """One poller per [[imap]] account, not started."""
    pollers = []
    for account in config.imap:
        desk = config.desk_by_key(account.desk)
        assert desk is not None, "config validation guarantees the desk exists"
        pollers.append(ImapPoller(account, db, acceptor, desk_address=desk.address, wake=wake))
    return pollers


# -- `mailgate imap check` ----------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    folder: str
    messages: int
    unseen: int
    uidvalidity: int
    uidnext: int
    capabilities: tuple[str, ...]
    move_to_exists: bool | None  # None unless after = "move"


def probe(account: ImapAccount, timeout: float = 15.0) -> Probe:
    """Connect, log in, look at the folder read-only. Raises ImapError with a clear message."""
    client = connect(account, timeout)
    try:
        try:
            status = client.folder_status(
                account.folder, [b"MESSAGES", b"UNSEEN", b"UIDVALIDITY", b"UIDNEXT"]
            )
        except imaplib.IMAP4.error as exc:
            raise ImapError("folder", f"folder {account.folder!r}: {exc}") from exc
        caps = tuple(sorted(c.decode() if isinstance(c, bytes) else str(c) for c in client.capabilities()))
        move_to = client.folder_exists(account.move_to) if account.after == "move" else None
        return Probe(
            folder=account.folder,
            messages=int(status[b"MESSAGES"]),
            unseen=int(status[b"UNSEEN"]),
            uidvalidity=int(status[b"UIDVALIDITY"]),
            uidnext=int(status.get(b"UIDNEXT", 0)),
            capabilities=caps,
            move_to_exists=move_to,
        )
    finally:
        _close(client)
