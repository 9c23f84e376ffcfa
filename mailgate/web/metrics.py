"""/metrics and /healthz, read from the database at each request.

The pipeline runs in a worker process of its own (and may run in several mailgate processes on
one PostgreSQL), so counters kept in this process's memory would count nothing. The database
holds every message's fate and times: each scrape reads them in a few aggregate queries, the
same figures whichever process is scraped.

Must not: write anything.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import case, func, select
from sqlmodel import col

from mailgate.store.db import Database
from mailgate.store.models import InboxItem, OutboxItem, Ticket, now_utc, utc

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
# Stage latency buckets: a stage takes from well under a millisecond (screen) to seconds (a
# handler storing big attachments on a busy database).
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_WINDOW = timedelta(hours=1)  # the per-stage histograms cover messages processed this recently
STAGE_ROWS = 1000  # and at most this many of them (the newest)
STALL = timedelta(minutes=15)  # mail due this long and still waiting: /healthz says so


def _seconds(later: Any, earlier: Any, dialect: str) -> Any:
    """SQL for `later - earlier` in seconds, on SQLite and PostgreSQL."""
    if dialect == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


class DatabaseCollector:
    """prometheus-client collector over the mailgate tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        now = now_utc()
        dialect = self.db.engine.dialect.name
        with self.db.reading() as s:
            received = CounterMetricFamily(
                "mailgate_messages_received", "Messages taken in, by desk", labels=["desk"]
            )
            processed = CounterMetricFamily(
                "mailgate_messages_processed",
                "Messages the pipeline finished, by desk and disposition",
                labels=["desk", "disposition"],
            )
            quarantined = CounterMetricFamily(
                "mailgate_messages_quarantined", "Messages quarantined (failed), by desk", labels=["desk"]
            )
            rows = s.execute(
                select(
                    col(InboxItem.desk), col(InboxItem.state), col(InboxItem.disposition), func.count()
                ).group_by(col(InboxItem.desk), col(InboxItem.state), col(InboxItem.disposition))
            ).all()
            per_desk: dict[str, int] = {}
            failed: dict[str, int] = {}
            for desk, state, disposition, n in rows:
                per_desk[desk] = per_desk.get(desk, 0) + n
                if state == "done":
                    processed.add_metric([desk, disposition or ""], n)
                elif state == "failed":
                    failed[desk] = failed.get(desk, 0) + n
            for desk, n in per_desk.items():
                received.add_metric([desk], n)
                quarantined.add_metric([desk], failed.get(desk, 0))
            yield from (received, processed, quarantined)

            yield self._stages(s, now)
            # End-to-end latency, received -> processed.
            yield self._histogram(
                s,
                "mailgate_processing_latency_seconds",
                "From taken in to processed by the pipeline",
                _seconds(col(InboxItem.processed_at), col(InboxItem.received_at), dialect),
                col(InboxItem.processed_at).is_not(None),
            )
            yield self._histogram(
                s,
                "mailgate_outbox_delivery_latency_seconds",
                "From queued to handed to the relay",
                _seconds(col(OutboxItem.sent_at), col(OutboxItem.created_at), dialect),
                col(OutboxItem.sent_at).is_not(None),
            )

            depth = GaugeMetricFamily("mailgate_queue_depth", "Rows waiting, by queue", labels=["queue"])
            oldest = GaugeMetricFamily(
                "mailgate_queue_oldest_age_seconds",
                "Age of the oldest waiting row, by queue",
                labels=["queue"],
            )
            n_in, first_in = s.execute(
                select(func.count(), func.min(InboxItem.received_at)).where(
                    col(InboxItem.state).in_(["new", "processing"])
                )
            ).one()
            n_out, first_out = s.execute(
                select(func.count(), func.min(OutboxItem.created_at)).where(
                    col(OutboxItem.state).in_(["pending", "sending"])
                )
            ).one()
            for queue, n, first in (("inbox", n_in, first_in), ("outbox", n_out, first_out)):
                depth.add_metric([queue], n)
                oldest.add_metric([queue], (now - utc(first)).total_seconds() if first else 0.0)
            yield from (depth, oldest)

            outbox = CounterMetricFamily("mailgate_outbox", "Outgoing mail by outcome", labels=["state"])
            sent, failed_out, deferred = s.execute(
                select(
                    func.count().filter(col(OutboxItem.state) == "sent"),
                    func.count().filter(col(OutboxItem.state) == "failed"),
                    func.count().filter(col(OutboxItem.state) == "pending", col(OutboxItem.attempts) > 0),
                )
            ).one()
            outbox.add_metric(["sent"], sent)
            outbox.add_metric(["failed"], failed_out)
            yield outbox
            yield GaugeMetricFamily(
                "mailgate_outbox_deferred", "Mail waiting to be tried again after a failure", value=deferred
            )

            breaches = GaugeMetricFamily(
                "mailgate_sla_breached_tickets",
                "Open tickets past an SLA due time, by clock",
                labels=["clock"],
            )
            fr, res = s.execute(
                select(
                    func.count().filter(
                        col(Ticket.first_response_at).is_(None), col(Ticket.first_response_due) < now
                    ),
                    func.count().filter(col(Ticket.resolution_due) < now),
                ).where(col(Ticket.status_category) != "closed")
            ).one()
            breaches.add_metric(["first_response"], fr)
            breaches.add_metric(["resolution"], res)
            yield breaches

            ratings = CounterMetricFamily("mailgate_ratings", "Tickets rated, by rating", labels=["rating"])
            counts: dict[int, int] = {
                rating: n
                for rating, n in s.execute(
                    select(col(Ticket.rating), func.count())
                    .where(col(Ticket.rating).is_not(None))
                    .group_by(col(Ticket.rating))
                ).all()
            }
            for n in range(1, 6):
                ratings.add_metric([str(n)], counts.get(n, 0))
            yield ratings

    def _stages(self, s: Any, now: datetime) -> Metric:
        """Per-stage latency from the timing steps (`ms`) the runner writes into each message's
        trace (pipeline/context.Context.timed), over the messages processed in the last
        `STAGE_WINDOW`, at most `STAGE_ROWS` of them: a scrape reads a bounded number of rows
        however big the inbox grows. A window, not a running total: read it with
        `histogram_quantile` directly, not through `rate()`."""
        rows = s.execute(
            select(col(InboxItem.trace))
            .where(
                col(InboxItem.state).in_(["done", "failed"]),
                col(InboxItem.processed_at) >= now - STAGE_WINDOW,
            )
            .order_by(col(InboxItem.id).desc())
            .limit(STAGE_ROWS)
        ).scalars()
        seconds: dict[str, list[float]] = {}
        for trace in rows:
            for step in trace or ():
                ms = step.get("ms") if isinstance(step, dict) else None
                if isinstance(ms, int | float):
                    seconds.setdefault(str(step.get("stage")), []).append(ms / 1000.0)
        family = HistogramMetricFamily(
            "mailgate_stage_latency_seconds",
            f"Time each pipeline stage took per message, over the messages processed in the last "
            f"{int(STAGE_WINDOW.total_seconds() // 60)} minutes (at most {STAGE_ROWS})",
            labels=["stage"],
        )
        for stage, values in sorted(seconds.items()):
            values.sort()
            buckets = [(str(b), bisect_right(values, b)) for b in STAGE_BUCKETS]
            buckets.append(("+Inf", len(values)))
            family.add_metric([stage], buckets, sum(values))
        return family

    def _histogram(self, s: Any, name: str, doc: str, seconds: Any, where: Any) -> Metric:
        """A cumulative histogram computed by SQL: one count per bucket, and the sum."""
        cols = [func.count(case((seconds <= b, 1))) for b in LATENCY_BUCKETS]
        row = s.execute(select(*cols, func.count(), func.coalesce(func.sum(seconds), 0.0)).where(where)).one()
        buckets = [(str(b), row[i]) for i, b in enumerate(LATENCY_BUCKETS)]
        buckets.append(("+Inf", row[len(LATENCY_BUCKETS)]))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=float(row[-1]))


def registry_for(db: Database) -> CollectorRegistry:
    """A registry of our own (no process-global default registry, no metrics of the web process
    itself): what /metrics serves."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DatabaseCollector(db))
    return reg


def health_problems(db: Database, alive: Callable[[], list[str]]) -> list[str]:
    """Why the daemon is not healthy, empty when it is: a dead listener or worker (`alive`, from
    the daemon), an unreachable database, or mail that stopped moving."""
    problems = list(alive())
    try:
        now = now_utc()
        with db.reading() as s:
            due = s.execute(
                select(func.min(OutboxItem.next_attempt_at)).where(col(OutboxItem.state) == "pending")
            ).scalar_one()
            waiting = s.execute(
                select(func.min(InboxItem.received_at)).where(col(InboxItem.state).in_(["new", "processing"]))
            ).scalar_one()
    except Exception as exc:  # the database is the one thing every part needs
        return [*problems, f"database unreachable: {type(exc).__name__}: {exc}"]
    if due is not None and now - utc(due) > STALL:
        problems.append(f"outbox not draining: mail due since {utc(due):%Y-%m-%d %H:%M:%S} UTC is unsent")
    if waiting is not None and now - utc(waiting) > STALL:
        problems.append(f"pipeline behind: mail received {utc(waiting):%Y-%m-%d %H:%M:%S} UTC is unprocessed")
    return problems
