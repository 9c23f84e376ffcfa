"""The words of the mail agents get, read as an agent reads them: a requester without a display
name is named once ("from customer1@acme.com", not "customer1@acme.com <customer1@acme.com>"),
one with a name by name and address; where the commands go is said once, and #help lists the
commands once. Real mail through the real daemon, read at the relay."""

from __future__ import annotations

from conftest import RunningDaemon, Sink, body_of, make_mail, reply

TRIAGE = "angel@localhost"  # rules/team.toml: who gets what no rule places
TECH = "it-tech1@localhost"


def test_a_sender_is_named_once_and_the_commands_are_told_once(daemon: RunningDaemon, sink: Sink) -> None:
    daemon.send(make_mail("hello there", "Can you call me back?\n"))
    daemon.send(
        make_mail("a question", "Who do I ask?\n", sender="Jane Doe <jane@acme.com>"),
        sender="jane@acme.com",
    )
    daemon.settle()
    bare, named = (body_of(m) for m in sink.wait_to(TRIAGE, 2)[:2])
    assert "new request SUP-1 from customer1@acme.com: please assign it" in bare, bare
    assert "<customer1@acme.com>" not in bare, bare
    assert "new request SUP-2 from Jane Doe <jane@acme.com>: please assign it" in named, named
    assert bare.count("on the first lines") == 1, bare  # the footer and its command list said it twice

    # the agent it is assigned to sees the requester once too
    daemon.send(reply(sink.to(TRIAGE)[0], TRIAGE, f"#assign {TECH.split('@')[0]}\n"), sender=TRIAGE)
    daemon.settle()
    assigned = body_of(sink.wait_to(TECH, 1)[-1])
    assert "Requester: customer1@acme.com\n" in assigned, assigned

    # #help: the commands once, not in the body and again in the footer
    daemon.send(reply(sink.to(TECH)[-1], TECH, "#help\n"), sender=TECH)
    daemon.settle()
    helped = body_of(sink.wait_to(TECH, 2)[-1])
    assert helped.count("#assign <agent|me>") == 1, helped
