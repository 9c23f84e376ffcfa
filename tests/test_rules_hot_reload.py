"""Admins edit rules under a running daemon: the next message follows the new rule; a broken
edit is refused, the last good rules stay in force, and the admin is told by mail (file:line)."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import RunningDaemon, Sink, body_of, make_mail

NEW_RULE = """

[[rules]]
name = "newsletter"
description = "added while the daemon runs"
when.subject.words = ["newsletter"]
then = { group = "Websites", priority = "high" }
"""


def test_edit_takes_effect_and_a_broken_edit_is_refused(
    daemon: RunningDaemon, sink: Sink, desk_dir: Path
) -> None:
    routing = desk_dir / "rules" / "routing.toml"
    daemon.send(make_mail("newsletter question", "when does it come out\n", message_id="<p1@acme.com>"))
    daemon.settle()
    assert daemon.tickets()[-1].group is None  # no rule for printers yet: triage

    text = routing.read_text()
    # The new rule goes first so no earlier rule takes the message.
    head, sep, rest = text.partition("[[rules]]")
    routing.write_text(head + NEW_RULE.strip() + "\n\n" + sep + rest)
    daemon.send(make_mail("newsletter typo", "a typo in the title\n", message_id="<p2@acme.com>"))
    daemon.settle()
    t = daemon.tickets()[-1]
    assert (t.group, t.priority) == ("Websites", "high")
    assert any("rule 'newsletter': hit" in s["decision"] for s in daemon.inbox()[-1].trace)

    # A broken edit: an unknown group and a bad regex. Refused; the printers rule keeps working.
    broken = routing.read_text().replace(
        'group = "Websites", priority = "high"', 'group = "Webistes", priority = "high"'
    )
    broken += '\n[[rules]]\nname = "bad"\nwhen.subject.regex = "(unclosed"\nthen = { tags = ["x"] }\n'
    routing.write_text(broken)
    daemon.send(make_mail("newsletter date", "which day\n", message_id="<p3@acme.com>"))
    daemon.settle()
    assert daemon.tickets()[-1].group == "Websites"
    [notice] = sink.wait_to("admin@example.com", 1)
    text = body_of(notice)
    assert "refused" in str(notice["Subject"])
    assert "routing.toml:" in text and "unknown group 'Webistes'" in text and "Websites" in text
    assert "(unclosed" in text or "regex" in text
    # told once per edit, not once per message
    daemon.send(make_mail("newsletter again", "x\n", message_id="<p4@acme.com>"))
    daemon.settle()
    assert len(sink.to("admin@example.com")) == 1


def test_a_broken_sla_edit_is_refused_and_the_admin_told(
    daemon: RunningDaemon, sink: Sink, desk_dir: Path
) -> None:
    sla = desk_dir / "rules" / "sla.toml"
    sla.write_text(sla.read_text() + '\n[[policies]]\nname = "broken"\nfirst_response = "soon"\n')
    daemon.send(make_mail("anything", "x\n"))
    daemon.settle()
    [notice] = sink.wait_to("admin@example.com", 1)
    assert "sla.toml:" in body_of(notice)
    assert daemon.tickets()[-1].first_response_due is not None  # the last good SLA rules still apply


def test_a_template_edit_shows_in_the_next_mail(daemon: RunningDaemon, sink: Sink, desk_dir: Path) -> None:
    """Templates are read again when their file changes: the acknowledgement sent a moment after
    the admin saved the file is the new one (the daemon asks the file system at most once a
    second whether a template changed)."""
    ack = desk_dir / "templates" / "acknowledgement.txt"
    daemon.send(make_mail("printer jam", "tray 2\n", message_id="<t1@acme.com>"))
    [first] = sink.wait_to("customer1@acme.com", 1)
    assert "Thanks from the new desk" not in body_of(first)

    ack.write_text("Thanks from the new desk: {{ ticket.key }}.\n")
    time.sleep(1.2)
    daemon.send(make_mail("scanner jam", "again\n", message_id="<t2@acme.com>"))
    second = sink.wait_to("customer1@acme.com", 2)[-1]
    assert body_of(second) == "Thanks from the new desk: SUP-2.\n", body_of(second)
