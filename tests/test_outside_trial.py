"""Defects an outside-in trial found, each checked as a person meets it: the installed `mailgate`
console script in a new process on a desk fresh from `mailgate init`, or real mail over SMTP
through the real daemon."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from pathlib import Path

from conftest import RunningDaemon, Sink, body_of, free_port, make_mail, reply
from support.console import CLEAN_ENV, MAILGATE, mailgate, read_terminal
from support.web import CUSTOMER, TRIAGE, agent_says, http, open_ticket, origin, rcpt_of, resolve

from mailgate.domain.tokens import Purpose, make_link

SECRET = "test-secret"  # RunningDaemon's MAILGATE_SECRET


def _init(root: Path) -> Path:
    mailgate(root, "init", "desk", "--desk-address", "support@localhost", "--key", "SUP")
    # A free SMTP port: `ingest -r` hands mail to a daemon on the configured one, and another
    # desk on this machine may be listening on the default 2525.
    config = root / "desk" / "config.toml"
    config.write_text(re.sub(r"(?m)^port = 2525$", f"port = {free_port()}", config.read_text(), count=1))
    return root / "desk"


def _zones(desk: Path) -> tuple[str, str, str]:
    """The zone `rules test` reads the clock in, and the one `report` cuts days in (text, JSON)."""
    (desk / "m.eml").write_bytes(make_mail(subject="what time is it", sender="ann@example.com"))
    mailgate(desk, "ingest", "m.eml")
    test = mailgate(desk, "rules", "test", "m.eml").out
    m = re.search(r"(?m)^time\s+\w{3} \d{4}-\d\d-\d\d \d\d:\d\d (\S+) ", test)
    assert m, test
    report = mailgate(desk, "report").out
    r = re.match(r"Report .*\((\S+)\)", report)
    assert r, report
    as_json = json.loads(mailgate(desk, "report", "--format", "json").out)["timezone"]
    return m.group(1), r.group(1), as_json


def test_rules_test_and_report_read_the_same_zone_on_a_fresh_desk(tmp_path: Path) -> None:
    desk = _init(tmp_path)
    assert _zones(desk) == ("Europe/Berlin",) * 3


def test_the_desk_zone_is_set_in_one_place_sla_toml(tmp_path: Path) -> None:
    """Moving the [timers] calendar moves routing's clock and the report's days with it; a
    routing.toml that names its own zone says so in `rules test`."""
    desk = _init(tmp_path)
    sla = desk / "rules" / "sla.toml"
    sla.write_text(sla.read_text().replace('tz = "Europe/Berlin"', 'tz = "America/New_York"', 1))
    assert _zones(desk) == ("America/New_York",) * 3
    routing = desk / "rules" / "routing.toml"
    routing.write_text('timezone = "Asia/Tokyo"\n' + routing.read_text())
    test = mailgate(desk, "rules", "test", "m.eml").out
    assert (
        "Asia/Tokyo (from the Date header, routing.toml's own zone; the desk's is America/New_York)" in test
    )


def test_status_is_not_said_twice_in_tickets_show_the_reopen_mail_or_the_agent_page(
    daemon: RunningDaemon, sink: Sink
) -> None:
    """`tickets show` and the reopen mail name the category only when it differs from the
    status; the agent page says its times are UTC, as `tickets show` does."""
    _, note = open_ticket(daemon, sink)
    config = str(daemon.config_path)
    shown = mailgate(daemon.config_path.parent, "--config", config, "tickets", "show", "SUP-1").out
    assert re.search(r"(?m)^  status      open$", shown), shown
    resolution = resolve(daemon, sink, note)
    heard = len(sink.to(TRIAGE))
    daemon.send(reply(resolution, CUSTOMER, "No, the balance is still zero."), rcpt=rcpt_of(resolution))
    daemon.settle()
    reopened = body_of(sink.wait_to(TRIAGE, heard + 1)[-1])
    assert f"{CUSTOMER} replied to SUP-1, so it is open again:" in reopened, reopened
    # A status of another category still shows it: "pending (waiting)".
    agent_says(daemon, sink, note, "#status pending\n\nWhich card is it?")
    shown = mailgate(daemon.config_path.parent, "--config", config, "tickets", "show", "SUP-1").out
    assert re.search(r"(?m)^  status      pending \(waiting\)$", shown), shown

    session = make_link(SECRET, Purpose.SESSION, "", TRIAGE, int(time.time()) + 3600)
    page = http("GET", f"{origin(daemon)}/agent/t/SUP-1", headers={"Cookie": f"mailgate_session={session}"})
    assert page.status == 200, page
    due = re.findall(r"(?:due|given|resolved) (\d{4}-\d\d-\d\d \d\d:\d\d)(?: (\w+))?", page.text)
    assert due and all(zone == "UTC" for _, zone in due), due
    events = re.findall(r"<time>([^<]*)</time>", page.text)
    assert events and all(e.endswith(" UTC") for e in events), events


def _on_a_terminal(cwd: Path, *args: str, stdin: Path) -> tuple[int, str]:
    """The console script with standard output and error on a pseudo-terminal, as a person types
    it: the exit code and everything drawn on the terminal."""
    assert MAILGATE
    leader, follower = pty.openpty()
    with stdin.open("rb") as given:
        proc = subprocess.Popen(
            [MAILGATE, *args], cwd=cwd, env=CLEAN_ENV, stdin=given, stdout=follower, stderr=follower
        )
    os.close(follower)
    drawn = read_terminal(leader)
    return proc.wait(120), drawn.decode(errors="replace").replace("\r\n", "\n")


def test_ingest_by_hand_says_what_it_stored_and_an_mta_pipe_hears_nothing(tmp_path: Path) -> None:
    desk = _init(tmp_path)
    mail = desk / "m.eml"
    mail.write_bytes(make_mail(subject="printer jammed", message_id="<jam-1@acme.com>"))
    code, shown = _on_a_terminal(desk, "ingest", "m.eml", stdin=mail)
    assert code == 0 and "stored as inbox 1 (SUP): ticket SUP-1, ticket-created\n" in shown, shown
    code, shown = _on_a_terminal(desk, "ingest", "m.eml", stdin=mail)
    assert code == 0 and "already stored (duplicate of inbox 1, SUP), nothing done\n" in shown, shown
    code, shown = _on_a_terminal(desk, "ingest", "-", stdin=mail)
    assert code == 0 and "already stored (duplicate of inbox 1, SUP), nothing done\n" in shown, shown
    other = desk / "n.eml"
    other.write_bytes(make_mail(subject="toner low", message_id="<toner-1@acme.com>"))
    code, shown = _on_a_terminal(desk, "ingest", "-", stdin=other)
    assert code == 0 and "stored as inbox 2 (SUP): ticket SUP-2, ticket-created\n" in shown, shown
    # Postfix's pipe (docs/postfix.md): no terminal; what it prints would reach a sender's bounce.
    pipe = ("--log-level", "WARNING", "ingest", "-f", "customer1@acme.com", "-r", "support@localhost")
    third = make_mail(subject="paper out", message_id="<paper-1@acme.com>")
    for _ in range(2):  # stored, then a duplicate: both exit 0 and say nothing
        quiet = mailgate(desk, *pipe, stdin=third)
        assert (quiet.code, quiet.out, quiet.err) == (0, "", ""), quiet
    # --verbose says it in a pipe too
    loud = mailgate(desk, *pipe[:-4], "--verbose", "-", stdin=third).out
    assert loud == "already stored (duplicate of inbox 3, SUP), nothing done\n", loud


def test_an_out_of_office_answering_no_ticket_is_held_and_a_monitoring_alert_still_opens_one(
    daemon: RunningDaemon, sink: Sink
) -> None:
    """RT and Zammad leave an out-of-office that belongs to no ticket alone: it is kept in the
    inbox as held:auto-reply with its reason, opens no ticket and pages nobody. A system's own
    notification (auto-generated) is a request: it opens a ticket, unacknowledged."""
    ooo = make_mail(
        "Automatic reply: hello",
        "I am out of the office until Monday.\n",
        sender="bob@acme.com",
        headers={"Auto-Submitted": "auto-replied", "X-Auto-Response-Suppress": "All"},
    )
    daemon.send(ooo)
    daemon.settle()
    [held] = daemon.inbox()
    assert (held.state, held.disposition, held.ticket_id) == ("done", "held:auto-reply", None)
    assert daemon.tickets() == [] and sink.messages == []
    listed = mailgate(daemon.config_path.parent, "--config", str(daemon.config_path), "inbox", "list").out
    assert "held:auto-reply (automatic answer (Auto-Submitted: auto-replied) to no ticket" in listed, listed

    alert = make_mail(
        "PROBLEM: disk /var on db1 is 97% full",
        "Host: db1\nService: disk /var\nState: CRITICAL\n",
        sender="nagios@monitor.acme.com",
        headers={"Auto-Submitted": "auto-generated"},
    )
    daemon.send(alert)
    daemon.settle()
    [ticket] = daemon.tickets()
    assert ticket.subject == "PROBLEM: disk /var on db1 is 97% full"
    told = sink.wait_to(TRIAGE, 1)
    assert "PROBLEM: disk /var" in str(told[0]["Subject"])
    assert sink.to("nagios@monitor.acme.com") == []  # an automatic mail is never acknowledged

    # Control: an out-of-office that answers a ticket's mail still lands on that ticket.
    ack, _ = open_ticket(daemon, sink)
    back = reply(ack, CUSTOMER, "I am out of the office until Monday.").replace(
        b"Subject: Re: ", b"Auto-Submitted: auto-replied\nSubject: Automatic reply: ", 1
    )
    daemon.send(back, rcpt=rcpt_of(ack))
    daemon.settle()
    assert daemon.inbox()[-1].disposition == "reply:auto"
