"""Kept figures (mailgate/reports/facts.py): a report keeps each ticket's measured times and SLA
targets, the next report reads them back instead of measuring again — and measures again any
ticket that changed (a reopen) and every ticket when the SLA rules or calendars change.

The desk is the hand-worked week of tests/support/report_desk.py; the figures are those of
tests/test_reports.py, which must come out the same from kept figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import test_reports as by_hand  # its tests are called on this desk, not collected here again
from pg import fresh_database
from sqlalchemy import select, update
from support.report_desk import SLA, History, at, known_week
from support.sla_desk import Desk

from mailgate.reports import Measured, Periods, Report, build_report, save
from mailgate.reports.render import row_dict
from mailgate.ruleset import Snapshot, load
from mailgate.store.models import ReportFacts, Ticket


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = known_week(tmp_path / "desk")
    yield d
    d.db.dispose()


def keep(desk: Desk, snap: Snapshot | None = None, since: int = 2, until: int = 9) -> tuple[Report, int]:
    """A report by day that keeps what it measured, as `mailgate report` does; and how many
    tickets it measured afresh (and kept)."""
    snap = snap or desk.runner.rules.current
    kept: list[tuple[int, str, Measured]] = []

    def remember(rows: list[tuple[int, str, Measured]]) -> None:
        kept.extend(rows)
        with desk.db.session() as w:
            save(w, rows)

    with desk.db.reading() as s:
        r = build_report(
            s,
            Periods.cut(at(since, 0), at(until, 0), "day", "UTC"),
            workflows={d.key: snap.workflow(d) for d in desk.config.desks},
            sla=snap.sla,
            now=datetime.now(UTC),
            by="day",
            remember=remember,
        )
    return r, len(kept)


def ticket_id(desk: Desk, key: str) -> int:
    with desk.db.session() as s:
        return s.execute(select(Ticket.id).where(Ticket.key == key)).scalar_one()  # type: ignore[call-overload]


def monday(r: Report) -> dict:
    return row_dict(r.rows[0])


def test_the_week_from_kept_figures_is_the_week_worked_by_hand(desk: Desk) -> None:
    first, measured = keep(desk)
    assert measured == 5  # SUP-1..4 and CARE-1: every fact before the report's end
    again, measured = keep(desk)
    assert measured == 0  # all read back
    assert [row_dict(r) for r in again.rows] == [row_dict(r) for r in first.rows]
    # The hand-worked figures, now from kept figures (and a past range still measured at its end).
    by_hand.check_the_week_by_day(desk)
    by_hand.test_by_agent_group_and_priority(desk)
    by_hand.test_one_row_for_the_range_and_a_desk_filter(desk)
    by_hand.test_a_period_before_the_story_starts_from_the_backlog_then(desk)
    # Read back, not measured again: a kept figure changed behind the report's back shows.
    with desk.db.session() as s:
        s.execute(
            update(ReportFacts)
            .where(ReportFacts.ticket_id == ticket_id(desk, "SUP-1"))  # type: ignore[arg-type]
            .values(resolution_s=7 * 3600.0)
        )
    assert monday(keep(desk)[0])["resolution_median_h"] == 7.0


def test_a_reopened_ticket_is_measured_again(desk: Desk) -> None:
    before, _ = keep(desk)
    assert (monday(before)["resolution_count"], monday(before)["sla_resolution_met"]) == (1, 1)  # SUP-1
    # Saturday: SUP-1's customer writes back, the ticket reopens; its resolution is no longer one.
    History(desk).customer("SUP-1", "It jams again since this morning.", at(7, 10))
    after, measured = keep(desk)
    assert measured == 1
    assert (monday(after)["resolution_count"], monday(after)["sla_resolution_met"]) == (0, 0)
    assert [r.reopened for r in after.rows] == [0, 0, 1, 0, 0, 1, 0]
    # SUP-1's resolution clock resumes with 5 of its 8 office hours used: due Monday the 9th 12:00,
    # after the week, so nothing decided in it.
    assert sum(r.sla_breached["resolution"] for r in after.rows) == 3
    # and kept again as it is now: the next report reads it back
    assert keep(desk)[1] == 0


def test_a_change_of_the_sla_rules_or_calendar_measures_every_ticket_again(desk: Desk) -> None:
    before, _ = keep(desk)
    assert monday(before)["resolution_median_h"] == 5.0  # SUP-1, Mon 10:00-15:00 in office hours
    assert before.rows[1].sla_breached["first_response"] == 1  # SUP-2: 2.5h against 2h
    rules = desk.config.root / "rules" / "sla.toml"
    # Office hours end at 13:00 now, and the first-response target is 3h.
    rules.write_text(
        SLA.replace('["09:00-17:00"]', '["09:00-13:00"]').replace(
            'first_response = "2h"', 'first_response = "3h"'
        )
    )
    changed = load(desk.config.rules_dir, desk.config.templates_dir, desk.config.desks)
    after, measured = keep(desk, changed)
    assert measured == 5
    assert monday(after)["resolution_median_h"] == 3.0  # Mon 10:00-13:00
    # SUP-2: Mon 16:00 -> Tue 10:30 is Tue 09:00-10:30 in the new hours, 1.5h <= 3h: met
    assert after.rows[1].sla_breached["first_response"] == 0
    # The old rules again: measured again too, and the week worked by hand as before.
    assert keep(desk)[1] == 5
    by_hand.check_the_week_by_day(desk)


def test_kept_figures_on_postgresql(tmp_path: Path) -> None:
    with fresh_database() as url:
        d = known_week(tmp_path / "desk", database_url=url)
        try:
            assert keep(d)[1] == 5
            assert keep(d)[1] == 0
            by_hand.check_the_week_by_day(d)
            History(d).customer("SUP-1", "It jams again since this morning.", at(7, 10))
            after, measured = keep(d)
            assert measured == 1 and monday(after)["resolution_count"] == 0
        finally:
            d.db.dispose()
