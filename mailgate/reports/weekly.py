"""The weekly report mail: last week's headline figures and charts to each group lead (their
group's tickets) and to the admins (the whole desk), sent by the scheduler (mailgate/scheduler.py).

It is system mail (`Notifier.send_plain`): from `config.system_sender`, `Auto-Submitted:
auto-generated`, no reply token, so an out-of-office answering it opens no ticket. The text part
holds the figures as tables; the HTML part the same headline figures and the charts of
`reports.svg` inline (no images fetched from anywhere). Anyone may opt out
(`mailgate report --opt-out ADDRESS`, the `reportoptout` table); the mail says how.

When: the week ends at `weekly_report_day` `weekly_report_hour` local time ([scheduler] in
config.toml; the zone of the [timers] calendar). The job stores the end of the last week it
reported in its JobState row (`last_digest_at`) in the same transaction as the outbox rows, so
running it twice sends nothing twice, and after downtime it sends the last week once.

It must not decide anything about tickets or commit; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import Session, col

from mailgate.config import Config, Desk
from mailgate.domain.sla import SlaRules
from mailgate.domain.team import Team
from mailgate.domain.workflow import Workflow
from mailgate.pipeline.notify import Notifier
from mailgate.reports.figures import Report, Row, Scope, build_report, span_text
from mailgate.reports.period import Periods
from mailgate.reports.render import to_text
from mailgate.reports.svg import report_charts
from mailgate.ruleset.snapshot import desk_zone
from mailgate.store.models import ReportOptOut
from mailgate.store.repo import Repo

__all__ = ["Recipient", "last_week_end", "opted_out", "recipients", "send_weekly", "weekly_mail"]

KIND = "weekly-report"


@dataclass(frozen=True)
class Recipient:
    address: str
    group: str | None  # None: the whole desk (an admin)


def last_week_end(now: datetime, weekday: int, hour: int, tz: str) -> datetime:
    """The latest `weekday` `hour`:00 local time at or before `now`, in UTC."""
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    day = local.date() - timedelta(days=(local.weekday() - weekday) % 7)
    end = datetime(day.year, day.month, day.day, hour, tzinfo=zone)
    if end > local:
        day -= timedelta(days=7)
        end = datetime(day.year, day.month, day.day, hour, tzinfo=zone)
    return end.astimezone(UTC)


def recipients(team: Team, admin_address: str) -> list[Recipient]:
    """Each group's lead (their group), and every desk admin (`Team.every_admin`: `admins` and
    the agents with role "admin") — else config's admin_address — for the whole desk."""
    out = [Recipient(g.lead, g.name) for g in team.groups.values() if g.lead]
    admins = team.every_admin or ((admin_address,) if admin_address else ())
    out += [Recipient(a, None) for a in admins]
    return out


def opted_out(session: Session) -> set[str]:
    return {a.lower() for a in session.execute(select(col(ReportOptOut.address))).scalars()}


def _headlines(row: Row) -> list[tuple[str, str]]:
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}%"

    avg = row.rating_average
    return [
        ("Tickets created", str(row.created)),
        ("Replies from customers / from agents", f"{row.replies_in} / {row.replies_out}"),
        ("Reopened", str(row.reopened)),
        ("Open / waiting at the end of the week", f"{row.backlog['open']} / {row.backlog['waiting']}"),
        (
            "First response, median / p90 (business hours)",
            f"{span_text(row.first_response.median)} / {span_text(row.first_response.p90)}",
        ),
        (
            "Resolution, median / p90 (business hours)",
            f"{span_text(row.resolution.median)} / {span_text(row.resolution.p90)}",
        ),
        (
            "SLA met: first response / resolution",
            f"{pct(row.attainment('first_response'))} / {pct(row.attainment('resolution'))}",
        ),
        (
            "Ratings (average, surveys answered)",
            f"{row.rating_count} ({'-' if avg is None else f'{avg:.1f}'}, {pct(row.response_rate)})",
        ),
    ]


def weekly_mail(report: Report, desk: Desk, recipient: Recipient, opt_out_hint: str) -> tuple[str, str, str]:
    """Subject, text and HTML of one weekly report mail."""
    tz = ZoneInfo(report.periods.tz)
    start = report.periods.since.astimezone(tz)
    end = report.periods.until.astimezone(tz) - timedelta(seconds=1)
    whom = f"group {recipient.group} ({desk.name})" if recipient.group else desk.name
    week = f"{start:%d %b} – {end:%d %b %Y}"
    t = report.total
    first = t.attainment("first_response")
    subject = (
        f"Weekly report, {whom}: {t.created} new, {t.backlog['open']} open"
        + ("" if first is None else f", {first:.0f}% first responses on time")
        + f" ({week})"
    )
    lines = _headlines(t)
    width = max(len(k) for k, _ in lines)
    text = "\n".join(
        [
            f"{whom}, week {week}",
            "",
            *(f"{k.ljust(width)}  {v}" for k, v in lines),
            "",
            to_text(report),
            opt_out_hint,
        ]
    )
    charts = report_charts(report)
    html = "\n".join(
        [
            '<!doctype html><html><body style="font-family:sans-serif">',
            f"<h2>{escape(whom)}: week {escape(week)}</h2>",
            '<table cellpadding="4" style="border-collapse:collapse">',
            *(f"<tr><td>{escape(k)}</td><td><b>{escape(v)}</b></td></tr>" for k, v in lines),
            "</table>",
            *(f"<div>{svg}</div>" for svg in charts.values()),
            f'<p style="color:#555">{escape(opt_out_hint)}</p>',
            "</body></html>",
        ]
    )
    return subject, text, html


def _empty(report: Report) -> bool:
    t = report.total
    return not (t.created or t.replies_in or t.replies_out or t.backlog["open"] or t.backlog["waiting"])


def send_weekly(
    repo: Repo,
    notifier: Notifier,
    config: Config,
    desk: Desk,
    *,
    team: Team,
    workflows: Mapping[str, Workflow],
    sla: SlaRules | None,
    week_end: datetime,
    now: datetime,
) -> list[str]:
    """Queue the weekly report of [week_end - 7 days, week_end) for the desk; the Message-IDs.
    A group with nothing in the week (no tickets, no replies, no backlog) gets no mail."""
    tz = desk_zone(sla)
    periods = Periods.cut(week_end - timedelta(days=7), week_end, "day", tz)
    skip = opted_out(repo.session)
    sent: list[str] = []
    reports: dict[str | None, Report] = {}
    hint = f"You get this as a group lead or admin of {desk.name}. To stop it, an admin runs: mailgate report --opt-out ADDRESS"
    for rcpt in _unique(recipients(team, config.admin_address)):
        if rcpt.address.lower() in skip:
            continue
        if rcpt.group not in reports:
            scope = Scope(desk=desk.key, group=rcpt.group)
            reports[rcpt.group] = build_report(
                repo.session, periods, workflows=workflows, sla=sla, now=now, by="day", scope=scope
            )
        report = reports[rcpt.group]
        if rcpt.group is not None and _empty(report):
            continue
        subject, text, html = weekly_mail(report, desk, rcpt, hint)
        sent.append(
            notifier.send_plain(repo, desk, to=rcpt.address, subject=subject, text=text, html=html, kind=KIND)
        )
    return sent


def _unique(items: Sequence[Recipient]) -> list[Recipient]:
    return list(dict.fromkeys(items))
