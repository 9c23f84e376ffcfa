"""The shipped rules/ route realistic mail (tests/fixtures/routing/*.eml) as seeds 001, 003, 004 ask.

Every shipped rule must hit for at least one fixture, so an example nobody exercises cannot rot.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.domain.routing import RoutingDecision, evaluate
from mailgate.mail.parse import parse_message
from mailgate.ruleset import Snapshot
from mailgate.ruleset import load as load_rules

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "routing"
DESK = "support@localhost"


@pytest.fixture(scope="module")
def shipped() -> Snapshot:
    return load_rules(ROOT / "rules", ROOT / "templates")


def route(rules: Snapshot, name: str, **kw: object) -> RoutingDecision:
    mail = parse_message((FIXTURES / f"{name}.eml").read_bytes(), own_addresses=[DESK])
    assert mail.date is not None
    return evaluate(rules, mail, desk_address=DESK, now=mail.date, **kw)  # type: ignore[arg-type]


# fixture -> (rules that hit, group, assignee, priority, type, category, auto_reply, tags)
EXPECTED = {
    # seed 004: impact x urgency. Outlook "Importance: high" raises urgency; medium impact -> high.
    "urgent_outlook_importance": (
        ["urgent", "care-it"],
        "IT",
        "it-lead@localhost",
        "high",
        None,
        "IT",
        None,
        ["urgent"],
    ),
    "widespread_outage": (["widespread", "care-it"], "IT", "it-lead@localhost", "high", None, "IT", None, []),
    # seed 001 request types
    "enterprise_customer_bug": (
        ["enterprise-customer", "bug-report"],
        "Product Support",
        "support-lead@localhost",
        "medium",
        "Bug report",
        None,
        None,
        ["vip"],
    ),
    "screenshot_dashboard_error": (
        ["screenshot-attached", "bug-report"],
        "Product Support",
        "support-lead@localhost",
        "medium",
        "Bug report",
        None,
        None,
        ["screenshot"],
    ),
    "logs_attached_app_freezes": (
        ["logs-attached", "bug-report"],
        "Product Support",
        "support-lead@localhost",
        "medium",
        "Bug report",
        None,
        None,
        ["logs"],
    ),
    "feature_request": (
        ["feature-request"],
        "Product Development",
        "dev-lead@localhost",
        "low",
        "Feature request",
        None,
        None,
        [],
    ),
    "additional_support": (
        ["additional-support"],
        "Product Support",
        "support-lead@localhost",
        "low",
        "Additional support request",
        None,
        None,
        [],
    ),
    "sales_billing_invoice": (
        ["sales-billing"],
        "Sales and Billing",
        "sales-lead@localhost",
        "medium",
        "Sales/Billing enquiry",
        None,
        None,
        [],
    ),
    "sales_billing_cc_alias": (
        ["sales-billing"],
        "Sales and Billing",
        "sales-lead@localhost",
        "medium",
        "Sales/Billing enquiry",
        None,
        None,
        [],
    ),
    "general_enquiry": (
        ["general-enquiry"],
        "Product Support",
        "support-lead@localhost",
        "low",
        "General enquiry",
        None,
        None,
        [],
    ),
    "gdpr_delete": (
        ["gdpr-delete"],
        "Privacy",
        "dpo@localhost",
        "high",
        "GDPR request",
        "Delete my personal data",
        "kb_gdpr_request",
        ["gdpr"],
    ),
    "gdpr_copy": (
        ["gdpr-copy"],
        "Privacy",
        "dpo@localhost",
        "medium",
        "GDPR request",
        "Send me a copy of my data",
        "kb_gdpr_request",
        ["gdpr"],
    ),
    "gdpr_other": (
        ["gdpr-other"],
        "Privacy",
        "dpo@localhost",
        "medium",
        "GDPR request",
        "Other",
        None,
        ["gdpr"],
    ),
    # seed 003: the care desk dispatcher
    "care_database_vendor": (
        ["care-database-vendors"],
        "Database Vendors",
        "dbvendors-lead@localhost",
        "medium",
        None,
        "Database vendor",
        None,
        [],
    ),
    "care_website_html": (
        ["care-websites"],
        "Websites",
        "web-lead@localhost",
        "medium",
        None,
        "Website",
        None,
        [],
    ),
    "care_av_portal_header": (
        ["care-av"],
        "AV",
        "av-lead@localhost",
        "medium",
        None,
        "Audio-visual",
        None,
        [],
    ),
    "care_facilities": (
        ["care-facilities"],
        "Facilities",
        "facilities-lead@localhost",
        "medium",
        None,
        "Facilities",
        None,
        [],
    ),
    "care_maintenance_leak": (
        ["care-maintenance"],
        "Maintenance",
        "maintenance-lead@localhost",
        "medium",
        None,
        "Building maintenance",
        None,
        [],
    ),
    "after_hours_weekend": (
        ["after-hours", "care-maintenance"],
        "Maintenance",
        "maintenance-lead@localhost",
        "medium",
        None,
        "Building maintenance",
        None,
        ["after-hours"],
    ),
    "care_it_guest_wifi": (
        ["care-it-guest-wifi"],
        "IT",
        "it-lead@localhost",
        "medium",
        None,
        "Network",
        "kb_guest_wifi",
        [],
    ),
    "care_it_password": (
        ["care-it-password"],
        "IT",
        "it-lead@localhost",
        "medium",
        None,
        "Accounts and passwords",
        "kb_password_reset",
        [],
    ),
    "care_it_vpn": (["care-it"], "IT", "it-lead@localhost", "medium", None, "IT", None, []),
    "care_it_portal_body_category": (["care-it"], "IT", "it-lead@localhost", "medium", None, "IT", None, []),
    "care_desk_team_voicemail": (
        ["care-desk-team"],
        "Care Desk Team",
        "caredesk-lead@localhost",
        "medium",
        None,
        "Care desk",
        None,
        [],
    ),
    "triage_unmatched": ([], None, "angel@localhost", "medium", None, None, None, []),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_rules_route_realistic_mail(shipped: Snapshot, name: str) -> None:
    matched, group, assignee, priority, type_, category, auto_reply, tags = EXPECTED[name]
    d = route(shipped, name)
    assert list(d.matched) == matched, d.trace
    assert (d.group, d.assignee, d.priority, d.type, d.category, d.auto_reply, list(d.tags)) == (
        group,
        assignee,
        priority,
        type_,
        category,
        auto_reply,
        tags,
    ), d.trace
    assert d.triaged == (group is None)


def test_every_shipped_rule_is_exercised_by_a_fixture(shipped: Snapshot) -> None:
    exercised = {rule for expected in EXPECTED.values() for rule in expected[0]}
    assert {r.name for r in shipped.routing.rules} == exercised
    assert {p.stem for p in FIXTURES.glob("*.eml")} == set(EXPECTED)


def test_enterprise_customer_gets_plan_field_and_sales_watcher(shipped: Snapshot) -> None:
    d = route(shipped, "enterprise_customer_bug")
    assert d.fields == {"plan": "enterprise"}
    assert d.watchers == ("sales-lead@localhost",)
    assert d.notify == ("support-lead@localhost", "sales-lead@localhost")
    assert "rule 'enterprise-customer': hit (from domain is 'bigcorp.example')" in d.trace


def test_trace_answers_why_it_went_to_billing(shipped: Snapshot) -> None:
    d = route(shipped, "sales_billing_cc_alias")
    assert "rule 'sales-billing': hit (cc is 'billing@localhost')" in d.trace
    assert "stopped at rule 'sales-billing' (first match wins)" in d.trace
    assert any(
        line.startswith("rule 'bug-report': miss (needed: text has a word of 'app'") for line in d.trace
    )
    assert d.trace[-2] == "assign: sales-lead@localhost (lead of group 'Sales and Billing')"


def test_unmatched_mail_goes_to_triage_and_says_so(shipped: Snapshot) -> None:
    d = route(shipped, "triage_unmatched")
    assert d.assignee == "angel@localhost" and d.group is None
    assert "assign: angel@localhost (no rule chose a group; triage person)" in d.trace
    assert len([line for line in d.trace if line.startswith("rule ")]) == len(shipped.routing.rules)


def test_it_round_robin_continues_after_last_assignee(shipped: Snapshot) -> None:
    d = route(shipped, "care_it_vpn", last_assigned=lambda group: "it-tech1@localhost")
    assert d.assignee == "it-tech2@localhost"
    assert "round-robin in 'IT' after it-tech1@localhost" in d.assignment_reason
    d = route(shipped, "care_it_vpn", last_assigned=lambda group: "it-tech2@localhost")
    assert d.assignee == "it-lead@localhost"


def test_maintenance_least_open_picks_the_quieter_member(shipped: Snapshot) -> None:
    counts = {"maintenance-lead@localhost": 7, "maintenance-tech@localhost": 2}
    d = route(shipped, "care_maintenance_leak", open_counts=counts.__getitem__)
    assert d.assignee == "maintenance-tech@localhost"
    assert d.assignment_reason == "least-open in 'Maintenance': maintenance-tech@localhost has 2 open"


def test_after_hours_uses_the_desks_time_zone(shipped: Snapshot) -> None:
    mail = parse_message((FIXTURES / "care_it_vpn.eml").read_bytes())
    # The shipped routing.toml names no zone: it reads the desk's, the [timers] calendar's.
    assert shipped.zone == "Europe/Berlin" and str(shipped.routing.timezone) == "Europe/Berlin"
    # 16:30 UTC on a Tuesday in May is 18:30 in Berlin: after hours there.
    late = evaluate(shipped, mail, desk_address=DESK, now=datetime(2024, 5, 14, 16, 30, tzinfo=UTC))
    assert "after-hours" in late.tags
    assert "rule 'after-hours': hit (local time 18:30 is within 18:00-08:00)" in late.trace
    day = evaluate(shipped, mail, desk_address=DESK, now=datetime(2024, 5, 14, 15, 30, tzinfo=UTC))
    assert "after-hours" not in day.tags
