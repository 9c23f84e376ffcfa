"""Seed 003, the care desk, told by mail with the shipped rules/ files.

The dispatcher routes by subject and description to a group's main person (Pending), or to the
angel when it cannot tell; the first human reply moves Pending to Open; Assessing and Deferred;
a CC'd person's reply threads instead of making a duplicate; resolution with a rating survey;
"Thanks!" does not reopen, "this isn't resolved" does; the rating link is stored. Alice's photo
reaches the agent, the agent's instructions sheet reaches Alice and Bob; the assignee's mail says
what the request is about.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, RunningDaemon, Sink, body_of, make_mail, reply, scenario_config
from support.web import csrf_of, http, origin

PHOTO = b"\xff\xd8\xff\xe0JFIF" + bytes(range(256)) * 4
SHEET = b"%PDF-1.4 how to switch the projector input\n"


def with_file(raw: bytes, name: str, data: bytes, ctype: str) -> bytes:
    from email import message_from_bytes, policy

    msg = message_from_bytes(raw, policy=policy.default)
    maintype, subtype = ctype.split("/")
    msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)  # type: ignore[attr-defined]
    return msg.as_bytes()


def files_of(msg) -> dict[str, bytes]:  # type: ignore[no-untyped-def]
    return {str(p.get_filename()): p.get_payload(decode=True) for p in msg.iter_attachments()}


DESK = "caredesk@localhost"
ALICE = "alice@emnet.org"
BOB = "bob@emnet.org"
AV = "av-lead@localhost"
ANGEL = "angel@localhost"
MAINT = "maintenance-tech@localhost"


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    cfg = scenario_config(
        tmp_path / "care",
        relay_port=sink.port,
        desks=[(DESK, "CARE", "caredesk")],
        team=(REPO / "rules" / "team.toml").read_text(),
        routing=(REPO / "rules" / "routing.toml").read_text(),
    )
    d = RunningDaemon(cfg)
    yield d
    d.stop()


def send(desk: RunningDaemon, raw: bytes, sender: str, rcpt: str = DESK) -> None:
    desk.send(raw, sender=sender, rcpt=rcpt)
    desk.settle()


def ticket(desk: RunningDaemon, key: str):  # type: ignore[no-untyped-def]
    return next(t for t in desk.tickets() if t.key == key)


def reply_to_desk(desk_msg, sender: str, body: str, **kw) -> bytes:  # type: ignore[no-untyped-def]
    return reply(desk_msg, sender, body, **kw)


def rcpt_of(msg) -> str:  # type: ignore[no-untyped-def]
    return str(msg["Reply-To"].addresses[0].addr_spec)


def test_care_desk_story(desk: RunningDaemon, sink: Sink) -> None:
    # The dispatcher: a projector problem goes to AV's main person, Pending; Bob is on Cc.
    send(
        desk,
        with_file(
            make_mail(
                "Projector in room 2 not working",
                "The projector shows no picture over HDMI.\n",
                sender=ALICE,
                to=DESK,
                cc=BOB,
                message_id="<alice-1@emnet.org>",
            ),
            "projector.jpg",
            PHOTO,
            "image/jpeg",
        ),
        ALICE,
    )
    t = ticket(desk, "CARE-1")
    assert (t.group, t.assignee, t.status) == ("AV", AV, "pending")
    [ack] = sink.wait_to(ALICE, 1)
    assert ack["Subject"] == "[CARE-1] Projector in room 2 not working"
    [new] = sink.wait_to(AV, 1)
    assert "Routed by rule(s): " in body_of(new) and "care-av" in body_of(
        new
    )  # (after-hours may mark it too)
    assert files_of(new) == {"projector.jpg": PHOTO}  # Alice's photo travels to the agent

    # Nothing tells the dispatcher what this is: the angel gets it and assigns it by hand.
    send(
        desk,
        make_mail(
            "A question", "Who should I talk to about the newsletter?\n", sender="carol@emnet.org", to=DESK
        ),
        "carol@emnet.org",
    )
    t2 = ticket(desk, "CARE-2")
    assert (t2.assignee, t2.group) == (ANGEL, None)
    [triage] = sink.wait_to(ANGEL, 1)
    assert "No routing rule placed the new request CARE-2" in body_of(triage)
    send(desk, reply(triage, ANGEL, "#assign maintenance-tech\n"), ANGEL, rcpt_of(triage))
    assert ticket(desk, "CARE-2").assignee == MAINT
    [assigned] = sink.wait_to(MAINT, 1)
    assert "assigned CARE-2 to you" in body_of(assigned)
    # ... with what the request is about: its subject, Carol's words, who she is
    for words in ("A question", "Who should I talk to about the newsletter?", "carol@emnet.org"):
        assert words in body_of(assigned)
    assert len(sink.to("carol@emnet.org")) == 1  # only her acknowledgement: assigning is internal

    # The first human reply: Pending → Open, first response recorded.
    send(desk, reply(new, AV, "Hello Alice, we will look at it tomorrow at 9."), AV, rcpt_of(new))
    t = ticket(desk, "CARE-1")
    assert t.status == "open" and t.first_response_at is not None
    [_, first] = sink.wait_to(ALICE, 2)
    assert "Alvaro Vidal commented:\nHello Alice, we will look at it tomorrow at 9." in body_of(first)
    assert "Alvaro Vidal changed the status to Open." in body_of(first)

    # Bob, on Cc of the first mail, replies to Alice's original: it threads, no duplicate ticket.
    send(
        desk,
        make_mail(
            "Re: Projector in room 2 not working",
            "It is room 2B, the one with the piano.\n",
            sender=BOB,
            to=DESK,
            cc=ALICE,
            in_reply_to="<alice-1@emnet.org>",
            references="<alice-1@emnet.org>",
        ),
        BOB,
    )
    assert [t.key for t in desk.tickets()] == ["CARE-1", "CARE-2"]
    [_, bob_note] = sink.wait_to(AV, 2)
    assert "piano" in body_of(bob_note)

    # Assessing, then Deferred (part of a larger project): the requester is told each time.
    send(desk, reply(new, AV, "#assessing"), AV, rcpt_of(new))
    send(
        desk,
        reply(new, AV, "#defer\n\nA new projector is part of the AV upgrade next spring."),
        AV,
        rcpt_of(new),
    )
    t = ticket(desk, "CARE-1")
    assert t.status == "deferred"
    deferred = sink.wait_to(ALICE, 4)[-1]
    assert "Alvaro Vidal changed the status to Deferred." in body_of(deferred)
    assert "review deferred requests" in body_of(deferred)

    # Resolved with a rating survey, and a sheet on switching inputs: to Alice and to Bob.
    send(
        desk,
        with_file(
            reply(new, AV, "#resolve\n\nWe replaced the lamp; the projector works. See the sheet."),
            "projector-inputs.pdf",
            SHEET,
            "application/pdf",
        ),
        AV,
        rcpt_of(new),
    )
    resolved = sink.wait_to(ALICE, 5)[-1]
    assert "How was our service for this request?" in body_of(resolved)
    assert files_of(resolved) == {"projector-inputs.pdf": SHEET}
    bob_resolved = sink.to(BOB)[-1]
    assert "changed the status to Resolved" in body_of(bob_resolved)
    assert files_of(bob_resolved) == {"projector-inputs.pdf": SHEET}
    assert ticket(desk, "CARE-1").status == "resolved"
    sent_before = len(sink.messages)

    # "Thanks!" is recorded and reopens nothing, tells nobody.
    send(desk, reply(resolved, ALICE, "Thanks!\n\nAlice"), ALICE, rcpt_of(resolved))
    assert ticket(desk, "CARE-1").status == "resolved"
    assert len(sink.messages) == sent_before
    assert desk.inbox()[-1].disposition == "reply:thanks"

    # "This isn't resolved" reopens, and the agent hears it.
    send(
        desk,
        reply(resolved, ALICE, "Sorry, this isn't resolved: the picture still flickers."),
        ALICE,
        rcpt_of(resolved),
    )
    assert ticket(desk, "CARE-1").status == "open"
    reopened = sink.wait_to(AV, 3)[-1]
    assert "so it is open again" in body_of(reopened) and "flickers" in body_of(reopened)

    # Resolved again; Alice clicks the 4 in the survey (the seed's "rating icon"): the page shows
    # her choice, she sends it (docs/web.md; a scanner's GET alone records nothing).
    send(desk, reply(reopened, AV, "#resolve\n\nNew cable: no more flicker."), AV, rcpt_of(reopened))
    resolved2 = sink.wait_to(ALICE, 6)[-1]
    link = next(w for w in body_of(resolved2).split() if "/rate/" in w and w.endswith("?n=4"))
    page = http("GET", link)
    assert 'value="4" checked' in page.text and ticket(desk, "CARE-1").rating is None
    sent = http(
        "POST", link.split("?")[0], {"rating": "4", "csrf": csrf_of(page.text)}, {"Origin": origin(desk)}
    )
    assert sent.status == 200
    desk.settle()
    t = ticket(desk, "CARE-1")
    assert (t.status, t.rating) == ("resolved", 4)
