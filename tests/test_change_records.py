"""What an agent's change tells whom, now that changes travel as typed records (issue 24): the
requester and watchers read the status change and the reply, never who it was assigned to nor
the desk's fields; the new assignee reads every change; the audit trail keeps the event kinds
it always stored. And docs/flow.md names the handler modules as the registry runs them.
"""

from __future__ import annotations

import re
from pathlib import Path

from conftest import RunningDaemon, Sink, body_of, make_mail, reply
from sqlalchemy import select
from support.small_desk import CUSTOMER, DESK, TECH, TRIAGE, WATCHER

from mailgate.pipeline.handlers import registry


def test_requester_reads_the_status_change_and_the_assignee_reads_every_change(
    small_desk: RunningDaemon, sink: Sink
) -> None:
    small_desk.send(
        make_mail("Printer on fire", "It smokes.\n", sender=CUSTOMER, to=DESK, cc=WATCHER),
        sender=CUSTOMER,
        rcpt=DESK,
    )
    small_desk.settle()
    [triage_mail] = sink.wait_to(TRIAGE, 1)
    answer = reply(
        triage_mail, TRIAGE, "#assign tech1\n#set plan=gold\n#tag vip\n#resolve\n\nThe fire is out."
    )
    small_desk.send(answer, sender=TRIAGE, rcpt=str(triage_mail["Reply-To"].addresses[0].addr_spec))
    small_desk.settle()

    ticket = small_desk.tickets()[0]
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

    with small_desk.db.session() as s:
        kinds = list(s.execute(select(Event.kind).order_by(Event.id)).scalars())
    assert kinds[:2] == ["created", "routed"]
    assert kinds[2:] == ["comment", "assign", "fields", "tags", "status", "first-response"]


def test_flow_md_names_the_handler_modules_in_registry_order(small_desk: RunningDaemon) -> None:
    flow = (Path(__file__).resolve().parents[1] / "docs" / "flow.md").read_text()
    drawn = re.search(r"handler: (.+)$", flow, re.M)
    assert drawn is not None
    names = [name.strip() for name in drawn.group(1).split("|")]
    modules = [
        type(h.inner).__module__.rsplit(".", 1)[1] for h in registry(small_desk.daemon.runner.services)
    ]
    assert names == modules
    for name in names:
        assert (
            Path(__file__).resolve().parents[1] / "mailgate" / "pipeline" / "handlers" / f"{name}.py"
        ).is_file()
