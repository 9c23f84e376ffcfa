"""The periodic jobs of `mailgate run`: SLA check, triage reminder, auto-close, waiting-for-customer
reminder and close, deferred review, daily digest (docs/sla.md), weekly report mail (docs/reports.md),
and the daily sweep of attachment files no message names (store/sweep.py).

APScheduler only says *when* to look. Everything a job knows lives in the database — the
ticket's facts and the marks earlier runs stored (`pipeline/sla_apply.py`) — so a job is
idempotent: running it twice changes nothing the second time, a restart loses nothing, and
after downtime the first run catches up ONCE per ticket (the pure decisions in
`domain/timers.py` collapse missed periods into one action). Each job runs immediately at
start (the catch-up) and then every `sla_check_seconds` / `timers_seconds`.

One job for one desk is one transaction. Several daemons on one PostgreSQL run each job once:
the transaction starts with `pg_try_advisory_xact_lock(<job, desk>)` and a daemon that does not
get it skips that run (the lock is released at commit, so nobody waits and nothing is leaked by
a crash). On SQLite a single process is assumed; BEGIN IMMEDIATE serialises writers anyway.

`now` comes from an injectable clock, so tests move time instead of sleeping. This module must
not decide policy (domain/timers.py does) nor build mail (sla_apply.py and the templates do).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlmodel import Session, col

from mailgate.config import Desk, SchedulerSettings
from mailgate.domain import timers
from mailgate.domain.sla import SlaRules
from mailgate.domain.timers import TicketFacts
from mailgate.pipeline.runner import Runner
from mailgate.pipeline.sla_apply import SlaService, refresh_due, ticket_facts
from mailgate.reports.weekly import last_week_end, send_weekly
from mailgate.store.blobs import BlobStore, Swept
from mailgate.store.db import insert_for
from mailgate.store.models import JobState, Ticket, now_utc, utc
from mailgate.store.repo import Repo
from mailgate.store.sweep import sweep_attachments

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Run order inside one "timers" tick: closing first, so a ticket closed now is not also reviewed.
TIMER_JOBS = (
    "auto_close",
    "waiting_customer",
    "triage_reminder",
    "deferred_review",
    "digest",
    "weekly_report",
)
JOBS = ("sla_check", *TIMER_JOBS)


@dataclass(frozen=True)
class JobRun:
    """One job for one desk: whether it ran (False: another process held its lock, or no
    sla.toml) and how many actions it carried out."""

    job: str
    desk: str
    ran: bool
    actions: int = 0


def lock_id(job: str, desk: str) -> int:
    """A stable signed 64-bit key per (job, desk) for pg_try_advisory_xact_lock."""
    digest = hashlib.sha256(f"mailgate-job:{job}:{desk}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _take_lock(session: Session, job: str, desk: str) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True  # SQLite: one process; BEGIN IMMEDIATE already holds the write lock
    got = session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": lock_id(job, desk)})
    return bool(got.scalar_one())


def _job_state(session: Session, job: str, desk: str) -> JobState:
    """The job's row for the desk, created if missing (ON CONFLICT: a first run never collides)."""
    insert = insert_for(session.get_bind().dialect.name)
    session.execute(insert(JobState).values(job=job, desk=desk, last_actions=0).on_conflict_do_nothing())
    state = session.get(JobState, (job, desk))
    assert state is not None
    return state


class Scheduler:
    """The jobs over the runner's database, rules and notifier. `run_job`/`run_all` are the whole
    behaviour (tests call them with an injected clock); `start` only puts them on a timer."""

    def __init__(
        self,
        runner: Runner,
        *,
        clock: Clock = now_utc,
        settings: SchedulerSettings | None = None,
    ) -> None:
        self.runner = runner
        self.db = runner.db
        self.config = runner.config
        self.sla: SlaService = runner.sla
        self.clock = clock
        self.settings = settings or runner.config.scheduler
        self._scheduler: Any = None
        self._lock = threading.Lock()  # one tick at a time in this process

    # -- running jobs -------------------------------------------------------------------------------
    def now(self) -> datetime:
        now = self.clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the scheduler's clock must return timezone-aware times")
        return now.astimezone(UTC)

    def run_all(self, jobs: Sequence[str] = JOBS) -> list[JobRun]:
        return [self.run_job(job, desk) for job in jobs for desk in self.config.desks]

    def run_job(self, job: str, desk: Desk) -> JobRun:
        """Run one job for one desk in one transaction; see the module docstring."""
        if job not in JOBS:
            raise ValueError(f"unknown job {job!r}; jobs: {', '.join(JOBS)}")
        rules = self.sla.sla
        if rules is None and job != "weekly_report":  # the weekly report needs no SLA rules
            return JobRun(job, desk.key, ran=False)
        now = self.now()
        with self._lock, self.db.session() as session:
            if not _take_lock(session, job, desk.key):
                log.debug("%s for %s: another process holds the lock, skipped", job, desk.key)
                return JobRun(job, desk.key, ran=False)
            repo = Repo(session)
            state = _job_state(session, job, desk.key)
            if job == "weekly_report":
                actions = self._weekly(repo, desk, state, now)
            elif job == "digest":
                assert rules is not None
                actions = self._digest(repo, desk, rules, state, now)
            else:
                assert rules is not None
                actions = self._per_ticket(repo, job, desk, rules, now)
            state.last_run_at = now
            state.last_actions = actions
            session.add(state)
        if actions:
            log.info("%s for %s: %d action(s)", job, desk.key, actions)
            for fn in self.runner.after_commit:  # wake the sender
                fn()
        return JobRun(job, desk.key, ran=True, actions=actions)

    def _candidates(self, session: Session, job: str, desk: Desk) -> list[Ticket]:
        """The tickets a job can act on at all; the pure decision makes the final call."""
        workflow = self.runner.rules.current.workflow(desk)
        q = select(Ticket).where(col(Ticket.desk) == desk.key)
        if job in ("sla_check", "digest"):
            q = q.where(col(Ticket.status_category) != "closed")
        elif job == "triage_reminder":
            q = q.where(
                col(Ticket.status_category) == "open",
                col(Ticket.first_response_at).is_(None),
                col(Ticket.triage_reminded_at).is_(None),
            )
        elif job == "waiting_customer":
            q = q.where(col(Ticket.status_category) == "waiting")
        elif job == "auto_close":
            resolved = [s.id for s in workflow.statuses.values() if s.resolved and not s.final]
            q = q.where(col(Ticket.status).in_(resolved or [""]))
        elif job == "deferred_review":
            deferred = [s.id for s in workflow.statuses.values() if s.deferred]
            q = q.where(col(Ticket.status).in_(deferred or [""]))
        return list(session.execute(q.order_by(col(Ticket.id))).scalars())

    def _decide(self, job: str, facts: TicketFacts, rules: SlaRules, now: datetime) -> list[timers.Action]:
        settings = rules.timers
        if job == "sla_check":
            return list(timers.sla_check(facts, rules, now))
        if job == "triage_reminder":
            return list(timers.triage_reminder(facts, settings, now))
        if job == "auto_close":
            return list(timers.auto_close_resolved(facts, settings, now))
        if job == "waiting_customer":
            return list(timers.waiting_customer(facts, settings, now))
        if job == "deferred_review":
            return list(timers.deferred_review(facts, settings, now))
        raise ValueError(job)

    def _per_ticket(self, repo: Repo, job: str, desk: Desk, rules: SlaRules, now: datetime) -> int:
        workflow = self.runner.rules.current.workflow(desk)
        done = 0
        for ticket in self._candidates(repo.session, job, desk):
            # One ticket that cannot be handled (bad data) must not hold up the others: its own
            # savepoint rolls back only its writes, and it is tried again next run.
            try:
                with repo.session.begin_nested():
                    if job == "sla_check":
                        facts = refresh_due(repo, ticket, workflow, rules, now)
                        assert facts is not None
                    else:
                        facts = ticket_facts(repo, ticket, workflow, rules)
                    for action in self._decide(job, facts, rules, now):
                        applied = self.sla.apply(repo, desk, ticket, action, now)
                        if applied is not None:
                            done += 1
                            log.info("%s %s: %s", job, ticket.key, applied.summary)
            except Exception as exc:  # noqa: BLE001 - logged with the ticket; the job goes on
                log.error("%s: %s failed: %s: %s", job, ticket.key, type(exc).__name__, exc)
        return done

    def _digest(self, repo: Repo, desk: Desk, rules: SlaRules, state: JobState, now: datetime) -> int:
        workflow = self.runner.rules.current.workflow(desk)
        tickets = self._candidates(repo.session, "digest", desk)
        facts = [ticket_facts(repo, t, workflow, rules) for t in tickets]
        found = timers.digests(facts, rules, utc(state.last_digest_at), now)
        by_key = {t.key: t for t in tickets}
        sent = 0
        for digest in found:
            sent += len(self.sla.send_digest(repo, desk, digest, by_key, now))
        if found:
            for name, value in found[0].marks:
                setattr(state, name, value)
        elif timers.digest_due(rules.timers, utc(state.last_digest_at), now):
            state.last_digest_at = now  # owed but nobody has open tickets: the day is done
        return sent

    def admin_digest(self) -> int:
        """Mail the admins what waited for its kind's quiet time (pipeline/notify.flush_admin):
        the digest of quarantines, refused rules, floods and loops. Returns the mails queued."""
        with self._lock, self.db.session() as session:
            queued = self.runner.notifier.flush_admin(Repo(session), self.now())
        if queued:
            log.info("admin digest: %d mail(s)", queued)
            for fn in self.runner.after_commit:  # wake the sender
                fn()
        return queued

    def _admin_tick(self) -> None:
        try:
            self.admin_digest()
        except Exception as exc:  # noqa: BLE001 - e.g. database briefly down: next tick retries
            log.error("admin digest failed, will retry: %s: %s", type(exc).__name__, exc)

    def sweep_attachments(self) -> Swept:
        """Remove the attachment files no message names, older than `[scheduler]
        attachment_grace_hours` (store/sweep.py): what held, bounced or rolled-back mail and
        crashes left. Daily; safe beside the pipeline, and on several daemons at once."""
        grace = timedelta(hours=self.settings.attachment_grace_hours)
        blobs = BlobStore(self.config.state_dir / "attachments")  # where the runner puts them
        return sweep_attachments(self.db, blobs, grace=grace, now=self.now())

    def _sweep_tick(self) -> None:
        try:
            self.sweep_attachments()
        except Exception as exc:  # noqa: BLE001 - e.g. database briefly down: tomorrow's run retries
            log.error("attachment sweep failed, will retry: %s: %s", type(exc).__name__, exc)

    def _weekly(self, repo: Repo, desk: Desk, state: JobState, now: datetime) -> int:
        """Last week's report mail, once per week (reports/weekly.py; the mark is the week's end)."""
        day = self.settings.weekly_report_day
        if day is None:
            return 0
        snapshot = self.runner.rules.current
        end = last_week_end(now, day, self.settings.weekly_report_hour, self.sla.tz())
        done = utc(state.last_digest_at)
        if done is None:  # the first run starts the count: the first report covers a whole week
            state.last_digest_at = end
            return 0
        if done >= end:
            return 0
        sent = send_weekly(
            repo,
            self.sla.notifier,
            self.config,
            desk,
            team=snapshot.team,
            workflows={d.key: snapshot.workflow(d) for d in self.config.desks},
            sla=snapshot.sla,
            week_end=end,
            now=now,
        )
        state.last_digest_at = end
        return len(sent)

    # -- the timer ------------------------------------------------------------------------------------
    def _tick(self, jobs: Sequence[str]) -> None:
        for job in jobs:
            for desk in self.config.desks:
                try:
                    self.run_job(job, desk)
                except Exception as exc:  # noqa: BLE001 - e.g. database briefly down: next tick retries
                    log.error(
                        "job %s for %s failed, will retry: %s: %s", job, desk.key, type(exc).__name__, exc
                    )

    def start(self) -> Scheduler:
        """Run every job now (catching up after downtime, once) and then on its interval."""
        from apscheduler.schedulers.background import BackgroundScheduler

        scheduler = BackgroundScheduler(timezone=UTC)
        start = datetime.now(UTC)
        common: dict[str, Any] = {
            "trigger": "interval",
            "next_run_time": start,
            "coalesce": True,  # missed ticks collapse into one: the state is in the database anyway
            "max_instances": 1,
            "misfire_grace_time": None,
        }
        scheduler.add_job(
            self._tick,
            args=[("sla_check",)],
            id="sla_check",
            seconds=self.settings.sla_check_seconds,
            **common,
        )
        scheduler.add_job(
            self._tick, args=[TIMER_JOBS], id="timers", seconds=self.settings.timers_seconds, **common
        )
        scheduler.add_job(self._admin_tick, id="admin_digest", seconds=60, **common)
        scheduler.add_job(self._sweep_tick, id="attachment_sweep", hours=24, **common)
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "scheduler started: SLA check every %ss, timers every %ss",
            self.settings.sla_check_seconds,
            self.settings.timers_seconds,
        )
        return self

    def stop(self) -> None:
        """Stop the timer and wait for a running job to finish its transaction."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
