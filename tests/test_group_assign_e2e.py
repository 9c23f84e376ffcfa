"""`#assign group X` by mail, through the real daemon (issue 19, item 4): the ticket goes to
whom the group's `assign` strategy picks, that person is told, and a group with nobody available
hears of the ticket as a group. Routing and the command share the one choice (domain/team.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply, scenario_config

ANGEL = "angel@example.com"  # triage
FAC_LEAD = "fac-lead@example.com"
FAC_TECH = "fac-tech@example.com"
RR_A = "rr-a@example.com"
RR_B = "rr-b@example.com"
AWAY_A = "away-a@example.com"
AWAY_B = "away-b@example.com"
CUSTOMER = "ann@acme.example"

TEAM = f"""
triage = "{ANGEL}"
[[agents]]
address = "{ANGEL}"
[[agents]]
address = "{FAC_LEAD}"
[[agents]]
address = "{FAC_TECH}"
[[agents]]
address = "{RR_A}"
[[agents]]
address = "{RR_B}"
[[agents]]
address = "{AWAY_A}"
away = true
[[agents]]
address = "{AWAY_B}"
away = true

[[groups]]
name = "Facilities"
members = ["{FAC_TECH}", "{FAC_LEAD}"]
lead = "{FAC_LEAD}"

[[groups]]
name = "Rota"
members = ["{RR_A}", "{RR_B}"]
assign = "round-robin"

[[groups]]
name = "Holiday"
members = ["{AWAY_A}", "{AWAY_B}"]
assign = "least-loaded"
"""


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    path = scenario_config(
        tmp_path / "desk", relay_port=sink.port, desks=[("support@localhost", "SUP", "jira")], team=TEAM
    )
    d = RunningDaemon(path)
    yield d
    d.stop()


def _new_ticket(desk: RunningDaemon, sink: Sink, subject: str) -> tuple[str, object]:
    """A customer's request lands with triage; returns (key, the triage person's notification)."""
    before = len(sink.to(ANGEL))
    desk.send(make_mail(subject, sender=CUSTOMER), sender=CUSTOMER)
    desk.settle()
    note = sink.wait_to(ANGEL, before + 1)[-1]
    return desk.tickets()[-1].key, note


def _command(desk: RunningDaemon, note: object, line: str) -> None:
    desk.send(reply(note, ANGEL, f"{line}\n"), sender=ANGEL)  # type: ignore[arg-type]
    desk.settle()


def test_assign_group_gives_the_ticket_to_the_lead_and_tells_them(desk: RunningDaemon, sink: Sink) -> None:
    key, note = _new_ticket(desk, sink, "The door of room 4 is stuck")
    assert desk.tickets()[-1].assignee == ANGEL  # triage has it

    _command(desk, note, "#assign group Facilities")

    t = desk.tickets()[-1]
    assert (t.group, t.assignee) == ("Facilities", FAC_LEAD)
    [told] = sink.wait_to(FAC_LEAD, 1)
    assert key in str(told["Subject"])
    assert f"assigned {key} to you" in body_of(told)
    assert sink.to(FAC_TECH) == []  # the lead takes it; the others are not bothered


def test_round_robin_group_takes_turns(desk: RunningDaemon, sink: Sink) -> None:
    first, note1 = _new_ticket(desk, sink, "Projector in room 1")
    second, note2 = _new_ticket(desk, sink, "Projector in room 2")
    _command(desk, note1, "#assign group Rota")
    _command(desk, note2, "#assign group Rota")
    assigned = {t.key: t.assignee for t in desk.tickets()}
    assert {assigned[first], assigned[second]} == {RR_A, RR_B}
    assert len(sink.wait_to(RR_A, 1)) == 1 and len(sink.wait_to(RR_B, 1)) == 1


def test_a_group_with_nobody_available_is_told_as_a_group(desk: RunningDaemon, sink: Sink) -> None:
    key, note = _new_ticket(desk, sink, "Heating broken")
    _command(desk, note, "#assign group Holiday")
    t = desk.tickets()[-1]
    assert (t.group, t.assignee) == ("Holiday", None)  # not left with the triage person
    for member in (AWAY_A, AWAY_B):
        [told] = sink.wait_to(member, 1)
        assert f"moved {key} to group Holiday" in body_of(told)
        assert "#assign me" in body_of(told)
