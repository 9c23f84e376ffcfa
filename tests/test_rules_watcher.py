"""Hot reload: an edit under a running daemon takes effect at the next poll; a broken edit is
refused with its errors (once), and the last good rules keep routing."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate import rules_loader
from mailgate.domain.routing import evaluate
from mailgate.mail.model import ParsedMail
from mailgate.rules_loader import RulesWatcher, load_rules

TEAM = """\
triage = "triage@localhost"
[[agents]]
address = "triage@localhost"
[[agents]]
address = "net@localhost"
[[agents]]
address = "desk@localhost"
[[groups]]
name = "Network"
members = ["net@localhost"]
[[groups]]
name = "Servers"
members = ["desk@localhost"]
"""

RULE = '[[rules]]\nname = "vpn"\nwhen.subject.words = ["vpn"]\nthen.group = "{group}"\n'
VPN = ParsedMail(subject="VPN is down", from_addr="u@example.org")
NOW = datetime(2024, 5, 14, 10, 0, tzinfo=UTC)


def group_for(rules: object) -> str | None:
    return evaluate(rules, VPN, desk_address="support@localhost", now=NOW).group


def setup(tmp_path: Path) -> tuple[Path, Path]:
    rules, templates = tmp_path / "rules", tmp_path / "templates"
    rules.mkdir()
    templates.mkdir()
    (rules / "team.toml").write_text(TEAM)
    (rules / "routing.toml").write_text(RULE.format(group="Network"))
    return rules, templates


def test_edit_is_picked_up_and_broken_edit_keeps_last_good_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules_dir, templates = setup(tmp_path)
    watcher = RulesWatcher(rules_dir, templates, current=load_rules(rules_dir, templates))
    assert watcher.poll().status == "unchanged"
    assert group_for(watcher.current) == "Network"

    # Same size and the same mtime tick (forced here; coarse timestamps do it by themselves):
    # the stat calls see nothing, the periodic content hash sees the edit within FULL_CHECK_SECONDS.
    path = rules_dir / "routing.toml"
    before = path.stat()
    path.write_text(RULE.format(group="Servers"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    clock = [1000.0]
    monkeypatch.setattr(rules_loader.time, "monotonic", lambda: clock[0])
    watcher._hashed_at = clock[0]
    assert watcher.poll().status == "unchanged"
    clock[0] += rules_loader.FULL_CHECK_SECONDS
    result = watcher.poll()
    assert result.status == "reloaded" and result.errors == ()
    assert group_for(result.rules) == "Servers"

    (rules_dir / "routing.toml").write_text(RULE.format(group="Netwrk"))
    result = watcher.poll()
    assert result.status == "rejected"
    assert [(Path(e.file).name, e.line, e.reason) for e in result.errors] == [
        ("routing.toml", 4, "unknown group 'Netwrk'")
    ]
    assert result.rules is watcher.current
    assert group_for(watcher.current) == "Servers"  # the last good rules still route

    # The same broken content is not reported again on every poll.
    assert watcher.poll().status == "unchanged"
    assert watcher.last_errors == result.errors

    (rules_dir / "routing.toml").write_text(RULE.format(group="Network"))
    result = watcher.poll()
    assert result.status == "reloaded" and group_for(result.rules) == "Network"
    assert watcher.last_errors == ()


def test_team_change_and_template_removal_are_noticed(tmp_path: Path) -> None:
    rules_dir, templates = setup(tmp_path)
    (templates / "kb_vpn.txt").write_text("Try turning it off and on.\n")
    (rules_dir / "routing.toml").write_text(RULE.format(group="Network") + 'then.auto_reply = "kb_vpn"\n')
    watcher = RulesWatcher(rules_dir, templates)
    first = watcher.poll()
    assert first.status == "reloaded" and first.rules is not None

    (rules_dir / "team.toml").write_text(
        TEAM.replace('address = "net@localhost"', 'address = "net@localhost"\naway = true')
    )
    result = watcher.poll()
    assert result.status == "reloaded" and result.rules is not None
    assert result.rules.version != first.rules.version
    assert evaluate(result.rules, VPN, desk_address="s@l", now=NOW).assignee == "triage@localhost"

    (templates / "kb_vpn.txt").unlink()
    result = watcher.poll()
    assert result.status == "rejected"
    assert "unknown template 'kb_vpn'" in result.errors[0].reason


def test_watcher_without_good_rules_reports_and_holds_none(tmp_path: Path) -> None:
    rules_dir, templates = setup(tmp_path)
    (rules_dir / "team.toml").write_text("triage = 1\n")
    watcher = RulesWatcher(rules_dir, templates)
    result = watcher.poll()
    assert result.status == "rejected" and result.rules is None
    assert any(e.reason == "at least one [[agents]] table is needed" for e in result.errors)


def test_a_file_caught_half_written_is_not_taken_for_the_new_rules(tmp_path: Path) -> None:
    """An editor (or `cat > routing.toml`) truncates, then writes. A poll that lands in between
    sees an empty file; taking that as "no rules" would route everything to triage, and, if the
    finished text is broken, would leave "no rules" as the last good ones."""
    rules_dir, templates = setup(tmp_path)
    watcher = RulesWatcher(rules_dir, templates, current=load_rules(rules_dir, templates))
    (rules_dir / "routing.toml").write_text("")
    assert watcher.poll().status == "unchanged"
    assert group_for(watcher.current) == "Network"
    (rules_dir / "routing.toml").write_text(RULE.format(group="Netwrk"))
    assert watcher.poll().status == "rejected"
    assert group_for(watcher.current) == "Network"


def test_sla_rules_caught_half_written_keep_the_last_good_ones(tmp_path: Path) -> None:
    from mailgate.pipeline.sla_apply import SlaRulesSource

    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    shipped = Path(__file__).resolve().parent.parent / "rules" / "sla.toml"
    (rules_dir / "sla.toml").write_text(shipped.read_text())
    source = SlaRulesSource(rules_dir)
    good = source.current()
    assert good is not None and good.policies
    (rules_dir / "sla.toml").write_text("")
    assert source.current() is good
    (rules_dir / "sla.toml").write_text(
        shipped.read_text() + '\n[[policies]]\nname = "x"\nfirst_response = "soon"\n'
    )
    assert source.current() is good
    assert source.take_refused()
