"""Seeds 001 (service desk with triage) and 002 (DevRev stages): every status reached by mail,
and the forged-agent rule: a mail that only claims an agent's address runs nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, RunningDaemon, Sink, body_of, make_mail, reply, scenario_config

SUPPORT = "support-lead@localhost"
DEV = "dev-lead@localhost"
CUSTOMER = "pat@client.example"


def _desk(tmp_path: Path, sink: Sink, workflow: str, extra: str = "") -> RunningDaemon:
    cfg = scenario_config(
        tmp_path / workflow,
        relay_port=sink.port,
        desks=[("support@localhost", "SUP", workflow)],
        team=(REPO / "rules" / "team.toml").read_text(),
        routing=(REPO / "rules" / "routing.toml").read_text(),
        extra=extra,
    )
    return RunningDaemon(cfg)


@pytest.fixture
def triage_desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    d = _desk(tmp_path, sink, "triage")
    yield d
    d.stop()


@pytest.fixture
def devrev_desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    d = _desk(tmp_path, sink, "devrev")
    yield d
    d.stop()


def send(desk: RunningDaemon, raw: bytes, sender: str, rcpt: str = "support@localhost") -> None:
    desk.send(raw, sender=sender, rcpt=rcpt)
    desk.settle()


def answer(desk: RunningDaemon, to_msg, sender: str, body: str) -> None:  # type: ignore[no-untyped-def]
    send(desk, reply(to_msg, sender, body), sender, str(to_msg["Reply-To"].addresses[0].addr_spec))


def status(desk: RunningDaemon) -> str:
    return desk.tickets()[-1].status


def test_triage_workflow_through_every_status(triage_desk: RunningDaemon, sink: Sink) -> None:
    d = triage_desk
    send(
        d,
        make_mail(
            "Bug: the app crashes when I open the dashboard",
            "Steps to reproduce: log in, open Dashboard, the app closes.\n",
            sender=CUSTOMER,
        ),
        CUSTOMER,
    )
    t = d.tickets()[0]
    assert (t.status, t.type, t.group, t.assignee) == (
        "waiting_for_triage",
        "Bug report",
        "Product Support",
        SUPPORT,
    )
    [new] = sink.wait_to(SUPPORT, 1)
    # the agent looks at it: the first reply moves it to Waiting for support
    answer(d, new, SUPPORT, "Thanks, we are reproducing it now.")
    assert status(d) == "waiting_for_support"
    # more information needed from the customer
    answer(d, new, SUPPORT, "#status waiting for customer\n\nWhich version of the app do you use?")
    assert status(d) == "waiting_for_customer"
    asked = sink.wait_to(CUSTOMER, 3)[-1]
    assert "Which version of the app" in body_of(asked) and "Waiting for customer" in body_of(asked)
    # the customer answers: back to Waiting for support
    send(
        d,
        reply(asked, CUSTOMER, "Version 4.2.1 on Android 14."),
        CUSTOMER,
        str(asked["Reply-To"].addresses[0].addr_spec),
    )
    assert status(d) == "waiting_for_support"
    # escalate to dev with notes: Work in progress; the dev lead is assigned and told
    answer(
        d,
        new,
        SUPPORT,
        "#escalate\n#assign dev-lead\n#internal\n\nReproduced on 4.2.1: NPE in DashboardView.",
    )
    assert status(d) == "work_in_progress" and d.tickets()[0].assignee == DEV
    [dev_mail] = sink.wait_to(DEV, 1)
    assert "NPE in DashboardView" in body_of(dev_mail)
    assert not any("NPE" in body_of(m) for m in sink.to(CUSTOMER))  # the notes stay internal
    # the dev team fixes it and moves it back to support
    answer(d, dev_mail, DEV, "#support\n#assign support-lead\n#internal\n\nFixed in 4.2.2.")
    assert status(d) == "waiting_for_support"
    # the customer confirms; Finished, with the survey
    answer(d, new, SUPPORT, "#finished\n\nFixed in version 4.2.2, please update.")
    assert status(d) == "finished"
    done = sink.wait_to(CUSTOMER, 4)[-1]  # escalation and back were #internal: not told
    assert "changed the status to Finished." in body_of(done) and "How was our service" in body_of(done)
    # a skipped step is refused with the valid ones
    answer(d, new, SUPPORT, "#escalate")
    err = sink.to(SUPPORT)[-1]
    assert "cannot go from Finished to Work in progress" in body_of(err) and "Waiting for support" in body_of(
        err
    )


def test_devrev_stages_through_every_stage(devrev_desk: RunningDaemon, sink: Sink) -> None:
    d = devrev_desk
    send(
        d,
        make_mail(
            "Bug: export in the app drops the last row",
            "Export any view of the app to CSV: the last row is missing.\n",
            sender=CUSTOMER,
        ),
        CUSTOMER,
    )
    assert status(d) == "queued"
    [new] = sink.wait_to(SUPPORT, 1)
    seen = ["queued"]
    for command, expected in [
        ("Looking into it.", "work_in_progress"),  # first response: Queued → Work in progress
        ("#apa\n#internal\n\nAsking the export team.", "awaiting_product_assist"),
        ("#ad\n#internal\n\nIssue filed for the next sprint.", "awaiting_development"),
        ("#indev\n#internal\n\nDevelopment started.", "in_development"),
        ("#acr\n\nA fix is deployed: can you check the export again?", "awaiting_customer_response"),
    ]:
        answer(d, new, SUPPORT, command)
        assert status(d) == expected, command
        seen.append(expected)
    asked = sink.to(CUSTOMER)[-1]
    send(
        d,
        reply(asked, CUSTOMER, "Still one row short, sorry."),
        CUSTOMER,
        str(asked["Reply-To"].addresses[0].addr_spec),
    )
    assert status(d) == "work_in_progress"  # the customer's answer brings it back
    answer(d, new, SUPPORT, "#resolve\n\nFixed for real in 2.3.1.")
    assert status(d) == "resolved"
    seen.append("resolved")
    # Canceled and Accepted, on two more tickets
    send(
        d,
        make_mail(
            "Feature request: dark mode for the app",
            "It would be nice to have a dark mode in the app.\n",
            sender=CUSTOMER,
        ),
        CUSTOMER,
    )
    send(
        d,
        make_mail(
            "Bug: the app test ticket is broken", "created by mistake, please ignore\n", sender=CUSTOMER
        ),
        CUSTOMER,
    )
    fr_mail = next(m for m in sink.messages if "[SUP-2]" in str(m["Subject"]) and str(m["To"]) != CUSTOMER)
    bug_mail = next(m for m in sink.messages if "[SUP-3]" in str(m["Subject"]) and str(m["To"]) != CUSTOMER)
    answer(d, fr_mail, str(fr_mail["To"]), "#wip")
    answer(d, fr_mail, str(fr_mail["To"]), "#accept\n\nDark mode is on the roadmap.")
    answer(d, bug_mail, str(bug_mail["To"]), "#cancel\n\nCreated by accident.")
    by_key = {t.key: t.status for t in d.tickets()}
    assert by_key == {"SUP-1": "resolved", "SUP-2": "accepted", "SUP-3": "canceled"}
    seen += ["accepted", "canceled"]
    assert set(seen) == {s for s in d.daemon.runner.rules.current.workflows["devrev"].statuses}


def test_forged_agent_mail_runs_nothing(triage_desk: RunningDaemon, sink: Sink) -> None:
    d = triage_desk
    send(d, make_mail("Bug: login fails", "Cannot log in since the update.\n", sender=CUSTOMER), CUSTOMER)
    [ack] = sink.wait_to(CUSTOMER, 1)
    # 1) someone writes as the agent, with the subject tag and commands but no token
    forged = make_mail(
        "Re: [SUP-1] Bug: login fails", "#finished\n#priority 1\n\nAll done, closing.", sender=SUPPORT
    )
    send(d, forged, SUPPORT)
    # 2) the customer's own reply-token used under the agent's name (a forwarded ack)
    send(
        d,
        reply(ack, SUPPORT, "#finished\n\nClosing this."),
        SUPPORT,
        str(ack["Reply-To"].addresses[0].addr_spec),
    )
    t = d.tickets()[0]
    assert (t.status, t.priority) == ("waiting_for_triage", "medium")
    assert [i.disposition for i in d.inbox()] == ["ticket-created", "forged-agent", "forged-agent"]
    warned = [m for m in sink.wait_to(SUPPORT, 2) if "claimed to come from you" in body_of(m)]
    assert len(warned) == 2 and "none of them was run" in body_of(warned[0])
    assert len(sink.to(CUSTOMER)) == 1  # the customer saw nothing of it


def test_trusted_authentication_results_prove_an_agent(tmp_path: Path, sink: Sink) -> None:
    # An MTA in front adds the header (RFC 8601 section 5): tests/test_attacks_identity.py has the
    # spellings a sender forges, and mailgate as the MX trusting none.
    d = _desk(
        tmp_path,
        sink,
        "triage",
        extra='[security]\ntrust_authentication_results = "relay"\ntrusted_authserv_ids = ["mx.localhost"]\n',
    )
    try:
        send(d, make_mail("Bug: page is blank", "The report page is blank.\n", sender=CUSTOMER), CUSTOMER)
        mail = make_mail(
            "Re: [SUP-1] Bug: page is blank",
            "#finished\n\nFixed.",
            sender=SUPPORT,
            headers={"Authentication-Results": "mx.localhost; dkim=pass header.d=localhost; spf=pass"},
        )
        send(d, mail, SUPPORT)
        assert d.tickets()[0].status == "finished"
        # the same header from a server nobody trusts proves nothing
        send(d, make_mail("Bug: second", "x\n", sender=CUSTOMER), CUSTOMER)
        mail2 = make_mail(
            "Re: [SUP-2] Bug: second",
            "#finished\n\nFixed.",
            sender=SUPPORT,
            headers={"Authentication-Results": "evil.example; dkim=pass header.d=localhost"},
        )
        send(d, mail2, SUPPORT)
        assert d.tickets()[1].status == "waiting_for_triage"
    finally:
        d.stop()
