"""`mailgate report` figures, checked against a week worked out by hand (tests/support/report_desk.py).

The story (office hours Mon-Fri 09:00-17:00 UTC; SUP "standard": first response 2h, resolution 8h
in office hours; CARE "care": 1h / 24h around the clock):

  Mon 10:00 SUP-1 by SMTP; TECH answers 11:00 (1h), resolves 15:00 (5h)
  Mon 16:00 SUP-2 by IMAP
  Tue 09:00 SUP-3 by SMTP;  09:30 SUP-1 rated 5 "Great service" (a reply, not a reopen)
  Tue 10:00 TECH resolves SUP-3 in his first reply (1h)
  Tue 10:30 TECH asks SUP-2's customer for logs, Pending: first response Mon 16-17 + Tue 9-10:30
            = 2.5 business hours > 2h, breached; the resolution clock pauses
  Wed 09:00 SUP-3's customer: still broken -> reopened (Completed -> Work in progress)
  Wed 14:00 SUP-4 by pipe; nobody ever answers: first response due Wed 16:00 (breached then),
            resolution due Thu 14:00 (Wed 14-17 + Thu 9-14 = 8h; breached then)
  Thu 09:00 SUP-2's customer sends logs -> Open;  12:00 TECH resolves SUP-2: resolution time
            Mon 16 -> Thu 12 = 1 + 8 + 8 + 3 = 20 business hours, but the SLA counted only the open
            time 1 + 1.5 + 3 = 5.5h <= 8h: met (paused while waiting on the customer)
  Thu 20:00 CARE-1 by SMTP; LEAD answers 20:30 (30m around the clock): met; resolution 24h
            around the clock is due Fri 20:00 and nobody solves it: breached Fri
  Fri 09:00 TECH resolves SUP-3 again: created Tue 09:00 -> Fri 09:00 = 24 business hours; SLA
            open time Tue 9-10 + Wed 9 -> Fri 9 = 1 + 16 = 17h > 8h: breached Fri
  Fri 10:00 SUP-3 rated 2 "Took too long"; SUP-2 is never rated
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import body_of
from pg import fresh_database
from support.report_desk import at, known_week
from support.sla_desk import LEAD, TECH, Desk

from mailgate.reports import (
    ExportFilter,
    Periods,
    Scope,
    bar_chart,
    build_report,
    export_rows,
    parse_since,
    parse_until,
    report_charts,
    to_csv,
    to_json,
    to_text,
)
from mailgate.reports.render import CSV_COLUMNS, row_dict
from mailgate.reports.svg import Series
from mailgate.scheduler import Scheduler
from mailgate.store.models import ReportOptOut

DAYS = [f"2026-11-0{d}" for d in range(2, 9)]
H = 3600.0


@pytest.fixture(scope="module")
def week(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    desk = known_week(tmp_path_factory.mktemp("reports") / "desk")
    yield desk
    desk.db.dispose()


def report(desk: Desk, by: str | None = "day", scope: Scope | None = None, since: int = 2, until: int = 9):
    snap = desk.runner.rules.current
    periods = Periods.cut(at(since, 0), at(until, 0), by if by in ("day", "week", "month") else None, "UTC")
    with desk.db.reading() as s:
        return build_report(
            s,
            periods,
            workflows={d.key: snap.workflow(d) for d in desk.config.desks},
            sla=snap.sla,
            now=datetime.now(UTC),
            by=by,
            scope=scope,
        )


def column(rows: list[dict], name: str) -> list:
    return [r[name] for r in rows]


def check_the_week_by_day(desk: Desk) -> None:
    r = report(desk)
    rows = [row_dict(x) for x in r.rows]
    assert column(rows, "period") == DAYS
    # volume
    assert column(rows, "created") == [2, 1, 1, 1, 0, 0, 0]
    assert column(rows, "created_smtp") == [1, 1, 0, 1, 0, 0, 0]
    assert column(rows, "created_imap") == [1, 0, 0, 0, 0, 0, 0]
    assert column(rows, "created_pipe") == [0, 0, 1, 0, 0, 0, 0]
    assert column(rows, "replies_in") == [0, 1, 1, 1, 1, 0, 0]  # ratings are replies too
    assert column(rows, "replies_out") == [2, 2, 0, 2, 1, 0, 0]
    assert column(rows, "reopened") == [0, 0, 1, 0, 0, 0, 0]  # the ratings reopened nothing
    # backlog at the end of each day
    assert column(rows, "backlog_open") == [1, 0, 2, 3, 2, 2, 2]
    assert column(rows, "backlog_waiting") == [0, 1, 1, 0, 0, 0, 0]
    # times, in business hours of each ticket's calendar
    assert column(rows, "first_response_count") == [1, 2, 0, 1, 0, 0, 0]
    assert column(rows, "first_response_median_h") == [1.0, 1.75, None, 0.5, None, None, None]
    assert column(rows, "resolution_count") == [1, 0, 0, 1, 1, 0, 0]
    assert column(rows, "resolution_median_h") == [5.0, None, None, 20.0, 24.0, None, None]
    # SLA, counted on the day each target was decided
    assert column(rows, "sla_first_response_met") == [1, 1, 0, 1, 0, 0, 0]
    assert column(rows, "sla_first_response_breached") == [0, 1, 1, 0, 0, 0, 0]
    assert column(rows, "sla_resolution_met") == [1, 0, 0, 1, 0, 0, 0]
    assert column(rows, "sla_resolution_breached") == [0, 0, 0, 1, 2, 0, 0]
    # satisfaction
    assert column(rows, "rating_5") == [0, 1, 0, 0, 0, 0, 0]
    assert column(rows, "rating_2") == [0, 0, 0, 0, 1, 0, 0]
    assert column(rows, "surveyed") == [1, 1, 0, 1, 1, 0, 0]  # SUP-1, SUP-3, SUP-2, SUP-3 again

    t = row_dict(r.total)
    assert (t["created"], t["created_smtp"], t["created_imap"], t["created_pipe"]) == (5, 3, 1, 1)
    assert (t["replies_in"], t["replies_out"], t["reopened"]) == (4, 7, 1)
    assert (t["backlog_open"], t["backlog_waiting"]) == (2, 0)  # SUP-4 and CARE-1 at the end
    # first responses 1h, 1h, 2.5h, 0.5h: median 1h; p90 by nearest rank is the 4th of 4
    assert (t["first_response_count"], t["first_response_median_h"], t["first_response_p90_h"]) == (
        4,
        1.0,
        2.5,
    )
    assert (t["resolution_count"], t["resolution_median_h"], t["resolution_p90_h"]) == (3, 20.0, 24.0)
    assert (t["sla_first_response_met"], t["sla_first_response_breached"], t["sla_first_response_pct"]) == (
        3,
        2,
        60.0,
    )
    assert (t["sla_resolution_met"], t["sla_resolution_breached"], t["sla_resolution_pct"]) == (2, 3, 40.0)
    assert (t["ratings"], t["rating_avg"]) == (2, 3.5)
    assert [t[f"rating_{k}"] for k in range(1, 6)] == [0, 1, 0, 0, 1]
    # four surveys went out; SUP-1 and SUP-3 (twice surveyed) answered, SUP-2 did not
    assert (t["surveyed"], t["survey_response_pct"]) == (4, 75.0)

    assert r.breaches_by_policy == {
        ("standard", "first_response"): 2,  # SUP-2 late, SUP-4 never
        ("standard", "resolution"): 2,  # SUP-3 reopened, SUP-4
        ("care", "resolution"): 1,  # CARE-1
    }
    assert [(c.key, c.rating, c.comment) for c in r.comments] == [
        ("SUP-1", 5, "Great service"),
        ("SUP-3", 2, "Took too long"),
    ]
    work = {(w.kind, w.name): (w.assigned, w.resolved, w.open_now) for w in r.workload}
    assert work == {
        ("agent", TECH): (4, 3, 1),  # SUP-1..4; resolved SUP-1, 2, 3; SUP-4 open
        ("agent", LEAD): (1, 0, 1),  # CARE-1: the lead answered it and took it
        ("group", "Service Desk"): (5, 3, 2),
    }


def test_every_figure_of_the_known_week_by_day(week: Desk) -> None:
    check_the_week_by_day(week)


def test_the_same_figures_on_postgresql(tmp_path: Path) -> None:
    with fresh_database() as url:
        desk = known_week(tmp_path / "desk", database_url=url)
        try:
            check_the_week_by_day(desk)
            by_agent = {r.label: r for r in report(desk, "agent").rows}
            assert by_agent[TECH].created == 4 and by_agent[LEAD].created == 1
        finally:
            desk.db.dispose()


def test_by_agent_group_and_priority(week: Desk) -> None:
    by_agent = {r.label: row_dict(r) for r in report(week, "agent").rows}
    assert set(by_agent) == {TECH, LEAD}
    tech, lead = by_agent[TECH], by_agent[LEAD]
    assert (tech["created"], tech["reopened"], tech["backlog_open"]) == (4, 1, 1)
    assert (tech["first_response_count"], tech["first_response_median_h"]) == (3, 1.0)
    assert (tech["sla_first_response_met"], tech["sla_first_response_breached"]) == (2, 2)
    assert (tech["sla_resolution_met"], tech["sla_resolution_breached"]) == (2, 2)
    assert (lead["created"], lead["first_response_median_h"], lead["sla_resolution_breached"]) == (1, 0.5, 1)
    [group] = report(week, "group").rows
    assert group.label == "Service Desk" and group.created == 5 and group.backlog == {"open": 2, "waiting": 0}
    [none] = report(week, "priority").rows  # nobody set a priority
    assert none.label == "(none)" and none.created == 5


def test_one_row_for_the_range_and_a_desk_filter(week: Desk) -> None:
    whole = report(week, None)
    assert len(whole.rows) == 1 and row_dict(whole.rows[0]) | {"period": ""} == row_dict(whole.total) | {
        "period": ""
    }
    care = report(week, None, Scope(desk="care")).total
    assert (care.created, care.first_response.values, care.sla_breached["resolution"]) == (1, [1800.0], 1)
    by_week = report(week, "week", since=1, until=11)  # Sun 1st to Tue 10th: three ISO weeks
    assert [r.label for r in by_week.rows] == ["2026-W44", "2026-W45", "2026-W46"]
    assert [r.created for r in by_week.rows] == [0, 5, 0]
    assert [r.backlog["open"] for r in by_week.rows] == [0, 2, 2]


def test_a_period_before_the_story_starts_from_the_backlog_then(week: Desk) -> None:
    # Thursday alone: Wednesday evening's backlog (SUP-2 waiting, SUP-3 and SUP-4 open) carried in.
    thu = report(week, "day", since=5, until=6)
    [row] = thu.rows
    assert (row.created, row.backlog) == (1, {"open": 3, "waiting": 0})
    assert row.sla_met == {"first_response": 1, "resolution": 1}
    assert row.sla_breached == {"first_response": 0, "resolution": 1}


def test_text_csv_and_json_hold_the_same_figures(week: Desk) -> None:
    r = report(week)
    lines = to_csv(r).splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) and len(lines) == 1 + 7 + 1
    assert lines[-1].startswith("total,5,3,1,1,4,7,1,2,0,4,1.0,2.5,3,20.0,24.0,3,2,60.0,2,3,40.0,2,3.5,")
    data = json.loads(to_json(r))
    assert data["since"] == "2026-11-02T00:00:00+00:00" and data["until"] == "2026-11-09T00:00:00+00:00"
    assert data["total"]["sla_first_response_pct"] == 60.0 and len(data["rows"]) == 7
    assert {"policy": "care", "target": "resolution", "breaches": 1} in data["sla_breaches_by_policy"]
    text = to_text(r)
    assert "standard  first response         2" in text
    assert "SUP-3 2/5 2026-11-06: Took too long" in text


def test_periods_and_dates() -> None:
    now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    assert parse_since("30d", now) == now - timedelta(days=30)
    assert parse_since("2026-11-01", now, "Europe/Berlin") == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    assert parse_until("2026-11-29", now) == datetime(2026, 11, 30, tzinfo=UTC)  # the day is included
    with pytest.raises(ValueError, match="not a date"):
        parse_since("last tuesday", now)
    months = Periods.cut(datetime(2026, 10, 15, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC), "month")
    assert months.labels == ("2026-10", "2026-11", "2026-12", "2027-01")
    assert months.starts[1] == datetime(2026, 11, 1, tzinfo=UTC)
    # Local days: Berlin's Sunday 25 Oct 2026 has 25 hours (clocks go back).
    days = Periods.cut(
        datetime(2026, 10, 24, 22, 0, tzinfo=UTC),
        datetime(2026, 10, 26, 23, 0, tzinfo=UTC),
        "day",
        "Europe/Berlin",
    )
    assert days.labels == ("2026-10-25", "2026-10-26")
    assert days.ends[0] - days.starts[0] == timedelta(hours=25)


def test_charts_are_svg_with_the_figures_and_escaped_labels(week: Desk) -> None:
    charts = report_charts(report(week))
    assert set(charts) == {"volume", "response_times", "sla", "satisfaction"}
    for svg in charts.values():
        root = ET.fromstring(svg)  # well-formed XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert "<script" not in svg and "http://" not in svg.replace("http://www.w3.org/2000/svg", "")
    assert "2026-11-03 first response: 2.5h" not in charts["response_times"]  # medians, not maxima
    assert "2026-11-03 first response: 1.8h" in charts["response_times"]  # median of 1h and 2.5h
    assert "Ratings (2, average 3.5)" in charts["satisfaction"]
    hostile = bar_chart("<b>x</b>", ["<script>"], [Series("a&b", (3.0,))])
    ET.fromstring(hostile)
    assert "<script>" not in hostile and "&lt;script&gt;" in hostile and "a&amp;b: 3" in hostile


def test_export_has_every_ticket_with_its_sla_outcome_and_conversation(week: Desk) -> None:
    snap = week.runner.rules.current
    with week.db.reading() as s:
        rows = list(
            export_rows(
                s,
                workflows={d.key: snap.workflow(d) for d in week.config.desks},
                sla=snap.sla,
                now=at(9, 0),
                with_messages=True,
            )
        )
        care = list(
            export_rows(s, workflows={}, sla=None, now=at(9, 0), where=ExportFilter(Scope(desk="CARE")))
        )
    by_key = {r["key"]: r for r in rows}
    assert list(by_key) == ["SUP-1", "SUP-2", "SUP-3", "SUP-4", "CARE-1"]
    sup2 = by_key["SUP-2"]
    assert (sup2["sla_policy"], sup2["sla_first_response"], sup2["sla_resolution"]) == (
        "standard",
        "breached",
        "met",
    )
    assert (
        sup2["created_at"] == "2026-11-02T16:00:00+00:00"
        and sup2["resolved_at"] == "2026-11-05T12:00:00+00:00"
    )
    assert (by_key["SUP-3"]["rating"], by_key["SUP-3"]["rating_comment"]) == (2, "Took too long")
    assert (
        by_key["SUP-4"]["sla_first_response"] == "breached" and by_key["SUP-4"]["first_response_at"] is None
    )
    assert by_key["CARE-1"]["group"] == "Service Desk" and by_key["CARE-1"]["assignee"] == LEAD
    convo = by_key["SUP-2"]["messages"]
    assert [m["author"] for m in convo] == ["ann@acme.example", TECH, "ann@acme.example", TECH]
    assert convo[1]["text"].startswith("Please send the client logs.")
    assert [r["key"] for r in care] == ["CARE-1"] and care[0]["sla_policy"] is None


def test_weekly_report_mail_to_the_lead_and_the_admin_once(tmp_path: Path) -> None:
    desk = known_week(tmp_path / "desk")
    try:
        desk.clock.now = at(2, 8)  # the daemon first runs on Monday morning: that starts the count
        assert desk.run("weekly_report") == 0
        desk.clock.now = at(8, 23)  # Sunday night: the week is not over
        assert desk.run("weekly_report") == 0
        desk.clock.now = at(9, 7, 5)  # Monday 07:05: last week's report, once per person and desk
        assert desk.run("weekly_report") == 4
        assert desk.run("weekly_report") == 0
        sent = desk.sent("weekly-report")
        assert sorted(rcpt for _, rcpt, _ in sent) == ["admin@example.com", "admin@example.com", LEAD, LEAD]
        mails = {(str(m["To"]), str(m["Subject"]).split(":")[0]): m for m in desk.mails("weekly-report")}
        assert set(mails) == {
            (LEAD, "Weekly report, group Service Desk (Support)"),
            (LEAD, "Weekly report, group Service Desk (Care)"),
            ("admin@example.com", "Weekly report, Support"),
            ("admin@example.com", "Weekly report, Care"),
        }
        lead = next(m for m in desk.mails("weekly-report") if "(Support)" in str(m["Subject"]))
        assert str(lead["To"]) == LEAD
        assert str(lead["From"]).endswith(f"<{desk.config.system_sender}>")
        assert lead["Auto-Submitted"] == "auto-generated"
        assert str(lead["Subject"]).startswith(
            "Weekly report, group Service Desk (Support): 4 new, 1 open, 50% first responses on time"
        )
        text = body_of(lead)
        assert "SLA met: first response / resolution" in text and "50% / 50%" in text
        assert "mailgate report --opt-out" in text
        html = lead.get_body(preferencelist=("html",))
        assert html is not None and html.get_content().count("<svg") == 4
        care = mails[("admin@example.com", "Weekly report, Care")]
        assert str(care["Subject"]).startswith(
            "Weekly report, Care: 1 new, 1 open, 100% first responses on time"
        )
        # The lead opts out: next week only the admin hears, for each desk.
        with desk.db.session() as s:
            s.add(ReportOptOut(address=LEAD))
        desk.clock.now = at(16, 8)
        assert desk.run("weekly_report") == 2
        assert [rcpt for _, rcpt, _ in desk.sent("weekly-report")[len(sent) :]] == ["admin@example.com"] * 2
    finally:
        desk.db.dispose()


def test_a_scheduler_without_sla_rules_still_sends_the_weekly_report(tmp_path: Path) -> None:
    desk = known_week(tmp_path / "desk")
    try:
        (desk.config.root / "rules" / "sla.toml").unlink()
        from mailgate.pipeline.runner import Runner

        runner = Runner(desk.db, desk.config)
        assert runner.sla.sla is None
        clock = iter([at(2, 8), at(9, 8)])
        scheduler = Scheduler(runner, clock=lambda: next(clock))
        [sup, care] = [d for d in desk.config.desks]
        assert scheduler.run_job("weekly_report", sup).actions == 0
        assert scheduler.run_job("weekly_report", sup).actions == 2
    finally:
        desk.db.dispose()
