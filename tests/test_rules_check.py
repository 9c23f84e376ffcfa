"""Every kind of invalid rules file gets an error naming file, line, reason and what is valid.

Also `mailgate rules check` (exit 0 / 65, one `FILE:LINE: reason (hint)` per error) and
`mailgate rules test` (a dry run that writes nothing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mailgate.cli import main
from mailgate.domain.rulesfile import PositionIndex, RulesError, RulesInvalid
from mailgate.ruleset import load as load_rules

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "routing"

TEAM = """\
triage = "angel@localhost"

[[agents]]
address = "angel@localhost"

[[agents]]
address = "it-lead@localhost"

[[agents]]
address = "it-tech@localhost"

[[groups]]
name = "IT"
members = ["it-lead@localhost", "it-tech@localhost"]
lead = "it-lead@localhost"
"""


def errors_of(tmp_path: Path, routing: str = "", team: str = TEAM) -> list[RulesError]:
    rules, templates = tmp_path / "rules", tmp_path / "templates"
    rules.mkdir(exist_ok=True)
    templates.mkdir(exist_ok=True)
    (templates / "kb_password_reset.txt").write_text("Reset it here.\n")
    (rules / "team.toml").write_text(team)
    (rules / "routing.toml").write_text(routing)
    with pytest.raises(RulesInvalid) as info:
        load_rules(rules, templates)
    return list(info.value.errors)


def where(errors: list[RulesError]) -> list[tuple[str, int, str, str]]:
    return [(Path(e.file).name, e.line, e.reason, e.hint) for e in errors]


def test_unknown_group_names_the_line_and_the_closest_group(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
[[rules]]
name = "printers"
when.subject.words = ["printer"]
then = { group = "It" }
""",
    )
    assert where(errors) == [("routing.toml", 4, "unknown group 'It'", "did you mean 'IT'? valid: IT")]
    assert str(errors[0]).endswith("routing.toml:4: unknown group 'It' (did you mean 'IT'? valid: IT)")


def test_unknown_agent_bad_regex_and_unknown_template_all_reported_at_once(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
[[rules]]
name = "one"
when.subject.regex = 'order (\\d+'
[rules.then]
assignee = "it-tech2@localhost"
auto_reply = "kb_pasword_reset"
""",
    )
    found = where(errors)
    # the hint lists every template name, the shipped ones included: only its start is pinned
    assert found[2][3].startswith("did you mean 'kb_password_reset'? valid: ")
    found[2] = (*found[2][:3], "did you mean 'kb_password_reset'? valid: kb_password_reset")
    assert found == [
        (
            "routing.toml",
            3,
            "bad regex 'order (\\d+': missing ), unterminated subpattern at position 6",
            "Python re syntax",
        ),
        (
            "routing.toml",
            5,
            "unknown agent 'it-tech2@localhost'",
            "did you mean 'it-tech@localhost'? valid: angel@localhost, it-lead@localhost, it-tech@localhost",
        ),
        (
            "routing.toml",
            6,
            "unknown template 'kb_pasword_reset' (no templates/kb_pasword_reset.txt)",
            "did you mean 'kb_password_reset'? valid: kb_password_reset",
        ),
    ]


def test_unknown_condition_action_and_operator_keys_suggest_the_valid_one(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
[[rules]]
name = "a"

[rules.when]
subjct = { contains = "vpn" }
body = { contians = "vpn" }

[rules.then]
groupp = "IT"
""",
    )
    got = where(errors)
    assert [(f, line, reason) for f, line, reason, _ in got] == [
        ("routing.toml", 5, "unknown condition 'subjct'"),
        ("routing.toml", 6, "unknown match operator 'contians' for body"),
        ("routing.toml", 9, "unknown action 'groupp'"),
    ]
    assert got[0][3].startswith("did you mean 'subject'? valid: ")
    assert got[1][3] == "did you mean 'contains'? valid: contains, ends, equals, regex, starts, words"
    assert got[2][3].startswith("did you mean 'group'?")


def test_duplicate_rule_name_points_at_the_second_and_names_the_first(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
[[rules]]
name = "vpn"
then.group = "IT"

[[rules]]
name = "vpn"
then.group = "IT"
""",
    )
    assert where(errors) == [("routing.toml", 6, "duplicate rule name 'vpn'", "first defined on line 2")]


def test_bad_time_weekday_and_time_zone(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
timezone = "Europe/Lndon"

[[rules]]
name = "night"
when = { time = "25:00-06:00" }

[[rules]]
name = "weekend"
when.weekday = ["sat", "sunday", "funday"]
""",
    )
    assert [(line, reason) for _, line, reason, _ in where(errors)] == [
        (1, "unknown time zone 'Europe/Lndon'"),
        (5, "bad time range '25:00-06:00'"),
        (9, "unknown weekday 'funday'"),
    ]
    assert errors[1].hint.startswith("HH:MM-HH:MM")


def test_error_inside_a_multi_line_array_lands_on_the_items_line(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
[[rules]]
name = "keys"
when.text.words = [
  "printer",
  "toner",
]
[rules.then]
watchers = [
  "it-lead@localhost",
  "not an address",
]
""",
    )
    assert where(errors) == [
        ("routing.toml", 10, "watcher 'not an address' is neither an agent nor a mail address", "")
    ]


def test_wrong_value_types(tmp_path: Path) -> None:
    errors = errors_of(
        tmp_path,
        """\
[[rules]]
name = "t"
continue = "yes"
when.has_attachment = 1
then = { tags = "two words", fields = { Plan = "x", seats = [1, 2] } }
""",
    )
    assert [(line, reason) for _, line, reason, _ in where(errors)] == [
        (4, "has_attachment must be true or false, got integer"),
        (5, "tag 'two words' must be one word (letters, digits, - _ . : /)"),
        (5, "field name 'Plan' must be lowercase letters, digits and _"),
        (5, "field 'seats' must be a string, number or boolean, got array"),
        (3, "continue must be true or false, got string"),
    ]


def test_toml_syntax_error_gives_tomllibs_line(tmp_path: Path) -> None:
    errors = errors_of(tmp_path, '[[rules]]\nname = "x"\nwhen.subject.words = ["a", "b"\nthen.group = "IT"\n')
    assert len(errors) == 1
    assert errors[0].file.endswith("routing.toml") and errors[0].line == 4
    assert errors[0].reason.startswith("TOML syntax: ")


def test_team_errors(tmp_path: Path) -> None:
    team = """\
triage = "boss@localhost"

[[agents]]
address = "a@localhost"

[[agents]]
address = "A@localhost"

[[agents]]
address = "b@localhost"

[[groups]]
name = "Ops"
members = [
  "a@localhost",
  "c@localhost",
]
lead = "b@localhost"
assignment = "round-robbin"
"""
    got = where(errors_of(tmp_path, "", team=team))
    assert [(f, line, reason) for f, line, reason, _ in got] == [
        ("team.toml", 7, "agent a@localhost is listed twice"),
        ("team.toml", 16, "member 'c@localhost' is not an agent"),
        ("team.toml", 18, "lead b@localhost is not a member of group 'Ops'"),
        ("team.toml", 19, "unknown assignment 'round-robbin'"),
        ("team.toml", 1, "triage 'boss@localhost' is not an agent"),
    ]
    assert got[3][3] == "did you mean 'round-robin'? valid: lead, least-open, round-robin"


def test_errors_in_both_files_are_reported_together(tmp_path: Path) -> None:
    team = TEAM.replace('triage = "angel@localhost"', 'triage = "nobody@localhost"')
    routing = '[[rules]]\nname = "x"\nwhen.subject.regex = "("\nthen.group = "Nope"\n'
    got = where(errors_of(tmp_path, routing, team=team))
    # The team's mistake does not hide routing's: routing is checked against what is valid.
    assert [(f, line, reason) for f, line, reason, _ in got] == [
        ("team.toml", 1, "triage 'nobody@localhost' is not an agent"),
        ("routing.toml", 3, "bad regex '(': missing ), unterminated subpattern at position 0"),
        ("routing.toml", 4, "unknown group 'Nope'"),
    ]


def test_position_index_handles_quoted_keys_nested_arrays_and_strings() -> None:
    text = """\
# a comment with [brackets] and key = "value"
title = "x = [ not a table"
multi = '''
[[rules]]
name = "inside a string"
'''
[[rules]]
name = "first"
[[rules.when.any]]
subject.words = ["a"]
[[rules.when.any]]
"body" = { contains = "b" }
[[rules]]
name = "second"
[rules.then]
group = "IT"
"""
    index = PositionIndex(text)
    assert index.line_of(("rules", 0, "name")) == 8
    assert index.line_of(("rules", 0, "when", "any", 1, "body", "contains")) == 12
    assert index.line_of(("rules", 1, "name")) == 14
    assert index.line_of(("rules", 1, "then", "group")) == 16
    assert index.line_of(("rules", 1)) == 13


# --- the commands --------------------------------------------------------------------------------


def test_rules_check_command_exit_codes_and_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(
            ["rules", "check", "--rules-dir", str(ROOT / "rules"), "--templates-dir", str(ROOT / "templates")]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("ok: ")

    errors_of(tmp_path, '[[rules]]\nname = "x"\nthen.group = "Nope"\n')  # writes the broken files
    rules_dir = tmp_path / "rules"
    code = main(
        ["rules", "check", "--rules-dir", str(rules_dir), "--templates-dir", str(tmp_path / "templates")]
    )
    out = capsys.readouterr()
    assert code == 65
    assert out.out.splitlines() == [f"{rules_dir / 'routing.toml'}:3: unknown group 'Nope' (valid: IT)"]
    assert "1 error(s)" in out.err


def test_rules_test_command_is_a_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'rules_dir = "{ROOT / "rules"}"\ntemplates_dir = "{ROOT / "templates"}"\n')
    env_before = os.environ.pop("MAILGATE_SECRET", None)
    try:
        code = main(
            ["--config", str(config), "rules", "test", str(FIXTURES / "care_it_password.eml"), "--json"]
        )
    finally:
        if env_before is not None:
            os.environ["MAILGATE_SECRET"] = env_before
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["group"] == "IT" and out["assignee"] == "it-lead@localhost"
    assert out["auto_reply"] == "kb_password_reset"
    assert out["notify"] == ["it-lead@localhost"]
    assert out["trace"][-3] == "stopped at rule 'care-it-password' (first match wins)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]  # no state/, no secret.key

    code = main(["--config", str(config), "rules", "test", str(FIXTURES / "care_it_vpn.eml")])
    text = capsys.readouterr().out
    assert code == 0
    assert "  rule 'care-it': hit (text has word 'vpn')" in text
    assert "  group      IT" in text
    assert "round-robin" in text  # says the daemon may choose another member


def test_rules_test_missing_message_is_noinput(tmp_path: Path) -> None:
    assert main(["rules", "test", str(tmp_path / "missing.eml"), "--rules-dir", str(ROOT / "rules")]) == 66
