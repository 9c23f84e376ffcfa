"""Bounces desk-wide (issue 19, item 7), through the real daemon with real mail over SMTP: after
a permanent failure of our acknowledgement, a new request from the same dead address is not
acknowledged again (backscatter), the assignee is told the customer cannot be reached and why
(the DSN's status and words), and an agent's own reply still goes out with a warning to the
agent. A delay notice (4.x.x) quiets nobody."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply, scenario_config

AGENT = "agent@example.com"
DEAD = "gone@acme.example"
TEAM = f'triage = "{AGENT}"\n[[agents]]\naddress = "{AGENT}"\n'


def dsn(original: EmailMessage, failed: str, *, status: str, action: str, diagnostic: str, to: str) -> bytes:
    """An RFC 3464 report for one of our mails, as Postfix writes it (its headers returned), to
    `to`: the envelope sender of that mail (VERP), where an MTA sends it."""
    return f"""From: MAILER-DAEMON@mx.acme.example (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Message-ID: {make_msgid(domain="mx.acme.example")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system at host mx.acme.example.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.acme.example

Final-Recipient: rfc822; {failed}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--B
Content-Type: text/rfc822-headers

From: support@localhost
To: {failed}
Message-ID: {original["Message-ID"]}
Subject: {original["Subject"]}

--B--
""".encode()


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    path = scenario_config(
        tmp_path / "desk",
        relay_port=sink.port,
        desks=[("support@localhost", "SUP", "jira")],
        team=TEAM,
        extra="[limits]\nbounce_quiet_days = 3\n",
    )
    d = RunningDaemon(path)
    yield d
    d.stop()


def _request(desk: RunningDaemon, subject: str) -> None:
    desk.send(make_mail(subject, sender=DEAD), sender=DEAD)
    desk.settle()


def test_a_dead_address_is_not_acknowledged_again_and_the_agent_is_told(
    desk: RunningDaemon, sink: Sink
) -> None:
    _request(desk, "Invoice 17 is wrong")
    [ack] = sink.wait_to(DEAD, 1)
    [notice] = sink.wait_to(AGENT, 1)
    [verp] = sink.envelope_from(DEAD)
    assert verp.startswith("support+sup-1-") and verp.endswith("-b@localhost")

    desk.send(
        dsn(
            ack,
            DEAD,
            status="5.1.1",
            action="failed",
            diagnostic="550 5.1.1 <gone@acme.example>: user unknown",
            to=verp,
        ),
        sender="",
        rcpt=verp,
    )
    desk.settle()
    assert desk.inbox()[-1].disposition == "bounce"

    # The assignee hears that the customer cannot be reached, and why.
    told = sink.wait_to(AGENT, 2)[-1]
    text = body_of(told)
    assert "SUP-1" in str(told["Subject"])
    assert "cannot be reached" in text and DEAD in text
    assert "5.1.1" in text and "user unknown" in text
    assert "for 3 days" in text

    # A new request from the dead address: a ticket, but no acknowledgement (backscatter).
    _request(desk, "Also invoice 18")
    assert [t.key for t in desk.tickets()] == ["SUP-1", "SUP-2"]
    assert len(sink.to(DEAD)) == 1
    assert [r.kind for r in desk.outbox_to(DEAD)] == ["acknowledgement"]

    # The agent's own reply still goes out, and the agent is warned it will probably not arrive.
    desk.send(reply(notice, AGENT, "We corrected the invoice."), sender=AGENT)
    desk.settle()
    assert "corrected the invoice" in body_of(sink.wait_to(DEAD, 2)[-1])
    warning = [m for m in sink.wait_to(AGENT, 4) if "Your reply on SUP-1 was sent to" in body_of(m)]
    assert len(warning) == 1 and "5.1.1" in body_of(warning[0])


def test_a_delay_notice_quiets_nobody(desk: RunningDaemon, sink: Sink) -> None:
    _request(desk, "Slow server")
    [ack] = sink.wait_to(DEAD, 1)
    [verp] = sink.envelope_from(DEAD)
    desk.send(
        dsn(
            ack, DEAD, status="4.4.1", action="delayed", diagnostic="451 4.4.1 connection timed out", to=verp
        ),
        sender="",
        rcpt=verp,
    )
    desk.settle()
    assert desk.inbox()[-1].disposition == "bounce"
    _request(desk, "Another question")
    assert len(sink.wait_to(DEAD, 2)) == 2  # acknowledged as usual
    assert [r.kind for r in desk.outbox_to(AGENT)] == ["triage-needed", "triage-needed"]  # nobody alarmed
