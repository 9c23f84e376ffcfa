"""The one rules source (mailgate/ruleset): every rules file and template in one snapshot with one
fingerprint; an edit swaps the whole snapshot, a broken edit is refused whole (once), and the last
good snapshot keeps routing. Through the daemon: tests/test_rules_hot_reload.py."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailgate.domain.routing import evaluate
from mailgate.domain.rulesfile import RulesInvalid
from mailgate.mail.model import ParsedMail
from mailgate.ruleset import Refused, RulesSource, Snapshot

REPO = Path(__file__).resolve().parent.parent

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


def group_for(rules: Snapshot) -> str | None:
    return evaluate(rules, VPN, desk_address="support@localhost", now=NOW).group


def setup(tmp_path: Path) -> tuple[Path, Path]:
    rules, templates = tmp_path / "rules", tmp_path / "templates"
    rules.mkdir()
    templates.mkdir()
    (rules / "team.toml").write_text(TEAM)
    (rules / "routing.toml").write_text(RULE.format(group="Network"))
    (rules / "sla.toml").write_text((REPO / "rules" / "sla.toml").read_text())
    return rules, templates


def test_an_edit_swaps_the_snapshot_and_a_broken_one_is_refused_once(tmp_path: Path) -> None:
    rules_dir, templates = setup(tmp_path)
    source = RulesSource(rules_dir, templates)
    first = source.current
    assert source.poll() is None and source.current is first
    assert group_for(first) == "Network"

    (rules_dir / "routing.toml").write_text(RULE.format(group="Servers"))
    assert source.poll() is None
    assert group_for(source.current) == "Servers"
    assert source.current.version != first.version

    (rules_dir / "routing.toml").write_text(RULE.format(group="Netwrk"))
    refused = source.poll()
    assert refused is not None
    assert [(Path(e.file).name, e.line, e.reason) for e in refused.errors] == [
        ("routing.toml", 4, "unknown group 'Netwrk'")
    ]
    assert group_for(source.current) == "Servers"  # the last good rules still route
    assert source.refused == refused
    # The same broken files are not reported again on every poll.
    assert source.poll() is None

    (rules_dir / "routing.toml").write_text(RULE.format(group="Network"))
    assert source.poll() is None
    assert group_for(source.current) == "Network" and source.refused is None


def test_a_broken_file_holds_back_the_good_edit_of_another(tmp_path: Path) -> None:
    """The unit of acceptance is the snapshot: a good routing edit saved with a broken sla.toml
    does not half-apply; both wait until sla.toml is fixed."""
    rules_dir, templates = setup(tmp_path)
    source = RulesSource(rules_dir, templates)
    good_sla = source.current.sla
    assert good_sla is not None and good_sla.policies
    sla_text = (rules_dir / "sla.toml").read_text()

    (rules_dir / "routing.toml").write_text(RULE.format(group="Servers"))
    (rules_dir / "sla.toml").write_text(sla_text + '\n[[policies]]\nname = "x"\nfirst_response = "soon"\n')
    refused = source.poll()
    assert refused is not None and {Path(e.file).name for e in refused.errors} == {"sla.toml"}
    assert group_for(source.current) == "Network" and source.current.sla is good_sla

    (rules_dir / "sla.toml").write_text(sla_text)
    assert source.poll() is None
    assert group_for(source.current) == "Servers"


def test_workflow_and_template_edits_are_part_of_the_snapshot(tmp_path: Path) -> None:
    rules_dir, templates = setup(tmp_path)
    (templates / "kb_vpn.txt").write_text("Try turning it off and on.\n")
    (rules_dir / "routing.toml").write_text(RULE.format(group="Network") + 'then.auto_reply = "kb_vpn"\n')
    (rules_dir / "workflow.toml").write_text((REPO / "rules" / "workflow.toml").read_text())
    source = RulesSource(rules_dir, templates)
    assert source.current.templates.find("SUP", "kb_vpn.txt") is not None

    # A template removed that a rule still names: refused, with the rule's line.
    (templates / "kb_vpn.txt").unlink()
    refused = wait_for_refusal(source)
    assert any("unknown template 'kb_vpn'" in e.reason for e in refused.errors)
    assert source.current.templates.find("SUP", "kb_vpn.txt") is not None

    # A template that does not compile: refused with its file and line.
    (templates / "kb_vpn.txt").write_text("Line one.\n{{ ticket.key }\nLine three.\n")
    refused = wait_for_refusal(source)
    assert [(Path(e.file).name, e.line) for e in refused.errors] == [("kb_vpn.txt", 2)]
    assert "template syntax" in refused.errors[0].reason

    # A workflow naming a status that does not exist: refused with workflow.toml's line.
    (templates / "kb_vpn.txt").write_text("Fixed.\n")
    wf = rules_dir / "workflow.toml"
    wf.write_text(wf.read_text().replace('initial = "open"', 'initial = "opne"', 1))
    refused = source.poll()
    assert refused is not None and [Path(e.file).name for e in refused.errors] == ["workflow.toml"]
    assert "opne" in str(refused.errors[0])


def wait_for_refusal(source: RulesSource, timeout: float = 5.0) -> Refused:
    """Templates are looked at at most once a second: poll until the refusal comes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        refused = source.poll()
        if refused is not None:
            return refused
        time.sleep(0.05)
    raise AssertionError("the edit was not refused")


def test_start_on_invalid_rules_is_an_error(tmp_path: Path) -> None:
    rules_dir, templates = setup(tmp_path)
    (rules_dir / "team.toml").write_text("triage = 1\n")
    with pytest.raises(RulesInvalid) as info:
        RulesSource(rules_dir, templates)
    assert any(e.reason == "at least one [[agents]] table is needed" for e in info.value.errors)


def test_a_file_caught_half_written_is_not_taken_for_the_new_rules(tmp_path: Path) -> None:
    """An editor (or `cat > routing.toml`) truncates, then writes. A poll that lands in between
    sees an empty file; taking that as "no rules" would route everything to triage, and, if the
    finished text is broken, would leave "no rules" as the last good ones."""
    rules_dir, templates = setup(tmp_path)
    source = RulesSource(rules_dir, templates)
    (rules_dir / "routing.toml").write_text("")
    assert source.poll() is None
    assert group_for(source.current) == "Network"
    (rules_dir / "routing.toml").write_text(RULE.format(group="Netwrk"))
    assert source.poll() is not None
    assert group_for(source.current) == "Network"
    (rules_dir / "sla.toml").write_text("")
    assert source.poll() is None and source.current.sla is not None


def test_an_edit_that_keeps_size_and_mtime_is_still_seen(tmp_path: Path) -> None:
    """Two saves within one tick of the file system's clock leave the stat as it was; the source
    reads recently modified files once more a moment later (git's "racily clean" check)."""
    rules_dir, templates = setup(tmp_path)
    source = RulesSource(rules_dir, templates)
    path = rules_dir / "routing.toml"
    before = path.stat()
    path.write_text(RULE.format(group="Servers"))  # same size as "Network"
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    deadline = time.monotonic() + 10
    while group_for(source.current) != "Servers" and time.monotonic() < deadline:
        source.poll()
        time.sleep(0.05)
    assert group_for(source.current) == "Servers"
