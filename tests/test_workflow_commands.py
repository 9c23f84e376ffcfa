"""Workflow files and agent commands, as an admin and an agent meet them: every mistake named by
file and line (admin) or by reply line with what is valid (agent); commands all or nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO, write_config

from mailgate.domain.commands import (
    KNOWN,
    TicketView,
    command_addresses,
    plan,
    split_commands,
    stray_commands,
)
from mailgate.domain.rulesfile import RulesInvalid
from mailgate.domain.team import Team
from mailgate.domain.workflow import load_workflows, parse_workflows
from mailgate.ruleset import load as load_rules

FLOWS = load_workflows(REPO / "rules" / "workflow.toml")
TEAM: Team = load_rules(REPO / "rules", REPO / "templates").team


def check(commands: str, status: str = "open", flow: str = "jira"):  # type: ignore[no-untyped-def]
    cmds, rest = split_commands(commands)
    p, errors = plan(
        cmds,
        ticket=TicketView("SUP-20", status),
        workflow=FLOWS[flow],
        team=TEAM,
        author="it-lead@localhost",
        ticket_exists=lambda key: key in ("SUP-12", "SUP-20"),
    )
    return p, errors, rest


def test_commands_stop_at_the_first_line_that_is_not_one() -> None:
    cmds, rest = split_commands("\n#priority 2\n  #tag stalled blocked\nHello,\n#this is text now\n")
    assert [c.name for c in cmds] == ["priority", "tag"]
    assert rest == "Hello,\n#this is text now"
    assert split_commands("Just a reply.\n#status closed")[0] == []  # commands only at the top


def test_a_command_below_the_text_is_named_and_the_agents_text_is_not() -> None:
    """Commands under one greeting line run; lines of the command vocabulary typed at the start
    of a line further down are refused by line (the agent meant them); a hash that begins
    anything else is the agent's text: code, a list number, a hashtag, an indented quote."""
    flow = FLOWS["jira"]
    reply = (
        "Hi Carl,\n\n#resolve\n#waiting for customer\n\nTry this:\n#include <stdio.h>\n#1 priority\n"
        "#WeAreHiring\n#Priority 1\n    #status pending"
    )
    cmds, rest = split_commands(reply)
    assert [c.name for c in cmds] == ["resolve", "waiting"]
    assert rest.startswith("Hi Carl,\n\nTry this:")
    assert [(e.line_no, e.line) for e in stray_commands(reply, flow)] == [(10, "#Priority 1")]
    # Text first, then a command: the command is a stray, the text no greeting.
    assert [e.line_no for e in stray_commands("Please check the logs.\n\n#resolve", flow)] == [3]
    # The commands on the first lines are the commands, not strays; text alone has none.
    assert stray_commands("#pending\n#tag x\n\nHi Carl,\nthe #1 issue", flow) == []
    # A Japanese input method's full-width "＃" and ideographic space, HTML's no-break space.
    cmds, rest = split_commands("＃pending\n＃priority\u3000high\n\u00a0#tag\u00a0printer\n\nカルラ様")
    assert [(c.name, c.args) for c in cmds] == [("pending", ""), ("priority", "high"), ("tag", "printer")]
    assert rest == "カルラ様"


def test_addresses_as_clients_leave_them_in_a_command() -> None:
    """Outlook's "text<mailto:…>", an HTML reply's "[text](mailto:…)", a name-addr; a word that is
    no address stays, so the command still refuses it by name."""
    assert command_addresses("wes@client.example<mailto:wes@client.example>") == ["wes@client.example"]
    assert command_addresses("[Wes West](mailto:Wes@Client.example?subject=x)") == ["wes@client.example"]
    assert command_addresses('"West, Wes" <wes@client.example>, Carl <carl@acme.com>') == [
        "wes@client.example",
        "carl@acme.com",
    ]
    assert command_addresses("a@b.example c@d.example") == ["a@b.example", "c@d.example"]
    p, errors, _ = check("#cc add Wes West\n#requester Carl <carl@acme.com>\n#set plan=“gold”\n\nx")
    assert [e.reason for e in errors] == ["not an address: wes, west"]
    p, errors, _ = check("#requester Carl <carl@acme.com>\n#set plan=“gold”\n\nx")
    assert errors == [] and (p.requester, p.set_fields) == ("carl@acme.com", {"plan": "gold"})


def test_a_full_plan() -> None:
    p, errors, rest = check(
        "#type incident\n#priority 1\n#set plan = enterprise\n#assign me\n#tag stalled\n"
        "#cc add boss@acme.com\n#link SUP-12\n#investigate\n\nOn it."
    )
    assert errors == []
    assert (p.type, p.priority, p.set_fields, p.assignee) == (
        "incident",
        "critical",
        {"plan": "enterprise"},
        "it-lead@localhost",
    )
    assert (p.tags_add, p.cc_add, p.links, p.status.id) == (
        ["stalled"],
        ["boss@acme.com"],
        ["SUP-12"],
        "work_in_progress",
    )
    assert rest == "On it."


def test_every_bad_line_is_named_with_what_is_valid() -> None:
    p, errors, _ = check(
        "#priority 9\n#assign nobody-here\n#close\n#merge SUP-99\n#cc add not-an-address\n#frobnicate"
    )
    by_line = {e.line_no: e for e in errors}
    assert set(by_line) == {1, 2, 4, 5, 6}  # line 3, #close from Open, is valid: only the bad lines
    assert "critical, high, medium, low" in by_line[1].valid
    assert "it-tech1" in by_line[2].valid and "IT" in by_line[2].valid
    assert by_line[4].reason == "no ticket SUP-99"
    assert "unknown command #frobnicate" in by_line[6].reason and "#resolve" in by_line[6].valid
    # every command there is, not a hand-kept part of them (#unassign, #untag, #requester, #help … were missing)
    named = set(by_line[6].valid.replace(",", " ").split())
    assert {f"#{c}" for c in KNOWN} <= named, sorted({f"#{c}" for c in KNOWN} - named)
    # #close from Open is allowed in the Jira preset; from Pending it is too; from Completed only Closed/WIP
    _, errs, _ = check("#pending", status="completed")
    assert "cannot go from Completed to Pending" in errs[0].reason
    assert "Closed" in errs[0].valid and "Work in progress" in errs[0].valid


def test_status_words_are_the_presets_words() -> None:
    assert check("#defer", status="open", flow="caredesk")[0].status.id == "deferred"
    assert (
        check("#escalate to dev", status="waiting_for_support", flow="triage")[0].status.id
        == "work_in_progress"
    )
    assert (
        check("#acr", status="work_in_progress", flow="devrev")[0].status.id == "awaiting_customer_response"
    )
    assert check("#reopen", status="resolved", flow="caredesk")[0].status.id == "open"
    _, errors, _ = check("#status nowhere")
    assert "unknown status 'nowhere'" in errors[0].reason


def test_workflow_file_errors_name_file_and_line(tmp_path: Path) -> None:
    bad = """\
[workflows.broken]
initial = "nowhere"
reopen = "opne"

[[workflows.broken.statuses]]
id = "open"
category = "opened"

[[workflows.broken.statuses]]
id = "done"
category = "closed"
aliases = ["finished"]
template = "no_such_template"

[[workflows.broken.statuses]]
id = "finished"
category = "closed"

[[workflows.broken.transitions]]
from = "done"
to = ["finished", "limbo"]
"""
    try:
        parse_workflows(
            __import__("mailgate.domain.rulesfile", fromlist=["TomlFile"]).TomlFile.parse(bad, "wf.toml"),
            templates={"status_changed"},
        )
    except RulesInvalid as exc:
        errors = [str(e) for e in exc.errors]
    else:
        raise AssertionError("a broken workflow file was accepted")
    text = "\n".join(errors)
    assert "wf.toml:7: unknown category 'opened' (valid: open, waiting, closed)" in text
    assert "wf.toml:16: the word 'finished' already names status 'done'" in text
    assert "wf.toml:13: unknown template 'no_such_template'" in text
    assert "wf.toml:21: unknown status 'limbo'" in text
    assert "wf.toml:2: unknown status 'nowhere'" in text


def test_rules_check_covers_workflow_and_sla(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "desk")
    ok = subprocess.run(
        [sys.executable, "-m", "mailgate", "--config", str(cfg), "rules", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "workflows: default, jira, triage, devrev, caredesk" in ok.stdout
    wf = tmp_path / "desk" / "rules" / "workflow.toml"
    wf.write_text(wf.read_text().replace('initial = "queued"', 'initial = "qeued"'))
    bad = subprocess.run(
        [sys.executable, "-m", "mailgate", "--config", str(cfg), "rules", "check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 65
    assert (
        "workflow.toml:" in bad.stdout and "unknown status 'qeued'" in bad.stdout and "queued" in bad.stdout
    )
