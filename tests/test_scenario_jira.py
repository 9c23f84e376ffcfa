"""Seed 000, the Jira Service Desk incident SUP-20, told by mail from the first message to Closed.

customer1 writes to support@; agent1 triages by replying with commands (type, priority, plan,
Pending with questions); the customer answers; agent1 assigns tech1 and starts work (tech1 is
mailed); tech1 adds an internal comment; agent1 resolves (survey); the customer rates; agent1
takes it back to Work in progress once, then resolves and closes. Every watcher hears each
change, and nobody hears anything else.

The request "gets into the inbox of all members of the team registered to support@"
(`notify_new = "members"`); its screenshot travels to the agents, the agent's script to the
customer, tech1's log to the agents only; the assignee's mail says what the request is about; the
close and "back to work in progress" mails reach every watcher, tech1 (watching as assignee) too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply, scenario_config, start_counter

TEAM = """
triage = "agent1@hypertvx.com"
[[agents]]
address = "agent1@hypertvx.com"
name = "agent1"
[[agents]]
address = "agent2@hypertvx.com"
name = "agent2"
[[agents]]
address = "tech1@hypertvx.com"
name = "tech1"
[[groups]]
name = "Service Desk"
members = ["agent1@hypertvx.com", "agent2@hypertvx.com"]
lead = "agent1@hypertvx.com"
notify_new = "members"
[[groups]]
name = "Dev Team"
members = ["tech1@hypertvx.com"]
lead = "tech1@hypertvx.com"
"""

ROUTING = """
[[rules]]
name = "support-desk"
description = "Everything sent to support@ goes to the service desk team"
when.to = "support@hypertvx.com"
then = { group = "Service Desk" }
"""

CUSTOMER = "customer1@acme.com"
COLLEAGUE = "customer2@acme.com"
AGENT = "agent1@hypertvx.com"
AGENT2 = "agent2@hypertvx.com"
SCREENSHOT = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
SCRIPT = b"#!/bin/sh\nsystemctl restart backend\n"
LOG = b"backend: oom-killed at 09:00\n"
TECH = "tech1@hypertvx.com"


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    cfg = scenario_config(
        tmp_path / "hypertvx",
        relay_port=sink.port,
        desks=[("support@hypertvx.com", "SUP", "jira")],
        team=TEAM,
        routing=ROUTING,
    )
    d = RunningDaemon(cfg)
    start_counter(d, "SUP", 20)
    yield d
    d.stop()


def step(desk: RunningDaemon, raw: bytes, sender: str) -> None:
    desk.send(raw, sender=sender, rcpt=_rcpt(raw))
    desk.settle()


def _rcpt(raw: bytes) -> list[str]:
    from email import message_from_bytes, policy
    from email.utils import getaddresses

    msg = message_from_bytes(raw, policy=policy.default)
    return [a for _, a in getaddresses([str(msg["To"] or "")])]


def with_file(raw: bytes, name: str, data: bytes, ctype: str) -> bytes:
    """The mail with a file attached, as a mail client attaches one."""
    from email import message_from_bytes, policy

    msg = message_from_bytes(raw, policy=policy.default)
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)  # type: ignore[attr-defined]
    return msg.as_bytes()


def files_of(msg) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return {str(p.get_filename()): p.get_payload(decode=True) for p in msg.iter_attachments()}


def messages(desk: RunningDaemon, key: str) -> list:  # type: ignore[type-arg]
    """The messages stored on a ticket, as `mailgate tickets show` prints them."""
    from mailgate.store.repo import Repo

    with desk.db.session() as s:
        repo = Repo(s)
        t = repo.ticket_by_key(key)
        assert t is not None
        return repo.messages(t.id)  # type: ignore[arg-type]


def ticket(desk: RunningDaemon):  # type: ignore[no-untyped-def]
    [t] = desk.tickets()
    return t


def test_sup20_incident_from_first_mail_to_closed(desk: RunningDaemon, sink: Sink) -> None:
    # 1) the customer writes; a colleague is on Cc and becomes a watcher
    step(
        desk,
        with_file(
            make_mail(
                "system is down",
                "Cannot access the backend\nSystem is unreacheable\n",
                sender=CUSTOMER,
                to="support@hypertvx.com",
                cc=COLLEAGUE,
            ),
            "screen shot.png",
            SCREENSHOT,
            "image/png",
        ),
        CUSTOMER,
    )
    t = ticket(desk)
    assert (t.key, t.status, t.group, t.assignee) == ("SUP-20", "open", "Service Desk", AGENT)
    [ack] = sink.wait_to(CUSTOMER, 1)
    assert ack["Subject"] == "[SUP-20] system is down"
    assert "Just confirming that we got your request. We're on it." in body_of(ack)
    assert "Turn off this request's notifications" in body_of(ack)
    [new] = sink.wait_to(AGENT, 1)
    assert new["Subject"] == "[SUP-20] system is down" and "Cannot access the backend" in body_of(new)
    assert files_of(new) == {"screen shot.png": SCREENSHOT}  # the customer's screenshot travels
    assert "screen shot.png" in body_of(new) and "attached" in body_of(new)
    # notify_new = "members": every member of the Service Desk has it in their inbox
    [new2] = sink.wait_to(AGENT2, 1)
    assert "Cannot access the backend" in body_of(new2) and files_of(new2) == files_of(new)
    assert sink.to(COLLEAGUE) == []  # the acknowledgement is the requester's alone
    assert files_of(ack) == {}  # the customer is not sent back their own file

    # 2) agent1 classifies and asks questions: type, priority 1, plan, Pending
    step(
        desk,
        reply(
            new,
            AGENT,
            "#type incident\n#priority 1\n#set plan=enterprise\n#pending\n\n"
            "Could you tell us since when it is down, and the error you see?",
        ),
        AGENT,
    )
    t = ticket(desk)
    assert (t.type, t.priority, t.fields["plan"], t.status) == (
        "incident",
        "critical",
        "enterprise",
        "pending",
    )
    [_, pending] = sink.wait_to(CUSTOMER, 2)
    [watch1] = sink.wait_to(COLLEAGUE, 1)
    for m in (pending, watch1):
        text = body_of(m)
        assert m["Subject"] == "[SUP-20] system is down"
        assert "agent1 commented:\nCould you tell us since when it is down" in text
        assert "agent1 changed the status to Pending." in text
        assert "#priority" not in text  # commands are not shown to customers
    assert pending["From"].addresses[0].display_name == "agent1 via Sup desk"

    # 3) the customer answers: back to the desk, agent1 is told
    step(desk, reply(pending, CUSTOMER, "Since 9:00. The error is 502 Bad Gateway."), CUSTOMER)
    assert ticket(desk).status == "open"
    [_, answered] = sink.wait_to(AGENT, 2)
    assert "502 Bad Gateway" in body_of(answered) and "On Mon" not in body_of(answered)

    # 4) agent1 assigns tech1 and starts work ("Investigate"): tech1 is mailed, customers see both
    step(
        desk,
        reply(
            answered, AGENT, "#assign tech1\n#investigate\n\nRequest has been assigned to a system engineer"
        ),
        AGENT,
    )
    t = ticket(desk)
    assert (t.assignee, t.status) == (TECH, "work_in_progress")
    [assigned] = sink.wait_to(TECH, 1)
    assert "agent1 assigned SUP-20 to you" in body_of(assigned)
    # what the request is about, not just the key: subject, their words, priority, the screenshot
    for words in ("system is down", "Cannot access the backend", "Priority: critical", CUSTOMER):
        assert words in body_of(assigned)
    assert files_of(assigned) == {"screen shot.png": SCREENSHOT}
    [_, _, wip] = sink.wait_to(CUSTOMER, 3)
    assert "agent1 commented:\nRequest has been assigned to a system engineer" in body_of(wip)
    assert "agent1 changed the status to Work in progress." in body_of(wip)
    sink.wait_to(COLLEAGUE, 2)

    # 5) tech1 solves it and writes an internal comment with a log: agents only
    step(
        desk,
        with_file(reply(assigned, TECH, "#internal\n\nProblem is solved"), "oom.log", LOG, "text/plain"),
        TECH,
    )
    [_, _, note] = sink.wait_to(AGENT, 3)
    assert "internal note" in body_of(note) and "Problem is solved" in body_of(note)
    assert files_of(note) == {"oom.log": LOG}
    assert len(sink.to(CUSTOMER)) == 3 and len(sink.to(COLLEAGUE)) == 2

    # 6) agent1 resolves: Completed, with the survey, to every watcher; the script he attached
    # ("run the attached script") reaches the customer and the watcher
    step(
        desk,
        with_file(
            reply(note, AGENT, "#resolve\n\nProblem was solved\nNow the system is ok"),
            "fix.sh",
            SCRIPT,
            "application/x-sh",
        ),
        AGENT,
    )
    assert ticket(desk).status == "completed" and ticket(desk).resolved_at is not None
    resolved = sink.wait_to(CUSTOMER, 4)[-1]
    text = body_of(resolved)
    assert "agent1 changed the status to Completed." in text
    assert "agent1 resolved this as Done." in text
    assert "agent1 commented:\nProblem was solved\nNow the system is ok" in text
    assert "How was our service for this request?" in text
    assert re.search(r"5 Excellent +http://127\.0\.0\.1:\d+/rate/\S+\?n=5", text)  # one-click (docs/web.md)
    sink.wait_to(COLLEAGUE, 3)
    assert files_of(resolved) == {"fix.sh": SCRIPT}
    assert files_of(sink.to(COLLEAGUE)[-1]) == {"fix.sh": SCRIPT}
    assert all("oom.log" not in body_of(m) for m in sink.to(CUSTOMER) + sink.to(COLLEAGUE))
    # tech1, the assignee, watches too: told of the change in agent words
    solved = sink.wait_to(TECH, 2)[-1]
    assert "agent1 changed the status to Completed." in body_of(solved)

    # 7) the customer rates by replying with a number: stored, not reopened
    step(desk, reply(resolved, CUSTOMER, "5 - quick and friendly, thanks"), CUSTOMER)
    t = ticket(desk)
    assert (t.status, t.rating, t.rating_comment) == ("completed", 5, "quick and friendly, thanks")

    # 8) not quite solved after all: "Back to work in progress", then resolve and close. agent1
    # answers the rating notice he got: the customer's mail carries the customer's token, which
    # proves nothing of agent1 (tests/test_attacks_identity.py)
    [rated] = [m for m in sink.to(AGENT) if "5" in body_of(m) and "quick and friendly" in body_of(m)]
    step(desk, reply(rated, AGENT, "#status back to work in progress\n\nWe are looking again."), AGENT)
    assert ticket(desk).status == "work_in_progress"
    back = sink.wait_to(CUSTOMER, 5)[-1]
    assert "agent1 changed the status to Work in progress." in body_of(back)
    assert "agent1 changed the status to Work in progress." in body_of(sink.wait_to(TECH, 3)[-1])
    step(desk, reply(rated, AGENT, "#resolve\n\nFixed for good."), AGENT)
    step(desk, reply(rated, AGENT, "#close"), AGENT)
    assert ticket(desk).status == "closed" and ticket(desk).closed_at is not None
    closed = sink.wait_to(CUSTOMER, 7)[-1]
    assert "agent1 changed the status to Closed." in body_of(closed)
    assert len(sink.wait_to(COLLEAGUE, 6)) == 6  # the watcher heard every change the customer did
    # "to all watchers": tech1 hears of the close too
    assert "agent1 changed the status to Closed." in body_of(sink.wait_to(TECH, 6)[-1])
    assert [r.kind for r in desk.outbox_to(TECH)] == [
        "assigned",
        "watcher-update",  # Completed
        "rating",
        "watcher-update",  # back to Work in progress
        "watcher-update",  # Completed
        "watcher-update",  # Closed
    ]
    assert len(sink.to(AGENT2)) == 1
    # "#close" above the quoted notification: no public message with the commands and the quote
    mine = [m for m in messages(desk, "SUP-20") if m.author == AGENT]
    assert not any("#close" in m.reply_text + m.text for m in mine)
    assert not any("wrote:" in m.reply_text + m.text for m in mine)  # no quoted notification kept
    assert mine[-1].reply_text == "Fixed for good."

    # nothing else went out: acknowledgement + pending + wip + resolved + back + resolved + closed
    assert len(sink.to(CUSTOMER)) == 7
    assert sorted({m["Subject"] for m in sink.messages}) == ["[SUP-20] system is down"]
    assert all(m["Auto-Submitted"] in ("auto-replied", "auto-generated") for m in sink.messages)


def test_invalid_transition_is_refused_with_the_valid_ones(desk: RunningDaemon, sink: Sink) -> None:
    step(desk, make_mail("printer", sender=CUSTOMER, to="support@hypertvx.com"), CUSTOMER)
    [new] = sink.wait_to(AGENT, 1)
    step(desk, reply(new, AGENT, "#close\n#priority 9\n\nClosing this."), AGENT)
    t = ticket(desk)
    assert (t.status, t.priority) == ("open", None)  # nothing applied: all or nothing
    [_, err] = sink.wait_to(AGENT, 2)
    text = body_of(err)
    assert "Nothing was changed on SUP-20" in text
    assert "line 2: #priority 9" in text and "critical, high, medium, low" in text
    assert len(sink.to(CUSTOMER)) == 1  # only the acknowledgement: the comment was not sent
    # from Completed only Closed and Work in progress are valid
    step(desk, reply(new, AGENT, "#resolve"), AGENT)
    step(desk, reply(new, AGENT, "#pending"), AGENT)
    err2 = sink.wait_to(AGENT, 3)[-1]
    assert "cannot go from Completed to Pending" in body_of(err2)
    assert "Closed" in body_of(err2) and "Work in progress" in body_of(err2)
