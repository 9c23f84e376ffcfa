"""The escalation ladder (issue 19, item 8): warn the assignee, escalate to the group lead, then
to the desk's admins — and never the same person twice in a row for one ticket's breach. Real
tickets made by mail; the jobs' clock is injected, nothing sleeps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import body_of
from support.sla_desk import LEAD, TEAM, TECH, Desk, make_desk

from mailgate.store.models import utc

ADMIN = "boss@example.com"  # team.toml admins
CONFIG_ADMIN = "admin@example.com"  # config.toml admin_address (tests/conftest.write_config)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = make_desk(tmp_path / "desk", team=f'admins = ["{ADMIN}"]\n' + TEAM)
    yield d
    d.db.dispose()


def test_warn_the_assignee_then_the_lead_then_the_admins(desk: Desk) -> None:
    t = desk.mail("VPN drops every hour")  # support@: assigned to Tom Tech, group lead Lea
    assert t.assignee == TECH
    desk.clock.now = utc(t.created_at)

    desk.clock.advance(hours=3, minutes=1)  # 75% of the 4h first response
    assert desk.run("sla_check") == 1
    desk.clock.advance(hours=1)  # breached
    assert desk.run("sla_check") == 1
    desk.clock.advance(hours=2)  # 6h01: half the target again, still unanswered
    desk.run("sla_check")
    assert desk.run("sla_check") == 0  # each step once

    assert [to for _, to, _ in desk.sent("sla-escalation")] == [LEAD, ADMIN, CONFIG_ADMIN]
    assert desk.sent("sla-warning")[0][1] == TECH
    to_admin = [m for m in desk.mails("sla-escalation") if str(m["To"]) == ADMIN]
    assert "first response on SUP-1 is overdue" in body_of(to_admin[0])
    assert desk.ticket("SUP-1").first_response_admins_at is not None


def test_a_lead_who_was_warned_is_not_escalated_to_again(desk: Desk) -> None:
    t = desk.mail("Printer on fire", to="care@example.com")  # care@: the group's lead takes it
    assert t.assignee == LEAD
    desk.clock.now = utc(t.created_at)

    desk.clock.advance(hours=3, minutes=1)
    desk.run("sla_check")
    desk.clock.advance(hours=1)
    desk.run("sla_check")

    sent = [(k, to) for k, to, _ in desk.sent() if k.startswith("sla-")]
    assert sent == [("sla-warning", LEAD), ("sla-escalation", ADMIN), ("sla-escalation", CONFIG_ADMIN)]
    # The admins' step comes later: they just had this breach, so nobody is told twice.
    desk.clock.advance(hours=2)
    desk.run("sla_check")
    first_response = [to for k, to, key in desk.sent("sla-escalation") if key == "CARE-1"]
    assert first_response.count(ADMIN) == 1
    for a, b in zip(sent, sent[1:], strict=False):
        assert a[1] != b[1] or a[0] == b[0]
