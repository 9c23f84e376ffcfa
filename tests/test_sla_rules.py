"""rules/sla.toml: the shipped example loads, first policy wins, mistakes name file and line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailgate.domain.rulesfile import RulesInvalid
from mailgate.domain.sla import load_sla, parse_sla, policy_for

SHIPPED = Path(__file__).resolve().parents[1] / "rules" / "sla.toml"
H = timedelta(hours=1)


def test_shipped_rules_pick_the_seed_policies_first_match_wins() -> None:
    rules = load_sla(SHIPPED)

    def pick(**fields: object) -> str | None:
        policy = policy_for(rules, fields)
        return policy.name if policy else None

    # Jira seed: the agent sets priority 1 and plan Enterprise on SUP-20.
    assert pick(priority=1, custom_fields={"plan": "Enterprise"}) == "enterprise P1"
    assert pick(priority="P1", plan="enterprise") == "enterprise P1"
    assert pick(priority=3, plan="enterprise") == "enterprise"
    assert pick(priority=1, plan="standard") == "P1"
    assert pick(priority="2") == "P2"
    assert pick(type="incident") == "untriaged"
    p2 = policy_for(rules, {"priority": 2})
    assert p2 is not None and p2.first_response == 4 * H and p2.resolution == 8 * H  # 1d = an office day
    assert rules.timers.auto_close_resolved_days == 5 and rules.timers.deferred_review_days == 14
    assert rules.timers.unanswered_reminder_hours == 4 and rules.timers.calendar.tz == "Europe/Berlin"
    assert rules.timers.waiting_customer_close_days is None and rules.timers.digest_hour is None
    # P2 at Friday 15:00 in Berlin: 2h Friday + 2h Monday.
    due = p2.calendar.add(datetime(2026, 6, 5, 13, tzinfo=UTC), p2.first_response)
    assert due == datetime(2026, 6, 8, 9, tzinfo=UTC)


def test_every_mistake_is_reported_with_file_line_and_reason() -> None:
    text = """\
[calendars.office]
tz = "Europe/Berln"
hours = { mon-fry = ["09:00-17:00"], sat = ["10:00-9:00"] }
holidays = ["2026-13-01"]

[[policies]]
name = "P1"
match = { prority = 1 }
calendar = "offce"
first_response = "4 hours"
warn_at = 1.5

[timers]
auto_close_days = 5
waiting_customer_reminder_days = 7
waiting_customer_close_days = 3
"""
    with pytest.raises(RulesInvalid) as caught:
        parse_sla(text, "rules/sla.toml")
    messages = str(caught.value)
    assert "rules/sla.toml:2: unknown time zone 'Europe/Berln'" in messages
    assert "rules/sla.toml:3: 'mon-fry' is not a weekday" in messages
    assert "rules/sla.toml:3: '10:00-9:00' ends before it starts" in messages
    assert "rules/sla.toml:4: '2026-13-01' is not a date" in messages
    assert "rules/sla.toml:8: match key 'prority' looks like a typo (did you mean 'priority'?)" in messages
    assert "rules/sla.toml:9: unknown calendar 'offce'" in messages
    assert "rules/sla.toml:10: '4 hours' is not a duration" in messages
    assert "rules/sla.toml:11: warn_at must be a fraction" in messages
    assert "rules/sla.toml:14: unknown timer setting 'auto_close_days'" in messages
    assert "did you mean 'auto_close_resolved_days'?" in messages
    assert "rules/sla.toml:16: waiting_customer_close_days must be later" in messages


def test_toml_syntax_error_names_its_line() -> None:
    with pytest.raises(RulesInvalid, match=r"^rules/sla.toml:3: TOML syntax"):
        parse_sla("[timers]\nauto_close_resolved_days = 5\nauto_close_resolved_days = = 6\n")


def test_zero_switches_a_job_off_and_missing_sections_take_defaults() -> None:
    rules = parse_sla("[timers]\nauto_close_resolved_days = 0\ndigest_hour = 8\n")
    assert rules.timers.auto_close_resolved_days is None
    assert rules.timers.digest_hour == 8
    assert rules.timers.deferred_review_days == 14  # default
    assert rules.policies == () and policy_for(rules, {"priority": 1}) is None
