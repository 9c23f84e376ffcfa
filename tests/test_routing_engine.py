"""Routing semantics on small hand-written rules: operators, all/any/not, continue, assignment, priority."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.domain.conditions import Facts
from mailgate.domain.history import sentence
from mailgate.domain.routing import evaluate
from mailgate.domain.team import Team
from mailgate.mail.model import Attachment, ParsedMail
from mailgate.ruleset import Snapshot
from mailgate.ruleset import load as load_rules

TEAM = """
triage = "triage@localhost"

[[agents]]
address = "lead@localhost"
[[agents]]
address = "a@localhost"
[[agents]]
address = "b@localhost"
[[agents]]
address = "triage@localhost"
[[agents]]
address = "solo@localhost"

[[groups]]
name = "Ops"
members = ["lead@localhost", "a@localhost", "b@localhost"]
lead = "lead@localhost"

[[groups]]
name = "Solo"
members = ["solo@localhost"]
"""

NOW = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)  # a Tuesday


def load(tmp_path: Path, routing: str, team: str = TEAM) -> Snapshot:
    rules, templates = tmp_path / "rules", tmp_path / "templates"
    rules.mkdir(exist_ok=True)
    templates.mkdir(exist_ok=True)
    (templates / "kb_vpn.txt").write_text("See the VPN guide.\n")
    (rules / "team.toml").write_text(team)
    (rules / "routing.toml").write_text(routing)
    return load_rules(rules, templates)


def msg(subject: str = "", body: str = "", **kw: object) -> ParsedMail:
    return ParsedMail(
        subject=subject, body_text=body, from_addr=str(kw.pop("from_addr", "x@example.org")), **kw
    )  # type: ignore[arg-type]


def groups(rules: Snapshot, mail: ParsedMail, now: datetime = NOW) -> str | None:
    return evaluate(rules, mail, desk_address="support@localhost", now=now).group


def test_words_match_whole_words_and_phrases_not_substrings(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """
[[rules]]
name = "w"
when.text.words = ["wifi", "out of order", "doesn't work"]
then.group = "Ops"
""",
    )
    assert groups(rules, msg("The WiFi is slow")) == "Ops"
    assert groups(rules, msg("", "the lift is Out  of\norder again")) == "Ops"
    assert groups(rules, msg("", "it doesn\u2019t work")) == "Ops"  # typographic apostrophe
    assert groups(rules, msg("wifidirect printer")) is None
    assert groups(rules, msg("", "it doesn't workout")) is None


def test_operators_on_addresses_headers_and_attachments(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """
[[rules]]
name = "domain"
when.from.domain = "partner.example"
then.group = "Ops"

[[rules]]
name = "header"
when.header = { name = "X-Ticket-Source", equals = "monitoring" }
then.group = "Solo"

[[rules]]
name = "pdf"
when.attachment_name.ends = ".pdf"
when.has_attachment = true
then.tags = ["pdf"]
""",
    )
    assert groups(rules, msg(from_addr="ann@eu.partner.example")) == "Ops"  # subdomains count
    assert groups(rules, msg(from_addr="ann@notpartner.example")) is None
    assert (
        groups(rules, msg(headers=[("x-ticket-source", "Monitoring")])) == "Solo"
    )  # names, values: any case
    d = evaluate(
        rules,
        msg(attachments=[Attachment("Quote.PDF", "application/pdf", b"%PDF")]),
        desk_address="support@localhost",
        now=NOW,
    )
    assert d.tags == ("pdf",) and d.matched == ("pdf",)


def test_regex_all_any_not_nest(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """
[[rules]]
name = "order"
[[rules.when.any]]
subject.regex = 'order\\s+#?\\d{5}'
[[rules.when.any]]
all = [{ body = { contains = "refund" } }, { not = { from = { ends = "@localhost" } } }]
[rules.then]
group = "Ops"
""",
    )
    assert groups(rules, msg("Where is ORDER #12345?")) == "Ops"
    assert groups(rules, msg("hi", "I want a refund", from_addr="c@shop.example")) == "Ops"
    assert groups(rules, msg("hi", "I want a refund", from_addr="agent@localhost")) is None
    d = evaluate(
        rules, msg("hi", "I want a refund", from_addr="agent@localhost"), desk_address="s@l", now=NOW
    )
    assert d.trace[0] == (
        "rule 'order': miss (needed: any of (subject matches /order\\s+#?\\d{5}/; "
        "(body contains 'refund' and not (from ends with '@localhost'))))"
    )


def test_continue_accumulates_and_later_hits_override(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """
[[rules]]
name = "tag-vpn"
continue = true
when.subject.words = ["vpn"]
then = { tags = ["vpn"], group = "Solo", fields = { area = "network", site = "hq" }, auto_reply = "kb_vpn" }

[[rules]]
name = "ops"
when.subject.contains = "down"
then = { group = "Ops", tags = ["outage"], fields = { site = "branch" } }

[[rules]]
name = "never-reached"
when.subject.contains = "vpn"
then.tags = ["late"]
""",
    )
    d = evaluate(rules, msg("VPN down"), desk_address="support@localhost", now=NOW)
    assert d.matched == ("tag-vpn", "ops")
    assert d.group == "Ops" and d.tags == ("vpn", "outage")
    assert dict(d.fields) == {"area": "network", "site": "branch"}
    assert d.auto_reply == "kb_vpn"
    assert "rule 'never-reached'" not in " ".join(d.trace)


def test_time_and_weekday_in_the_files_zone(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """
timezone = "America/New_York"

[[rules]]
name = "night"
when.time = "22:00-06:00"
then.group = "Solo"

[[rules]]
name = "weekday-business"
when = { weekday = ["mon-fri"], time = "09:00-17:00" }
then.group = "Ops"
""",
    )
    # 03:30 UTC is 23:30 the day before in New York (EDT, UTC-4).
    assert groups(rules, msg(), datetime(2024, 5, 14, 3, 30, tzinfo=UTC)) == "Solo"
    assert groups(rules, msg(), datetime(2024, 5, 14, 14, 0, tzinfo=UTC)) == "Ops"  # Tue 10:00
    assert groups(rules, msg(), datetime(2024, 5, 18, 14, 0, tzinfo=UTC)) is None  # Saturday


def test_priority_matrix_and_explicit_priority(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """
priorities = ["P1", "P2", "P3"]

[priority_matrix]
impact = ["wide", "narrow"]
urgency = ["now", "later"]
priority = [["P1", "P2"], ["P2", "P3"]]
default_impact = "narrow"
default_urgency = "later"

[defaults]
priority = "P3"

[[rules]]
name = "down"
continue = true
when.subject.words = ["down"]
then.impact = "wide"

[[rules]]
name = "urgent"
continue = true
when.subject.words = ["urgent"]
then.urgency = "now"

[[rules]]
name = "ceo"
when.from.equals = "ceo@example.org"
then.priority = "P1"
""",
    )

    def prio(subject: str, sender: str = "x@example.org") -> str | None:
        return evaluate(rules, msg(subject, from_addr=sender), desk_address="s@l", now=NOW).priority

    assert prio("site down") == "P2"  # wide x later (default urgency)
    assert prio("site down urgent") == "P1"
    assert prio("urgent") == "P2"  # narrow (default) x now
    assert prio("hello") == "P3"  # defaults
    assert prio("hello", "ceo@example.org") == "P1"


def test_matrix_priority_keeps_the_assignment_reason_and_both_reach_the_history(tmp_path: Path) -> None:
    """The priority matrix's reason is its own: the assignment's reason (why this agent) stays
    what it was, and the ticket's history says both."""
    rules = load(
        tmp_path,
        """
priorities = ["P1", "P2"]

[priority_matrix]
impact = ["wide", "narrow"]
urgency = ["now", "later"]
priority = [["P1", "P1"], ["P2", "P2"]]

[[rules]]
name = "down"
when.subject.words = ["down"]
then.group = "Ops"
then.impact = "wide"
""",
    )
    d = evaluate(rules, msg("site down"), desk_address="s@l", now=NOW)
    assert d.assignee == "lead@localhost" and d.priority == "P1"
    assert d.assignment_reason == "lead of group 'Ops'", d.assignment_reason
    assert d.priority_reason.startswith("'P1' from matrix: impact wide"), d.priority_reason
    line = sentence("routed", "system", {"routing": d.to_dict(full_trace=False)})
    assert "assigned to lead@localhost (lead of group 'Ops')" in line, line
    assert "priority P1 (from matrix: impact wide × urgency later)" in line, line


def test_assignment_never_picks_an_agent_marked_away(tmp_path: Path) -> None:
    away_team = TEAM.replace('address = "lead@localhost"', 'address = "lead@localhost"\naway = true')
    rules = load(
        tmp_path,
        """
[[rules]]
name = "ops"
when.subject.words = ["ops"]
then.group = "Ops"

[[rules]]
name = "direct"
when.subject.words = ["direct"]
then.assignee = "lead"
then.group = "Solo"
""",
        team=away_team,
    )
    d = evaluate(rules, msg("ops"), desk_address="s@l", now=NOW)
    assert d.assignee == "a@localhost"
    assert (
        d.assignment_reason == "next member (lead lead@localhost away) of group 'Ops'; away: lead@localhost"
    )
    # An explicit assignee who is away falls back to the rule's group.
    d = evaluate(rules, msg("direct"), desk_address="s@l", now=NOW)
    assert d.assignee == "solo@localhost"


def test_whole_group_away_goes_to_triage(tmp_path: Path) -> None:
    team = TEAM.replace('address = "solo@localhost"', 'address = "solo@localhost"\naway = true')
    rules = load(
        tmp_path, '[[rules]]\nname = "s"\nwhen.subject.words = ["solo"]\nthen.group = "Solo"\n', team=team
    )
    d = evaluate(rules, msg("solo"), desk_address="s@l", now=NOW)
    assert (d.group, d.assignee, d.triaged) == ("Solo", "triage@localhost", True)
    assert "every member of group 'Solo' is away" in d.assignment_reason


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        (None, "lead@localhost"),
        ("lead@localhost", "a@localhost"),
        ("b@localhost", "lead@localhost"),
        ("gone@x", "lead@localhost"),
    ],
)
def test_round_robin_rotation(tmp_path: Path, last: str | None, expected: str) -> None:
    team = TEAM.replace('lead = "lead@localhost"', 'lead = "lead@localhost"\nassignment = "round-robin"')
    rules = load(tmp_path, '[[rules]]\nname = "o"\nthen.group = "Ops"\n', team=team)
    d = evaluate(rules, msg("x"), desk_address="s@l", now=NOW, last_assigned=lambda g: last)
    assert d.assignee == expected


def test_team_lookup_by_handle(tmp_path: Path) -> None:
    team: Team = load(tmp_path, "").team
    assert team.agent("A")
    assert team.agent("a@localhost") is team.agent("a")
    assert team.agent("nobody") is None


def test_short_trace_for_the_audit_event_lists_hits_and_counts_misses(tmp_path: Path) -> None:
    rules = load(
        tmp_path,
        """
[[rules]]
name = "a"
when.subject.words = ["alpha"]
then.group = "Solo"

[[rules]]
name = "b"
when.subject.words = ["beta"]
then.group = "Ops"

[[rules]]
name = "c"
when.subject.words = ["beta"]
then.group = "Solo"
""",
    )
    d = evaluate(rules, msg("beta release"), desk_address="s@l", now=NOW)
    assert d.trace_hits == (
        "rule 'b': hit (subject has word 'beta')",
        "1 rule(s) missed",
        "stopped at rule 'b' (first match wins)",
        "assign: lead@localhost (lead of group 'Ops')",
    )
    assert d.trace[:2] == (
        "rule 'a': miss (needed: subject has a word of 'alpha')",
        "rule 'b': hit (subject has word 'beta')",
    )


WORDS = ["wifi", "wi-fi", "vpn", "doesn't", "out of order", "e-mail", "café", "c++", "no one can", "it's"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rule_words=st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3), min_size=1, max_size=6),
    text=st.lists(
        st.sampled_from(
            [*WORDS, "WiFi", "Wi-Fi", "doesn’t", "Out\nof order", "vpn.", "(vpn)", "cafe", "x", "-", "'"]
        ),
        max_size=12,
    ).map(" ".join),
)
def test_word_index_never_skips_a_rule_that_would_hit(
    tmp_path: Path, rule_words: list[list[str]], text: str
) -> None:
    # The index is an optimisation only: the rules that hit must be exactly those whose
    # conditions hold when every rule is tested.
    body = "".join(
        f'[[rules]]\nname = "r{i}"\ncontinue = true\nwhen.{"text" if i % 2 else "body"}.words = {json.dumps(ws)}\n\n'
        for i, ws in enumerate(rule_words)
    )
    rules = load(tmp_path, body)
    mail = msg("subject line", text)
    facts = Facts.of(mail, desk_address="s@l", now=NOW)
    brute = tuple(r.name for r in rules.routing.rules if r.cond.test(facts) is not None)
    assert evaluate(rules, mail, desk_address="s@l", now=NOW).matched == brute


# Regex rules of the shapes admins write, and texts that come close to them: other letter cases,
# the long s and dotless i that a case-blind regex takes for 's' and 'i', typographic quotes.
REGEXES = [
    r"(?m)^\s*category:\s*database",
    r"(?m)^\s*category:\s*websites?\b",
    r"(?-i:Order) #\d+ was",
    r"invoice|receipt",
    r"(abc)?defg",
    r"mis+ing (?=item)",
    r"don't work",
    r"(?x) cat \s* egory : ",
    r"Kelvin\W+scale",
]
NEAR = [
    "category: database",
    "  CATEGORY:\tDATABASE",
    "Category: Databaſe",
    "category:websites",
    "category: webſite",
    "Order #12 was lost",
    "ORDER #12 was",
    "Receipt",
    "defg",
    "abcdefg",
    "MISSING ITEM",
    "miſſing item",
    "mıssıng item",
    "don\u2019t work",
    "DON'T WORK",
    "\u212aelvin scale",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(
        st.one_of(
            st.sampled_from(NEAR), st.text(alphabet="aceimnorstwy :\n\u017f\u0131\u212a'", max_size=12)
        ),
        max_size=6,
    ),
    field=st.sampled_from(["subject", "body"]),
)
def test_a_regex_rule_hits_exactly_when_its_regex_matches(
    tmp_path: Path, parts: list[str], field: str
) -> None:
    """Regex tests first look for the plain text every match must contain (routing's cheap skip
    of long bodies); the rule must still hit on every text the regex matches, and only there."""
    rules = load(
        tmp_path,
        "".join(
            f'[[rules]]\nname = "r{i}"\nwhen.{field}.regex = {json.dumps(rx)}\ncontinue = true\n'
            f'[rules.then]\ntags = ["t{i}"]\n\n'
            for i, rx in enumerate(REGEXES)
        ),
    )
    text = "".join(parts)
    mail = msg(subject=text) if field == "subject" else msg(body=text)
    decision = evaluate(rules, mail, desk_address="support@localhost", now=NOW)
    hit = {f"t{i}" for i, rx in enumerate(REGEXES) if re.search(rx, text, re.IGNORECASE)}
    assert set(decision.tags) == hit
