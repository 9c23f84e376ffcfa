"""What an agent's change tells whom, now that changes travel as typed records (issue 24): the
requester and watchers read the status change and the reply, never who it was assigned to nor
the desk's fields; the new assignee reads every change; the audit trail keeps the event kinds
it always stored. And docs/flow.md names the handler modules as the registry runs them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply, scenario_config
from sqlalchemy import select

from mailgate.pipeline.handlers import registry

DESK = "support@desk.example"
CUSTOMER = "carla@client.example"
WATCHER = "wes@client.example"
TRIAGE = "triage@desk.example"
TECH = "tech1@desk.example"

TEAM = f"""
triage = "{TRIAGE}"
[[agents]]
address = "{TRIAGE}"
name = "Tara"
[[agents]]
address = "{TECH}"
name = "Theo"
handle = "tech1"
"""


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    cfg = scenario_config(
        tmp_path / "desk", relay_port=sink.port, desks=[(DESK, "SUP", "default")], team=TEAM, routing=""
    )
    d = RunningDaemon(cfg)
    yield d
    d.stop()


def test_requester_reads_the_status_change_and_the_assignee_reads_every_change(
    desk: RunningDaemon, sink: Sink
) -> None:
    desk.send(
        make_mail("Printer on fire", "It smokes.\n", sender=CUSTOMER, to=DESK, cc=WATCHER),
        sender=CUSTOMER,
        rcpt=DESK,
    )
    desk.settle()
    [triage_mail] = sink.wait_to(TRIAGE, 1)
    answer = reply(
        triage_mail, TRIAGE, "#assign tech1\n#set plan=gold\n#tag vip\n#resolve\n\nThe fire is out."
    )
    desk.send(answer, sender=TRIAGE, rcpt=str(triage_mail["Reply-To"].addresses[0].addr_spec))
    desk.settle()

    ticket = desk.tickets()[0]
    assert (ticket.assignee, ticket.fields["plan"], ticket.tags) == (TECH, "gold", ["vip"])
    for person in (CUSTOMER, WATCHER):
        told = body_of(sink.wait_to(person, 2 if person == CUSTOMER else 1)[-1])
        assert "Tara commented:\nThe fire is out." in told
        assert re.search(r"^Tara changed the status to \w+\.$", told, re.M), told
        assert "assigned it to" not in told and "plan" not in told and "vip" not in told
    [assigned] = sink.wait_to(TECH, 1)
    lines = [line for line in body_of(assigned).splitlines() if line.startswith("Tara ")]
    assert "Tara assigned it to tech1@desk.example." in lines
    assert "Tara set plan to gold." in lines
    assert any(line.startswith("Tara changed the status to ") for line in lines)

    from mailgate.store.models import Event

    with desk.db.session() as s:
        kinds = list(s.execute(select(Event.kind).order_by(Event.id)).scalars())
    assert kinds[:2] == ["created", "routed"]
    assert kinds[2:] == ["comment", "assign", "fields", "tags", "status", "first-response"]


def test_flow_md_names_the_handler_modules_in_registry_order(desk: RunningDaemon) -> None:
    flow = (Path(__file__).resolve().parents[1] / "docs" / "flow.md").read_text()
    drawn = re.search(r"handler: (.+)$", flow, re.M)
    assert drawn is not None
    names = [name.strip() for name in drawn.group(1).split("|")]
    modules = [type(h.inner).__module__.rsplit(".", 1)[1] for h in registry(desk.daemon.runner.services)]
    assert names == modules
    for name in names:
        assert (
            Path(__file__).resolve().parents[1] / "mailgate" / "pipeline" / "handlers" / f"{name}.py"
        ).is_file()
