"""One meaning of "admin" (docs/security.md "Admins: one rule"): an address in team.toml's
`admins`, or an agent with `role = "admin"`, is a desk admin, and every place that asks —
commands by mail, the web's queues, ticket pages and reports, the admin notices, the weekly
report — asks `Team.is_admin`. An admin in no group sees every open ticket in the web queues.

The attack side: being listed in `admins` makes nobody an agent — a postmaster's mailbox there
changes nothing and sees nothing — and an ordinary agent stays within its groups beside them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, make_mail, scenario_config
from support.web import http, origin, section, sign_in

from mailgate.domain.rulesfile import TomlFile
from mailgate.domain.team import desk_admins, may_change, may_see, parse_team
from mailgate.reports.weekly import recipients
from mailgate.web.reports import report_access

TRIAGE = "triage@example.com"
IT = "it-tech@example.com"
HR = "hr-tech@example.com"
BOSS = "boss@example.com"  # role = "admin", in no group
LISTED = "listed@example.com"  # an agent listed in `admins`, role left at its default, in no group
POSTMASTER = "postmaster@example.com"  # in `admins`, no agent
CUSTOMER = "ann@acme.example"

ROUTING = """
[[rules]]
name = "hr"
when.text.words = ["payslip"]
then = { group = "HR" }

[[rules]]
name = "it"
when.text.words = ["laptop"]
then = { group = "IT" }
"""

TEAM = f"""
triage = "{TRIAGE}"
admins = ["{LISTED}", "{POSTMASTER}"]
[[agents]]
address = "{TRIAGE}"
[[agents]]
address = "{IT}"
[[agents]]
address = "{HR}"
[[agents]]
address = "{BOSS}"
role = "admin"
[[agents]]
address = "{LISTED}"

[[groups]]
name = "IT"
members = ["{IT}"]

[[groups]]
name = "HR"
members = ["{HR}"]
"""


def team():  # type: ignore[no-untyped-def]
    return parse_team(TomlFile.parse(TEAM, "team.toml"))


def test_both_spellings_are_one_admin_everywhere_the_code_asks() -> None:
    t = team()
    for admin in (BOSS, LISTED):
        assert t.is_admin(admin) and t.is_admin(admin.upper())
        assert may_change(t, admin, "SUP-1", "HR", HR).allowed  # commands by mail
        assert may_see(t, admin, "SUP-1", "HR", HR)  # web pages, lists, search, similar tickets
        access = report_access(t, admin)
        assert access.allowed and access.groups is None  # every group's figures
    assert t.every_admin == (LISTED, POSTMASTER, BOSS)
    assert desk_admins(t, "root@example.com") == [LISTED, POSTMASTER, BOSS, "root@example.com"]
    assert [r.address for r in recipients(t, "root@example.com") if r.group is None] == [
        LISTED,
        POSTMASTER,
        BOSS,
    ]


def test_a_listed_address_that_is_no_agent_changes_and_sees_nothing() -> None:
    """Attack: `admins` names who is told; it makes nobody an agent."""
    t = team()
    assert t.is_admin(POSTMASTER)
    refused = may_change(t, POSTMASTER, "SUP-1", "HR", HR)
    assert not refused.allowed and refused.rule == f"{POSTMASTER} is not an agent in team.toml"
    assert not may_see(t, POSTMASTER, "SUP-1", "HR", HR)
    assert not report_access(t, POSTMASTER).allowed
    # control: an ordinary agent beside the admins keeps to its group
    assert not t.is_admin(IT) and not may_change(t, IT, "SUP-1", "HR", HR).allowed
    assert not may_see(t, IT, "SUP-1", "HR", HR)


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    """SUP-1 is HR's, SUP-2 IT's, SUP-3 no group's (no rule hits: triage)."""
    path = scenario_config(
        tmp_path / "desk",
        relay_port=sink.port,
        desks=[("support@localhost", "SUP", "jira")],
        team=TEAM,
        routing=ROUTING,
    )
    d = RunningDaemon(path)
    for subject, body in (
        ("Payslip is wrong", "My payslip for November is wrong."),
        ("Laptop fan noise", "My laptop fan is loud."),
        ("Parking", "Where do I park?"),
    ):
        d.send(make_mail(subject, body, sender=CUSTOMER), sender=CUSTOMER)
        d.settle()
    assert [(t.key, t.group) for t in d.tickets()] == [("SUP-1", "HR"), ("SUP-2", "IT"), ("SUP-3", None)]
    yield d
    d.stop()


def _listed(page: str) -> set[str]:
    """The ticket keys in the queues page's second list (an agent's groups, an admin's all)."""
    return set(re.findall(r"SUP-\d+", section(page, "groups", "unassigned")))


def test_an_admin_in_no_group_sees_every_open_ticket_in_the_web_queues(
    desk: RunningDaemon, sink: Sink
) -> None:
    base = origin(desk)
    for admin in (BOSS, LISTED):  # role = "admin", and listed in `admins`: the same admin
        session = sign_in(desk, sink, admin)
        page = http("GET", f"{base}/agent", headers=session).text
        assert "Every open ticket (you are an admin)" in page
        assert _listed(page) == {"SUP-1", "SUP-2", "SUP-3"}, admin
        assert http("GET", f"{base}/agent/t/SUP-1", headers=session).status == 200
        assert http("GET", f"{base}/agent/reports?group=HR", headers=session).status == 200
    # control: IT's agent (its group's lead) lists its group's ticket only, and its figures only
    it = sign_in(desk, sink, IT)
    page = http("GET", f"{base}/agent", headers=it).text
    assert "My groups (IT)" in page and _listed(page) == {"SUP-2"}
    assert http("GET", f"{base}/agent/t/SUP-1", headers=it).status == 404
    assert http("GET", f"{base}/agent/reports?group=HR", headers=it).status == 403
