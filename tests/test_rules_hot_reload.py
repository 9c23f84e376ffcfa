"""Admins edit rules under a running daemon: the next message follows the new rule; a broken
edit is refused, the last good rules stay in force, and the admin is told by mail (file:line)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import RunningDaemon, Sink, body_of, make_mail, write_config

from mailgate.ruleset import load

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


def wait_in_force(daemon: RunningDaemon, desk_dir: Path, timeout: float = 10.0) -> str:
    """Wait until the daemon's rules are the files on disk now (templates are looked at at most
    once a second, and an idle pipeline looks every two seconds). Returns the version."""
    want = load(desk_dir / "rules", desk_dir / "templates", daemon.config.desks).version
    deadline = time.monotonic() + timeout
    while daemon.daemon.runner.rules.current.version != want:
        assert time.monotonic() < deadline, "the daemon did not take up the edit"
        time.sleep(0.05)
    return want


def status(desk_dir: Path) -> subprocess.CompletedProcess[str]:
    """`mailgate status` as an operator runs it: a new process on the daemon's config."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "mailgate"), "--config", str(desk_dir / "config.toml"), "status"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MAILGATE_SECRET": "test-secret", "PATH": "/usr/bin:/bin"},
    )


def test_a_template_edit_shows_in_the_next_mail(daemon: RunningDaemon, sink: Sink, desk_dir: Path) -> None:
    """A saved template is part of the next snapshot: the acknowledgement sent once the daemon
    has taken up the edit (within about a second) is the new one."""
    ack = desk_dir / "templates" / "acknowledgement.txt"
    daemon.send(make_mail("printer jam", "tray 2\n", message_id="<t1@acme.com>"))
    [first] = sink.wait_to("customer1@acme.com", 1)
    assert "Thanks from the new desk" not in body_of(first)

    ack.write_text("Thanks from the new desk: {{ ticket.key }}.\n")
    wait_in_force(daemon, desk_dir)
    daemon.send(make_mail("scanner jam", "again\n", message_id="<t2@acme.com>"))
    second = sink.wait_to("customer1@acme.com", 2)[-1]
    assert body_of(second) == "Thanks from the new desk: SUP-2.\n", body_of(second)


def test_a_desk_template_added_while_running_overrides_for_that_desk(
    daemon: RunningDaemon, sink: Sink, desk_dir: Path
) -> None:
    """templates/<KEY>/ overrides a template for one desk; one added under a running daemon is
    used from the next mail on, and the version recorded on the ticket is the new one."""
    own = desk_dir / "templates" / "SUP"
    own.mkdir()
    (own / "acknowledgement.txt").write_text("Support desk here: {{ ticket.key }}.\n")
    version = wait_in_force(daemon, desk_dir)
    daemon.send(make_mail("mouse broken", "left button\n", message_id="<d1@acme.com>"))
    [ack] = sink.wait_to("customer1@acme.com", 1)
    assert body_of(ack) == "Support desk here: SUP-1.\n", body_of(ack)
    daemon.settle()
    assert f"rules:    {version}" in status(desk_dir).stdout


def test_a_broken_template_edit_is_refused_and_the_last_good_one_used(
    daemon: RunningDaemon, sink: Sink, desk_dir: Path
) -> None:
    ack = desk_dir / "templates" / "acknowledgement.txt"
    good = ack.read_text()
    ack.write_text(good.replace("{{ ticket.key }}", "{{ ticket.key }", 1))
    line = next(i for i, text in enumerate(ack.read_text().splitlines(), 1) if "{{ ticket.key }" in text)
    # An idle daemon looks at the files by itself: the admin is told without any mail arriving.
    [notice] = sink.wait_to("admin@example.com", 1)
    assert f"acknowledgement.txt:{line}: template syntax" in body_of(notice), body_of(notice)
    daemon.send(make_mail("keyboard", "sticky keys\n", message_id="<b1@acme.com>"))
    [sent] = sink.wait_to("customer1@acme.com", 1)
    assert "Just confirming that we got your request" in body_of(sent)
    assert "Your request is SUP-1" in body_of(sent)


def test_a_workflow_edit_applies_to_the_next_mail_and_status_tells_a_refused_one(
    daemon: RunningDaemon, sink: Sink, desk_dir: Path
) -> None:
    workflow = desk_dir / "rules" / "workflow.toml"
    text = workflow.read_text()
    # The default desk's preset: new tickets start "In progress" instead of "Open".
    workflow.write_text(text.replace('initial = "open"', 'initial = "in_progress"', 1))
    daemon.send(make_mail("monitor flickers", "since monday\n", message_id="<w1@acme.com>"))
    daemon.settle()
    assert daemon.tickets()[-1].status == "in_progress"

    workflow.write_text(text.replace('initial = "open"', 'initial = "nowhere"', 1))
    line = next(i for i, t in enumerate(workflow.read_text().splitlines(), 1) if 'initial = "nowhere"' in t)
    daemon.send(make_mail("monitor dark", "since tuesday\n", message_id="<w2@acme.com>"))
    daemon.settle()
    assert daemon.tickets()[-1].status == "in_progress"  # the last good workflow still applies
    [notice] = sink.wait_to("admin@example.com", 1)
    assert f"workflow.toml:{line}: " in body_of(notice) and "nowhere" in body_of(notice)

    r = status(desk_dir)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "rules:    INVALID" in r.stdout
    assert f"workflow.toml:{line}: " in r.stdout
    assert "the daemon keeps the last good rules" in r.stdout


def test_mailgate_run_on_broken_rules_does_not_start_and_says_where(tmp_path: Path) -> None:
    """At start there is no last good snapshot to keep: `mailgate run` refuses, with every error
    as FILE:LINE: reason, before it opens a port or starts a worker."""
    desk = tmp_path / "desk"
    config = write_config(desk)
    routing = desk / "rules" / "routing.toml"
    routing.write_text(routing.read_text().replace('group = "IT"', 'group = "ITT"', 1))
    line = next(i for i, t in enumerate(routing.read_text().splitlines(), 1) if 'group = "ITT"' in t)
    r = subprocess.run(
        [str(Path(sys.executable).parent / "mailgate"), "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"MAILGATE_SECRET": "test-secret", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 65, r.stderr
    assert f"{routing}:{line}: unknown group 'ITT'" in r.stderr
    assert "does not start" in r.stderr
