"""A team's everyday mail (issue 19, items 3, 5, 6 and 13), by real mail through the real daemon.

- attachments travel both ways: the customer's to the agents (named with a way to fetch them when
  past `[limits] max_forward_attachments_bytes`), an agent's public one to the customer, an
  internal note's to agents only;
- a reply of commands only stores no public message (the quoted notification is never kept);
- `notify_new = "members"`: every member of the group gets the new request;
- an agent opens a ticket for a customer (`#requester`, a forwarded mail inline or attached): the
  customer is the requester and gets the acknowledgement, at once when the relay proves the agent,
  after the agent confirms by replying when only the From says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply, scenario_config

TEAM = """
triage = "lead@desk.example"
[[agents]]
address = "lead@desk.example"
name = "Lena Lead"
[[agents]]
address = "tech@desk.example"
name = "Tom Tech"
[[agents]]
address = "other@desk.example"
name = "Olga Other"
[[groups]]
name = "Helpdesk"
members = ["lead@desk.example", "tech@desk.example"]
lead = "lead@desk.example"
[[groups]]
name = "Backoffice"
members = ["other@desk.example"]
lead = "other@desk.example"
"""

ROUTING = """
[[rules]]
name = "backoffice"
when.subject = "invoice"
then = { group = "Backoffice" }

[[rules]]
name = "helpdesk"
when.to = "support@desk.example"
then = { group = "Helpdesk", watchers = ["tech@desk.example"] }
"""

DESK = "support@desk.example"
CUSTOMER = "customer@acme.example"
LEAD = "lead@desk.example"
TECH = "tech@desk.example"
OTHER = "other@desk.example"
GOOD_AR = "mx.desk.example; dkim=pass header.d=desk.example; spf=pass smtp.mailfrom=desk.example"
SECURITY = '[security]\ntrust_authentication_results = "relay"\ntrusted_authserv_ids = ["mx.desk.example"]\n'
BUDGET = 4096
SMALL = b"small log line\n" * 10
BIG = bytes(range(256)) * 40  # 10 KiB: past the budget


def start(root: Path, sink: Sink, team: str = TEAM, routing: str = ROUTING) -> RunningDaemon:
    cfg = scenario_config(
        root,
        relay_port=sink.port,
        desks=[(DESK, "SUP", "jira")],
        team=team,
        routing=routing,
        extra=f"{SECURITY}\n[limits]\nmax_forward_attachments_bytes = {BUDGET}\n",
    )
    return RunningDaemon(cfg)


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    d = start(tmp_path / "desk", sink)
    yield d
    d.stop()


@pytest.fixture
def members_desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    """The Helpdesk group says every member gets each new request; no rule adds watchers."""
    team = TEAM.replace(
        'lead = "lead@desk.example"\n', 'lead = "lead@desk.example"\nnotify_new = "members"\n'
    )
    d = start(tmp_path / "members", sink, team, ROUTING.replace(', watchers = ["tech@desk.example"]', ""))
    yield d
    d.stop()


def step(desk: RunningDaemon, raw: bytes, sender: str) -> None:
    desk.send(raw, sender=sender, rcpt=DESK if b"support+" not in raw else _to(raw))
    desk.settle()


def _to(raw: bytes) -> str:
    msg = message_from_bytes(raw, policy=policy.default)
    return msg["To"].addresses[0].addr_spec  # type: ignore[union-attr]


def with_files(raw: bytes, *files: tuple[str, bytes, str]) -> bytes:
    msg = message_from_bytes(raw, policy=policy.default)
    for name, data, ctype in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)  # type: ignore[attr-defined]
    return msg.as_bytes()


def files_of(msg: EmailMessage) -> dict[str, bytes]:
    return {str(p.get_filename()): p.get_payload(decode=True) for p in msg.iter_attachments()}  # type: ignore[misc]


def stored(desk: RunningDaemon, key: str) -> list:  # type: ignore[type-arg]
    from mailgate.store.repo import Repo

    with desk.db.session() as s:
        repo = Repo(s)
        t = repo.ticket_by_key(key)
        assert t is not None
        return repo.messages(t.id)  # type: ignore[arg-type]


def mailgate(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The installed console script in a new process, as an agent at a terminal runs it."""
    script = Path(sys.executable).with_name("mailgate")
    env = {**os.environ, "MAILGATE_SECRET": "test-secret"}
    return subprocess.run(
        [str(script), "--config", str(config), *args], capture_output=True, timeout=60, check=False, env=env
    )


# --- 3. attachments, both ways ---------------------------------------------------------------------


def test_attachments_travel_both_ways_within_the_budget(desk: RunningDaemon, sink: Sink) -> None:
    first = make_mail("VPN broken", "See the log and the dump.\n", sender=CUSTOMER, to=DESK)
    step(
        desk,
        with_files(
            first,
            ("vpn.log", SMALL, "text/plain"),
            ("../../etc/core dump.bin", BIG, "application/octet-stream"),
        ),
        CUSTOMER,
    )
    [ticket] = desk.tickets()
    # The agents (assignee, agent watcher) get the small file attached; the big one named, with
    # the command that fetches it
    for agent in (LEAD, TECH):
        [new] = sink.wait_to(agent, 1)
        assert files_of(new) == {"vpn.log": SMALL}
        text = body_of(new)
        assert "vpn.log" in text and "core dump.bin" in text and "etc/" not in text
        assert f"mailgate tickets attachment {ticket.key} 'core dump.bin'" in text
    [ack] = sink.wait_to(CUSTOMER, 1)
    assert files_of(ack) == {}
    # ... and the command gives the exact bytes, by the name the mail gave
    got = mailgate(desk.config_path, "tickets", "attachment", ticket.key, "core dump.bin")
    assert got.returncode == 0, got.stderr
    assert got.stdout == BIG
    missing = mailgate(desk.config_path, "tickets", "attachment", ticket.key, "passwd")
    assert missing.returncode == 1 and b"vpn.log" in missing.stderr

    # The agent's public reply with a script: the customer gets the script
    [new] = sink.to(LEAD)
    script = b"#!/bin/sh\nsudo systemctl restart vpn\n"
    step(
        desk,
        with_files(reply(new, LEAD, "Please run the attached script."), ("fix.sh", script, "text/x-sh")),
        LEAD,
    )
    [_, answer] = sink.wait_to(CUSTOMER, 2)
    assert "Please run the attached script." in body_of(answer)
    assert files_of(answer) == {"fix.sh": script}

    # An internal note with a file: the other agents get it, the customer never does
    secret = b"root password hint: not here\n"
    [tech_new] = sink.to(TECH)
    step(
        desk,
        with_files(
            reply(tech_new, TECH, "#internal\n\nNotes for Lena."), ("notes.txt", secret, "text/plain")
        ),
        TECH,
    )
    note = sink.wait_to(LEAD, 2)[-1]
    assert "Notes for Lena." in body_of(note) and files_of(note) == {"notes.txt": secret}
    desk.settle()
    assert len(sink.to(CUSTOMER)) == 2
    assert all(b"root password" not in raw for _, rcpts, raw in sink.handler.messages if CUSTOMER in rcpts)


# --- 5. a reply of commands only --------------------------------------------------------------------


def test_a_reply_of_commands_only_stores_no_public_message(desk: RunningDaemon, sink: Sink) -> None:
    step(desk, make_mail("Printer jam", "Tray 2 jams.\n", sender=CUSTOMER, to=DESK), CUSTOMER)
    [new] = sink.wait_to(LEAD, 1)
    step(desk, reply(new, LEAD, "#pending"), LEAD)  # the notification quoted below the command
    [ticket] = desk.tickets()
    assert ticket.status == "pending"
    messages = stored(desk, ticket.key)
    assert [(m.author, m.kind) for m in messages] == [(CUSTOMER, "public")]
    out = mailgate(desk.config_path, "tickets", "show", ticket.key)
    assert out.returncode == 0, out.stderr
    shown = out.stdout.decode()
    assert "commands" in shown and "#pending" in shown  # the audit trail has it
    assert "wrote:" not in shown  # nothing of the quoted notification is kept as a message
    # the customer heard of the change, not of the commands
    [_, pending] = sink.wait_to(CUSTOMER, 2)
    assert "Pending" in body_of(pending) and "#pending" not in body_of(pending)


# --- 6. notify_new --------------------------------------------------------------------------------


def test_new_request_reaches_every_member_when_the_group_says_so(
    members_desk: RunningDaemon, sink: Sink
) -> None:
    desk = members_desk
    step(desk, make_mail("Laptop dead", "It does not boot.\n", sender=CUSTOMER, to=DESK), CUSTOMER)
    [t] = desk.tickets()
    assert (t.group, t.assignee) == ("Helpdesk", LEAD)
    for agent in (LEAD, TECH):  # notify_new = "members"
        [new] = sink.wait_to(agent, 1)
        assert "It does not boot." in body_of(new)
    # a group left at the default ("lead") tells its assignee only
    step(desk, make_mail("invoice 42", "Wrong amount.\n", sender=CUSTOMER, to=DESK), CUSTOMER)
    sink.wait_to(OTHER, 1)
    assert len(sink.to(LEAD)) == 1 and len(sink.to(TECH)) == 1


# --- 13. an agent opens a ticket for a customer -------------------------------------------------


def test_proven_agent_opens_a_ticket_for_a_customer(desk: RunningDaemon, sink: Sink) -> None:
    raw = make_mail(
        "Phone: projector in room 4 is dead",
        "#requester customer@acme.example\n\nCalled at 10:05, the projector does not switch on.\n",
        sender=TECH,
        to=DESK,
        headers={"Authentication-Results": GOOD_AR},
    )
    step(desk, raw, TECH)
    [t] = desk.tickets()
    assert t.requester == CUSTOMER
    [ack] = sink.wait_to(CUSTOMER, 1)
    assert "Just confirming that we got your request" in body_of(ack)
    assert f"[{t.key}] Phone: projector in room 4 is dead" == ack["Subject"]
    [first] = stored(desk, t.key)
    assert first.reply_text.startswith("Called at 10:05") and "#requester" not in first.reply_text
    # the agent is on it as an agent: they got the new ticket, and the customer's reply reaches them
    [opened] = sink.wait_to(TECH, 1)
    step(desk, reply(ack, CUSTOMER, "It still does not work."), CUSTOMER)
    assert "It still does not work." in body_of(
        sink.wait_to(TECH, 2)[-1]
    ) or "It still does not work." in body_of(sink.wait_to(LEAD, 2)[-1])
    assert "Phone: projector" in body_of(opened) and "Called at 10:05" in body_of(opened)
    assert "#requester customer@acme.example" not in body_of(opened)


def test_forwarded_mail_unproven_agent_confirms_by_reply(desk: RunningDaemon, sink: Sink) -> None:
    forwarded = (
        "Customer asked by mail, forwarding.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Carla Customer <Customer@Acme.example>\n"
        "Date: Mon, 23 Nov 2026 09:00\n"
        "Subject: Badge does not open the door\n"
        "To: tech@desk.example\n\n"
        "My badge stopped working this morning.\n"
    )
    step(desk, make_mail("Fwd: Badge does not open the door", forwarded, sender=TECH, to=DESK), TECH)
    [t] = desk.tickets()
    # From alone proves nothing: still the agent's ticket, the customer told nothing yet
    assert t.requester == TECH
    assert sink.to(CUSTOMER) == []
    confirm = next(m for m in sink.wait_to(TECH, 1) if "#requester customer@acme.example" in body_of(m))
    # the agent's reply, through the token address only they got, makes it the customer's
    step(desk, reply(confirm, TECH, "#requester customer@acme.example"), TECH)
    [t] = desk.tickets()
    assert t.requester == CUSTOMER
    [ack] = sink.wait_to(CUSTOMER, 1)
    assert "Just confirming that we got your request" in body_of(ack)
    assert ack["Subject"] == f"[{t.key}] Badge does not open the door"


def test_forged_agent_cannot_make_the_desk_mail_a_stranger(desk: RunningDaemon, sink: Sink) -> None:
    """Control for the above: a forger writing as the agent gets the customer nothing; the real
    agent is asked, and a reply that does not come through their token address runs nothing."""
    raw = make_mail("Your account", "#requester customer@acme.example\n\nClick here.\n", sender=TECH, to=DESK)
    step(desk, raw, TECH)
    [t] = desk.tickets()
    assert t.requester == TECH and sink.to(CUSTOMER) == []
    # the forger, not having the confirmation, writes again "in reply" by the ticket key only
    step(
        desk,
        make_mail(f"Re: [{t.key}] Your account", "#requester customer@acme.example\n", sender=TECH, to=DESK),
        TECH,
    )
    assert desk.tickets()[0].requester == TECH
    assert sink.to(CUSTOMER) == []


def test_attached_customer_mail_makes_the_customer_the_requester(desk: RunningDaemon, sink: Sink) -> None:
    original = make_mail("Heating off in building B", "It is 14 degrees here.\n", sender=CUSTOMER, to=TECH)
    outer = EmailMessage()
    outer["From"] = TECH
    outer["To"] = DESK
    outer["Subject"] = "Fwd: Heating off in building B"
    outer["Message-ID"] = "<fwd-attached-1@desk.example>"
    outer["Authentication-Results"] = GOOD_AR
    outer.set_content("Forwarding as attachment.\n")
    outer.add_attachment(message_from_bytes(original, policy=policy.default))
    step(desk, outer.as_bytes(), TECH)
    [t] = desk.tickets()
    assert t.requester == CUSTOMER
    [ack] = sink.wait_to(CUSTOMER, 1)
    assert "Just confirming" in body_of(ack)
