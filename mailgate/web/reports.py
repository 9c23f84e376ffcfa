"""The reports page, `/agent/reports`: the figures of `mailgate report` for a period, group, agent
and cut (`by`), as headline figures, charts (inline SVG from mailgate/reports/svg.py) with a
table behind each, and the same figures as CSV (`/agent/reports.csv`, what `mailgate report
--format csv` prints for the same filters).

Who may see what follows the help desks people know: in Zammad reporting is a permission of
managers and admins, not of every agent; in RT an agent sees the charts of the queues they may
see. So: an admin (team.toml `role = "admin"`, or listed in `admins`) sees every ticket; a group
lead sees the groups they lead, one at a time (the group filter is theirs to choose, never
absent); any other agent is refused (403), as is anyone not signed in as an agent (sent to
sign in). docs/reports.md says the same.

It must not change tickets; it keeps the figures it measured (reports/facts.py) in a
transaction of its own, as `mailgate report` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from mailgate.config import Config
from mailgate.domain.team import Team
from mailgate.reports import (
    BY,
    Periods,
    Report,
    Scope,
    parse_since,
    parse_until,
    report_charts,
    report_of,
)
from mailgate.reports.figures import hours, span_text
from mailgate.reports.render import row_dict
from mailgate.reports.svg import response_distribution
from mailgate.ruleset import Snapshot
from mailgate.store.db import Database

TIME_BY = ("day", "week", "month")
# The tables behind the charts: every CSV column of `mailgate report` is in exactly one of them.
TABLES = (
    (
        "volume",
        "Volume and backlog",
        (
            ("created", "created"),
            ("created_smtp", "SMTP"),
            ("created_imap", "IMAP"),
            ("created_pipe", "pipe"),
            ("replies_in", "replies in"),
            ("replies_out", "replies out"),
            ("reopened", "reopened"),
            ("backlog_open", "open at end"),
            ("backlog_waiting", "waiting at end"),
        ),
    ),
    (
        "times",
        "Business hours to first response and resolution",
        (
            ("first_response_count", "first responses"),
            ("first_response_median_h", "median h"),
            ("first_response_p90_h", "p90 h"),
            ("resolution_count", "resolutions"),
            ("resolution_median_h", "median h"),
            ("resolution_p90_h", "p90 h"),
        ),
    ),
    (
        "sla",
        "SLA targets",
        (
            ("sla_first_response_met", "first response met"),
            ("sla_first_response_breached", "breached"),
            ("sla_first_response_pct", "%"),
            ("sla_resolution_met", "resolution met"),
            ("sla_resolution_breached", "breached"),
            ("sla_resolution_pct", "%"),
        ),
    ),
    (
        "satisfaction",
        "Satisfaction",
        (
            ("ratings", "ratings"),
            ("rating_avg", "average"),
            *((f"rating_{k}", f"{k}★") for k in range(1, 6)),
            ("surveyed", "surveyed"),
            ("survey_response_pct", "answered %"),
        ),
    ),
)


@dataclass(frozen=True)
class ReportAccess:
    """Whether an agent may see reports, and of which groups (None: every ticket)."""

    allowed: bool
    groups: tuple[str, ...] | None
    reason: str


def report_access(team: Team, address: str) -> ReportAccess:
    agent = team.agents.get(address)
    if agent is None:
        return ReportAccess(False, (), f"{address} is not an agent in team.toml")
    if team.is_admin(address):
        return ReportAccess(True, None, "an admin sees every ticket's figures")
    led = tuple(g.name for g in team.groups.values() if g.lead == address)
    if led:
        return ReportAccess(True, led, f"a group lead sees the figures of {', '.join(led)}")
    return ReportAccess(
        False,
        (),
        "Reports are for group leads (their groups) and admins (every ticket). "
        "Ask your lead, or an admin, for the figures you need.",
    )


class Refused(Exception):
    """A filter beyond the agent's reach (a lead asking for another group)."""


@dataclass(frozen=True)
class Query:
    """The filters as the form sends them (text, as typed), with the CLI's defaults."""

    since: str = "30d"
    until: str = ""
    desk: str = ""
    group: str = ""
    agent: str = ""
    by: str = "day"

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Query:
        given = {f.name: (params.get(f.name) or "").strip()[:200] for f in fields(cls)}
        q = cls(**{k: v for k, v in given.items() if v})
        return q if q.by in BY else replace(q, by="day")

    def encoded(self) -> str:
        return urlencode({f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)})


def build(
    config: Config, db: Database, snapshot: Snapshot, access: ReportAccess, query: Query, now: datetime
) -> tuple[Query, Report]:
    """The report the filters ask for (a lead's group filled in), or ValueError (a bad date, an
    unknown desk) / Refused (beyond the agent's reach)."""
    if access.groups is not None:
        if not query.group:
            query = replace(query, group=access.groups[0])
        elif query.group not in access.groups:
            raise Refused(
                f"You lead {', '.join(access.groups)}: the figures of group {query.group!r} are for its lead "
                "and the admins."
            )
    if query.desk and config.desk_by_key(query.desk.upper()) is None:
        raise ValueError(f"no desk {query.desk!r} (desks: {', '.join(d.key for d in config.desks)})")
    tz = snapshot.zone
    since = parse_since(query.since, now, tz)
    until = parse_until(query.until, now, tz) if query.until else now
    periods = Periods.cut(since, until, query.by if query.by in TIME_BY else None, tz)

    report = report_of(
        db,
        periods,
        workflows={d.key: snapshot.workflow(d) for d in config.desks},
        sla=snapshot.sla,
        now=now,
        by=query.by,
        scope=Scope(desk=query.desk or None, group=query.group or None, agent=query.agent or None),
    )
    return query, report


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


def cell(value: object) -> str:
    """A table cell as the CSV has it (hours with two decimals, % with one), "–" for none."""
    return "–" if value is None else str(value)


def form(query: Query, access: ReportAccess, team: Team, config: Config) -> dict[str, Any]:
    """The filter form's choices: a lead's group list holds only their groups."""
    return {
        "query": query,
        "by_choices": BY,
        "desks": [d.key for d in config.desks],
        "groups": list(access.groups) if access.groups is not None else sorted(team.groups),
        "all_groups": access.groups is None,
        "agents": sorted(team.agents),
    }


def view(report: Report, query: Query, access: ReportAccess, team: Team, config: Config) -> dict[str, Any]:
    """What reports.html shows."""
    t = report.total
    avg = t.rating_average
    tz = report.periods.tz
    zone = ZoneInfo(tz)
    headlines = [
        ("created", "Tickets created", str(t.created)),
        ("replies", "Replies from customers / from agents", f"{t.replies_in} / {t.replies_out}"),
        ("reopened", "Reopened", str(t.reopened)),
        ("backlog", "Open / waiting at the end", f"{t.backlog['open']} / {t.backlog['waiting']}"),
        (
            "first-response",
            "First response, median / p90 (business hours)",
            f"{span_text(t.first_response.median)} / {span_text(t.first_response.p90)}",
        ),
        (
            "resolution",
            "Resolution, median / p90 (business hours)",
            f"{span_text(t.resolution.median)} / {span_text(t.resolution.p90)}",
        ),
        (
            "sla",
            "SLA met: first response / resolution",
            f"{_pct(t.attainment('first_response'))} / {_pct(t.attainment('resolution'))}",
        ),
        (
            "ratings",
            "Ratings (average, surveys answered)",
            f"{t.rating_count} ({'–' if avg is None else f'{avg:.1f}'}, {_pct(t.response_rate)})",
        ),
    ]
    charts = report_charts(report)
    return {
        **form(query, access, team, config),
        "period": f"{report.periods.since.astimezone(zone):%Y-%m-%d %H:%M} – "
        f"{report.periods.until.astimezone(zone):%Y-%m-%d %H:%M} ({tz})",
        "headlines": headlines,
        "charts": [
            ("volume", charts["volume"], "volume"),
            ("response-times", charts["response_times"], "times"),
            ("distribution", response_distribution(report), "times"),
            ("sla", charts["sla"], "sla"),
            ("satisfaction", charts["satisfaction"], "satisfaction"),
        ],
        "tables": TABLES,
        "rows": [row_dict(r) for r in report.rows],
        "total": row_dict(report.total),
        "cell": cell,
        "breaches": sorted(report.breaches_by_policy.items()),
        "workload": report.workload,
        "comments": report.comments[-20:],
        "hours": hours,
        "csv_url": f"/agent/reports.csv?{query.encoded()}",
        "label": "period" if report.by in (None, *TIME_BY) else report.by,
    }
