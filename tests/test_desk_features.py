"""Service desk features of issue 23, by mail through the real daemon: canned replies
(`#canned <name>`, a list when the name is unknown, checked by `rules check`) and time tracking
(`#time 1h15m`, summed per agent by `tickets show`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply
from sqlalchemy import select
from support.small_desk import CUSTOMER, DESK, TECH, TRIAGE, WATCHER, desk_files, start_desk

from mailgate.domain.rulesfile import RulesInvalid
from mailgate.ruleset import load


def open_ticket(desk: RunningDaemon, sink: Sink) -> EmailMessage:
    """Carla writes (Wes on Cc); returns triage's notice of the new ticket."""
    desk.send(
        make_mail("Printer jammed", "Floor 2 printer eats paper.\n", sender=CUSTOMER, to=DESK, cc=WATCHER),
        sender=CUSTOMER,
        rcpt=DESK,
    )
    desk.settle()
    [notice] = sink.wait_to(TRIAGE, 1)
    return notice


def agent_says(desk: RunningDaemon, notice: EmailMessage, agent: str, text: str) -> None:
    desk.send(reply(notice, agent, text), sender=agent, rcpt=str(notice["Reply-To"].addresses[0].addr_spec))
    desk.settle()


def events(desk: RunningDaemon, kind: str) -> list[tuple[str, dict[str, object]]]:
    from mailgate.store.models import Event

    with desk.db.session() as s:
        rows = s.execute(select(Event.actor, Event.data).where(Event.kind == kind).order_by(Event.id))
        return [(actor, data) for actor, data in rows]


# -- canned replies ----------------------------------------------------------------------------


def test_canned_reply_goes_before_the_agents_words_to_requester_and_watcher(
    small_desk: RunningDaemon, sink: Sink
) -> None:
    notice = open_ticket(small_desk, sink)
    agent_says(small_desk, notice, TRIAGE, "#canned printer_jam\n\nI'll come by at three if it jams again.")

    for person, n in ((CUSTOMER, 2), (WATCHER, 1)):
        told = body_of(sink.wait_to(person, n)[-1])
        assert "pull the green\nlever down" in told, told
        assert "Tara, Sup desk (SUP-1)" in told  # rendered for this ticket and this agent
        canned_at = told.index("pull the green")
        assert told.index("I'll come by at three") > canned_at  # the agent's words after it
    assert "#canned" not in body_of(sink.to(CUSTOMER)[-1])
    assert events(small_desk, "canned") == [(TRIAGE, {"name": "printer_jam"})]
    assert small_desk.tickets()[0].first_response_at is not None  # it was the first public reply


def test_a_kb_answer_is_a_canned_reply_too(small_desk: RunningDaemon, sink: Sink) -> None:
    notice = open_ticket(small_desk, sink)
    agent_says(small_desk, notice, TRIAGE, "#canned kb_guest_wifi")
    told = body_of(sink.wait_to(CUSTOMER, 2)[-1])
    assert 'The guest Wi-Fi network is "Guest"' in told and "(SUP-1)" in told


@pytest.mark.parametrize("line", ["#canned", "#canned printer_fire"])
def test_canned_alone_or_unknown_lists_the_canned_replies_and_sends_nothing(
    small_desk: RunningDaemon, sink: Sink, line: str
) -> None:
    notice = open_ticket(small_desk, sink)
    agent_says(small_desk, notice, TRIAGE, f"{line}\n\nHere is how.")
    error = body_of(sink.wait_to(TRIAGE, 2)[-1])
    assert "NOT sent to the requester" in error
    assert "valid: kb_gdpr_request, kb_guest_wifi, kb_password_reset, printer_jam" in error
    assert len(sink.to(CUSTOMER)) == 1 and sink.to(WATCHER) == []  # the acknowledgement only
    assert events(small_desk, "canned") == []


def test_rules_check_names_a_broken_canned_reply_by_file_and_line(tmp_path: Path) -> None:
    from conftest import REPO, write_config

    from mailgate.checks import check_all

    root = tmp_path / "desk"
    cfg = write_config(root)
    broken = root / "templates" / "canned" / "broken.txt"
    broken.write_text("Hello,\n\n{% if ticket.key %}no end\n")
    with pytest.raises(RulesInvalid) as caught:
        load(root / "rules", root / "templates")
    assert any(e.file.endswith("canned/broken.txt") and e.line == 3 for e in caught.value.errors)

    broken.write_text("Hello {{ requester_name }},\n\nYour order {{ order_number }} shipped.\n")
    report = check_all(cfg)
    [problem] = [p for p in report.problems if p.file.endswith("broken.txt")]
    assert (problem.line, "unknown variable 'order_number'" in problem.reason) == (3, True)
    assert "printer_jam" in load(REPO / "rules", REPO / "templates").templates.canned_names()


# -- time tracking -----------------------------------------------------------------------------


def test_time_is_recorded_per_agent_and_summed_by_tickets_show(
    small_desk: RunningDaemon, sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    notice = open_ticket(small_desk, sink)
    agent_says(small_desk, notice, TRIAGE, "#assign tech1\n#time 1h15m\n#internal\n\nSent Theo over.")
    [assigned] = sink.wait_to(TECH, 1)
    assert "Tara logged 1h15m." in body_of(assigned)
    agent_says(small_desk, assigned, TECH, "#time 30m\n#internal\n\nCleared it.")
    agent_says(small_desk, assigned, TECH, "#time 20\n\nOops.")  # not a duration: nothing recorded
    refused = body_of(sink.wait_to(TECH, 2)[-1])
    assert "not a duration: '20'" in refused and "#time 30m, #time 1h15m" in refused
    assert len(sink.to(CUSTOMER)) == 1  # time is the desk's business: the customer hears nothing

    assert [d["minutes"] for _, d in events(small_desk, "time")] == [75, 30]
    from mailgate.cli import main

    assert main(["--config", str(small_desk.config_path), "tickets", "show", "SUP-1"]) == 0
    out = capsys.readouterr().out
    assert f"time spent  1h45m ({TRIAGE} 1h15m, {TECH} 30m)" in out
    assert f"{TECH}: spent 30m on it" in out
    assert main(["--config", str(small_desk.config_path), "tickets", "show", "SUP-1", "--json"]) == 0
    spent = json.loads(capsys.readouterr().out)["time_spent"]
    assert spent == {"minutes": 105, "by_agent": {TRIAGE: 75, TECH: 30}}


# -- fields as data ------------------------------------------------------------------------------

FIELDS = """\
[severity]
values = ["low", "medium", "high", "critical"]
default = "medium"

[component]
label = "Component"
values = ["printer", "network", "laptop"]
required_before_resolve = true

[environment]
type = "text"
"""

ROUTING = """\
[[rules]]
name = "printers"
when.subject.words = ["printer"]
then = { fields = { component = "printer" } }
"""


@pytest.fixture
def fielded(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    root = tmp_path / "desk"
    cfg = desk_files(root, sink)
    (root / "rules" / "fields.toml").write_text(FIELDS)
    d = RunningDaemon(cfg)
    yield d
    d.stop()


def test_fields_have_defaults_allowed_values_and_block_resolving_while_required_ones_are_unset(
    fielded: RunningDaemon, sink: Sink
) -> None:
    notice = open_ticket(fielded, sink)  # "Printer jammed": no routing here, so no component
    assert fielded.tickets()[0].fields == {"severity": "medium"}  # the default

    agent_says(fielded, notice, TRIAGE, "#set severity=urgentish\n\nLooking.")
    error = body_of(sink.wait_to(TRIAGE, 2)[-1])
    assert "'urgentish' is not a severity" in error and "valid: low, medium, high, critical" in error
    assert len(sink.to(CUSTOMER)) == 1  # nothing applied, nothing sent

    agent_says(fielded, notice, TRIAGE, "#set severity=HIGH\n#set environment=Windows 11\n#resolve\n\nFixed.")
    error = body_of(sink.wait_to(TRIAGE, 3)[-1])
    assert "Component must be set before SUP-1 is resolved" in error
    assert "valid: #set component=printer|network|laptop" in error
    ticket = fielded.tickets()[0]
    assert (ticket.status, ticket.fields) == ("open", {"severity": "medium"})  # all or nothing

    agent_says(fielded, notice, TRIAGE, "#set severity=HIGH\n#set component=printer\n#resolve\n\nFixed.")
    sink.wait_to(CUSTOMER, 2)
    ticket = fielded.tickets()[0]
    assert ticket.fields == {"severity": "high", "component": "printer"}  # as the file writes it
    assert ticket.status == "resolved"


def test_routing_sets_fields_and_rules_check_names_bad_fields_by_file_and_line(tmp_path: Path) -> None:
    from conftest import write_config

    root = tmp_path / "desk"
    write_config(root)
    (root / "rules" / "fields.toml").write_text(FIELDS)
    (root / "rules" / "routing.toml").write_text(ROUTING)
    rules = load(root / "rules", root / "templates")
    assert rules.fields.defaults() == {"severity": "medium"}
    assert [d.name for d in rules.fields.required()] == ["component"]

    (root / "rules" / "routing.toml").write_text(ROUTING.replace('"printer" }', '"printers" }'))
    (root / "rules" / "fields.toml").write_text(
        FIELDS.replace('default = "medium"', 'default = "normal"').replace('type = "text"', 'type = "date"')
    )
    with pytest.raises(RulesInvalid) as caught:
        load(root / "rules", root / "templates")
    found = {(Path(e.file).name, e.line, e.reason) for e in caught.value.errors}
    assert ("fields.toml", 3, "default 'normal' is not one of the values") in found
    assert ("fields.toml", 11, "unknown field type 'date'") in found

    (root / "rules" / "fields.toml").write_text(FIELDS)  # valid again: routing is checked against it
    with pytest.raises(RulesInvalid) as caught:
        load(root / "rules", root / "templates")
    found = {(Path(e.file).name, e.line, e.reason) for e in caught.value.errors}
    assert (
        "routing.toml",
        1,
        "rule 'printers' sets component to 'printers', which rules/fields.toml does not allow",
    ) in found

    from mailgate.cli import main

    assert main(["--config", str(root / "config.toml"), "rules", "check"]) == 65


# -- parent incidents and broadcast ----------------------------------------------------------


def test_parent_broadcast_and_resolve_all_reach_each_childs_people_in_its_own_thread(
    tmp_path: Path, sink: Sink
) -> None:
    desk = start_desk(tmp_path / "desk", sink, extra="[security]\nmax_recipients_per_event = 1\n")
    try:
        people = ("ann@client.example", "bob@client.example", CUSTOMER)
        notices: list[EmailMessage] = []
        for n, who in enumerate(people, 1):
            desk.send(
                make_mail(
                    "VPN down", "Cannot connect.\n", sender=who, to=DESK, cc=WATCHER if n == 3 else None
                ),
                sender=who,
                rcpt=DESK,
            )
            desk.settle()
            notices.append(sink.wait_to(TRIAGE, n)[-1])
        ann, bob, carla = people
        # SUP-2 and SUP-3 are reports of the outage SUP-1; SUP-3 has Wes as a watcher too.
        agent_says(desk, notices[1], TRIAGE, "#parent SUP-1\n#internal\n\nSame outage.")
        agent_says(desk, notices[2], TRIAGE, "#parent sup-1\n#internal\n\nSame outage.")
        assert [t.fields.get("parent") for t in desk.tickets()] == [None, "SUP-1", "SUP-1"]

        agent_says(desk, notices[0], TRIAGE, "#broadcast\n\nThe VPN concentrator is being replaced.")
        for who, key in ((ann, "SUP-1"), (bob, "SUP-2"), (carla, "SUP-3")):
            got = sink.wait_to(who, 2)[-1]
            assert "The VPN concentrator is being replaced." in body_of(got)
            assert f"[{key}]" in str(got["Subject"])  # each in its own ticket's thread
        # The cap (1 outside the team) applies per child: Carla is mailed, Wes is past SUP-3's cap.
        assert len(sink.to(WATCHER)) == 0
        assert [d["not_mailed"] for _, d in events(desk, "fanout-limited")] == [[WATCHER]]
        assert [d["parent"] for _, d in events(desk, "broadcast")] == ["SUP-1", "SUP-1"]

        agent_says(desk, notices[2], TRIAGE, "#unparent\n#internal\n\nNot the same after all.")
        agent_says(desk, notices[0], TRIAGE, "#resolve\n\nReplaced; the VPN is back.")
        offer = body_of(sink.wait_to(TRIAGE, 4)[-1])
        assert "SUP-1 is resolved, but 1 ticket(s)" in offer and "SUP-2" in offer and "SUP-3" not in offer
        assert "#resolve all" in offer
        assert [t.status for t in desk.tickets()] == ["resolved", "open", "open"]

        agent_says(desk, notices[0], TRIAGE, "#resolve all")
        assert [t.status for t in desk.tickets()] == ["resolved", "resolved", "open"]
        resolved = sink.wait_to(bob, 3)[-1]
        assert "[SUP-2]" in str(resolved["Subject"]) and "Tara changed the status to" in body_of(resolved)
        assert len(sink.to(carla)) == 2  # unparented: neither resolved nor told
    finally:
        desk.stop()


def test_parent_commands_are_checked_like_the_others() -> None:
    from conftest import REPO

    from mailgate.domain.commands import TicketView, plan, split_commands
    from mailgate.domain.workflow import load_workflows

    flow = load_workflows(REPO / "rules" / "workflow.toml")["default"]
    team = load(REPO / "rules", REPO / "templates").team

    def check(text: str, status: str = "open", fields: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        cmds, _ = split_commands(text)
        return plan(
            cmds,
            ticket=TicketView("SUP-20", status, (), fields),
            workflow=flow,
            team=team,
            author="angel@localhost",
            ticket_exists=lambda key: key == "SUP-12",
        )

    assert check("#parent SUP-12")[0].parent == "SUP-12"
    assert [e.reason for e in check("#parent SUP-99")[1]] == ["no ticket SUP-99"]
    assert [e.reason for e in check("#set parent=SUP-12")[1]] == ["the parent is set with #parent"]
    assert [e.reason for e in check("#unparent")[1]] == ["SUP-20 has no parent"]
    assert check("#unparent", fields=("parent",))[0].unparent
    refused = check("#broadcast\n#internal")[1]
    assert [e.reason for e in refused] == ["a broadcast goes to requesters: it cannot be #internal"]
    p, errors = check("#resolve all", status="resolved")  # the parent is resolved: only the children
    assert errors == [] and p.status is None and p.resolve_children is not None
