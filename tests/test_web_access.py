"""Attacks on what a signed-in agent is shown: an agent of group IT tries an HR ticket by every
agent route (its page, its attachment, the queues, search, a POST, guessed keys), each beside the
control that an agent of HR, and an admin, get it. By mail an agent acts only on the tickets of
their groups (domain.team.may_change); the web shows them what they may see (may_see), no more.

Real mail through the real daemon makes every ticket; every agent signs in by the link mailed to
them, over plain HTTP against the daemon's own web listener. The last test does the same in
Chromium (tests/test_web_browser.py's browser, JavaScript off).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, Sink, body_of, scenario_config, wait_until
from sqlalchemy import func, select
from support.web import agent_says, csrf_of, http, origin, section, sign_in
from test_web_browser import Page, browser  # noqa: F401  (the module's Chromium fixture)

from mailgate.store.models import Event, Message

TRIAGE = "triage@example.com"
IT = "it-tech@example.com"
IT_LIGHT = "it-light@example.com"
HR = "hr-tech@example.com"
BOSS = "boss@example.com"
CUSTOMER = "ann@acme.example"
SECRET_BYTES = b"%PDF-1.4 salary 98765 EUR"

TEAM = f"""
triage = "{TRIAGE}"
[[agents]]
address = "{TRIAGE}"
[[agents]]
address = "{IT}"
[[agents]]
address = "{IT_LIGHT}"
role = "light"
[[agents]]
address = "{HR}"
[[agents]]
address = "{BOSS}"
role = "admin"

[[groups]]
name = "IT"
members = ["{IT}", "{IT_LIGHT}"]

[[groups]]
name = "HR"
members = ["{HR}"]
"""

ROUTING = """
[[rules]]
name = "hr"
when.text.words = ["payslip"]
then = { group = "HR" }

[[rules]]
name = "it"
when.text.words = ["laptop"]
then = { group = "IT" }
"""


def _mail(subject: str, body: str, attachment: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = CUSTOMER
    msg["To"] = "support@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash(subject))}@acme.example>"
    msg.set_content(body)
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="pdf", filename="payslip.pdf")
    return msg.as_bytes()


def _desk(root: Path, sink: Sink, team: str, routing: str) -> RunningDaemon:
    path = scenario_config(
        root, relay_port=sink.port, desks=[("support@localhost", "SUP", "jira")], team=team, routing=routing
    )
    return RunningDaemon(path)


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    """SUP-1 is HR's (a payslip, with the payslip attached), SUP-2 is IT's (a laptop)."""
    d = _desk(tmp_path / "desk", sink, TEAM, ROUTING)
    d.send(_mail("Payslip is wrong", "My payslip for November is wrong.", SECRET_BYTES), sender=CUSTOMER)
    d.settle()
    d.send(_mail("Laptop fan noise", "My laptop fan is loud."), sender=CUSTOMER)
    d.settle()
    assert [(t.key, t.group) for t in d.tickets()] == [("SUP-1", "HR"), ("SUP-2", "IT")]
    yield d
    d.stop()


def attachment_path(daemon: RunningDaemon, key: str) -> str:
    """The agent URL of the ticket's first attachment, built from the database (as an attacker
    would guess it: the message ids are small numbers)."""
    ticket = next(t for t in daemon.tickets() if t.key == key)
    with daemon.db.session() as s:
        found = s.execute(
            select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id)
        ).scalars()
        mid = next(m.id for m in found if m.attachments)
    return f"{origin(daemon)}/agent/t/{key}/a/{mid}/0"


def events_of(daemon: RunningDaemon) -> int:
    with daemon.db.session() as s:
        return int(s.execute(select(func.count()).select_from(Event)).scalar_one())


def test_agent_of_another_group_cannot_open_the_ticket_page(desk: RunningDaemon, sink: Sink) -> None:
    base = origin(desk)
    it = sign_in(desk, sink, IT)
    refused = http("GET", f"{base}/agent/t/SUP-1", headers=it)
    nothing = http("GET", f"{base}/agent/t/SUP-99", headers=it)
    # 404, word for word what a key that does not exist gets: the key's existence is not confirmed
    assert refused.status == nothing.status == 404
    assert refused.text == nothing.text
    assert "Payslip" not in refused.text and "November" not in refused.text
    # the lower-case key (ticket_by_key upper-cases it) is no way round either
    assert http("GET", f"{base}/agent/t/sup-1", headers=it).text == nothing.text
    # control: IT's own ticket opens for IT; the HR ticket opens for HR and for the admin
    assert "Laptop fan noise" in http("GET", f"{base}/agent/t/SUP-2", headers=it).text
    for who in (HR, BOSS):
        page = http("GET", f"{base}/agent/t/SUP-1", headers=sign_in(desk, sink, who))
        assert page.status == 200 and "Payslip is wrong" in page.text and "November" in page.text, who


def test_guessed_keys_tell_another_groups_ticket_from_none_in_no_way(desk: RunningDaemon, sink: Sink) -> None:
    base = origin(desk)
    it = sign_in(desk, sink, IT)
    answers = {
        key: http("GET", f"{base}/agent/t/{key}", headers=it) for key in ("SUP-1", "SUP-3", "SUP-4", "HR-1")
    }
    assert {r.status for r in answers.values()} == {404}
    assert len({r.text for r in answers.values()}) == 1  # one page for all: hidden looks like absent
    assert {r.headers.get("content-length") for r in answers.values()} == {
        answers["SUP-3"].headers.get("content-length")
    }
    # control: the one key IT may see is found
    assert http("GET", f"{base}/agent/t/SUP-2", headers=it).status == 200


def test_agent_of_another_group_cannot_download_its_attachment(desk: RunningDaemon, sink: Sink) -> None:
    url = attachment_path(desk, "SUP-1")
    it = sign_in(desk, sink, IT)
    refused = http("GET", url, headers=it)
    assert refused.status == 404 and "salary" not in refused.text and "98765" not in refused.text
    # the same message id under IT's own ticket's key: still nothing (the message is not SUP-2's)
    other = http("GET", url.replace("/SUP-1/", "/SUP-2/"), headers=it)
    assert other.status == 404 and "98765" not in other.text
    # refused exactly as an attachment that does not exist
    assert refused.text == http("GET", re.sub(r"/a/\d+/", "/a/9999/", url), headers=it).text
    # control: HR and the admin download it
    for who in (HR, BOSS):
        got = http("GET", url, headers=sign_in(desk, sink, who))
        assert got.status == 200 and got.text.encode() == SECRET_BYTES, who
        assert got.headers["content-disposition"].startswith("attachment;")


def test_queues_and_search_list_only_what_the_agent_may_see(desk: RunningDaemon, sink: Sink) -> None:
    base = origin(desk)
    # HR's agent gives the ticket up by mail: HR's still, now in everyone's "Unassigned" query
    note = next(m for m in sink.wait_to(HR, 1) if "SUP-1" in str(m["Subject"]))
    agent_says(desk, sink, note, "#unassign", agent=HR)
    assert [(t.key, t.group, t.assignee) for t in desk.tickets()][0] == ("SUP-1", "HR", None)
    it = sign_in(desk, sink, IT)
    for url in (f"{base}/agent", f"{base}/agent?q=payslip", f"{base}/agent?q=wrong"):
        page = http("GET", url, headers=it)
        assert page.status == 200, url
        assert "SUP-1" not in page.text and "Payslip" not in page.text, url
    queues = http("GET", f"{base}/agent", headers=it).text
    assert "SUP-2" in queues and "Laptop fan noise" in queues  # control: IT's own ticket is listed
    assert "HR" not in re.sub(r"<[^>]+>", " ", queues).split()  # no other group named either
    # a light agent of IT sees what an agent of IT sees (they write internal notes on it)
    light = http("GET", f"{base}/agent", headers=sign_in(desk, sink, IT_LIGHT)).text
    assert "SUP-2" in light and "SUP-1" not in light
    # control: HR's list holds HR's ticket, not IT's; the admin's holds both
    hr = http("GET", f"{base}/agent?q=payslip", headers=sign_in(desk, sink, HR)).text
    assert "SUP-1" in hr and "Payslip is wrong" in hr
    assert "SUP-2" not in http("GET", f"{base}/agent", headers=sign_in(desk, sink, HR)).text
    boss = sign_in(desk, sink, BOSS)  # in no group: finds both by search
    assert "SUP-1" in http("GET", f"{base}/agent?q=payslip", headers=boss).text
    assert "SUP-2" in http("GET", f"{base}/agent?q=laptop", headers=boss).text


def test_a_full_queue_reads_on_past_the_hidden_tickets(
    desk: RunningDaemon, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lists are filtered after the query: when another group's tickets are the newest, the list
    still fills with the agent's own (here one row a list, so one hidden ticket would empty it)."""
    monkeypatch.setattr("mailgate.web.app.QUEUE_ROWS", 1)
    desk.send(_mail("Payslip again", "The December payslip too."), sender=CUSTOMER)
    desk.settle()
    for who, key in ((IT, "SUP-2"), (HR, "SUP-3")):  # both given up: the newest unassigned is HR's
        note = next(m for m in sink.wait_to(who, 1) if key in str(m["Subject"]))
        agent_says(desk, sink, note, "#unassign", agent=who)
    assert [(t.key, t.assignee) for t in desk.tickets()][1:] == [("SUP-2", None), ("SUP-3", None)]
    it = section(
        http("GET", f"{origin(desk)}/agent", headers=sign_in(desk, sink, IT)).text, "unassigned", "at-risk"
    )
    assert "SUP-2" in it and "SUP-3" not in it
    hr = section(
        http("GET", f"{origin(desk)}/agent", headers=sign_in(desk, sink, HR)).text, "unassigned", "at-risk"
    )
    assert "SUP-3" in hr  # control: HR's list has HR's newest


def test_moving_an_agent_out_of_a_group_takes_its_tickets_from_their_next_page(
    desk: RunningDaemon, sink: Sink
) -> None:
    base = origin(desk)
    note = next(m for m in sink.wait_to(HR, 1) if "SUP-1" in str(m["Subject"]))
    agent_says(desk, sink, note, "#unassign", agent=HR)  # HR's by group only, not assigned to them
    hr = sign_in(desk, sink, HR)
    assert http("GET", f"{base}/agent/t/SUP-1", headers=hr).status == 200  # control: HR's own
    team = desk.config_path.parent / "rules" / "team.toml"
    team.write_text(TEAM.replace(f'members = ["{HR}"]', f'members = ["{BOSS}"]'))
    wait_until(lambda: http("GET", f"{base}/agent/t/SUP-1", headers=hr).status == 404, what="team.toml read")
    assert "Payslip" not in http("GET", f"{base}/agent?q=payslip", headers=hr).text


def test_a_post_on_another_groups_ticket_changes_nothing(desk: RunningDaemon, sink: Sink) -> None:
    """No agent route changes a ticket by POST (tickets are worked by mail); a POST on a ticket's
    URL is answered as on any ticket, seen or not, and leaves the ticket as it was."""
    base = origin(desk)
    it = sign_in(desk, sink, IT)
    page = http("GET", f"{base}/agent/t/SUP-2", headers=it)
    form = {"csrf": csrf_of(page.text), "status": "closed", "body": "#close"}
    before = (events_of(desk), [(t.status, t.group, t.assignee) for t in desk.tickets()])
    hidden = http("POST", f"{base}/agent/t/SUP-1", form, it)
    seen = http("POST", f"{base}/agent/t/SUP-2", form, it)
    assert hidden.status == seen.status == 405 and hidden.text == seen.text
    assert "Payslip" not in hidden.text
    desk.settle()
    assert (events_of(desk), [(t.status, t.group, t.assignee) for t in desk.tickets()]) == before


def test_a_desk_without_groups_shows_every_agent_every_ticket(tmp_path: Path, sink: Sink) -> None:
    """The honest path: a one-group desk needs no membership lists (may_change), so every agent
    keeps the page, the list and the attachment of a ticket triage holds."""
    team = f'triage = "{TRIAGE}"\n[[agents]]\naddress = "{TRIAGE}"\n[[agents]]\naddress = "{IT}"\n'
    d = _desk(tmp_path / "desk", sink, team, "")
    try:
        d.send(_mail("Payslip is wrong", "My payslip for November is wrong.", SECRET_BYTES), sender=CUSTOMER)
        d.settle()
        assert d.tickets()[0].assignee == TRIAGE
        it = sign_in(d, sink, IT)
        assert "Payslip is wrong" in http("GET", f"{origin(d)}/agent/t/SUP-1", headers=it).text
        assert "SUP-1" in http("GET", f"{origin(d)}/agent?q=payslip", headers=it).text
        assert http("GET", attachment_path(d, "SUP-1"), headers=it).text.encode() == SECRET_BYTES
    finally:
        d.stop()


def test_in_chromium_it_agent_is_refused_hr_agent_is_shown(
    browser: Any,  # noqa: F811
    desk: RunningDaemon,
    sink: Sink,
) -> None:
    base = origin(desk)
    for who, sees in ((IT, False), (HR, True)):
        tab = Page(browser)
        try:
            tab.page.goto(f"{base}/agent/t/SUP-1")  # not signed in: the sign-in form
            tab.page.fill("#address", who)
            before = len(sink.to(who))
            tab.page.get_by_role("button", name="Mail me a sign-in link").click()
            desk.settle()
            mail = sink.wait_to(who, before + 1)[-1]
            tab.page.goto(re.search(r"Sign in: (\S+)", body_of(mail)).group(1))  # type: ignore[union-attr]
            with tab.page.expect_navigation() as nav:
                tab.page.get_by_role("button", name="Sign in").click()
            response = nav.value
            main = tab.page.locator("main").inner_text()
            if sees:
                assert response.status == 200 and "Payslip is wrong" in main and "payslip.pdf" in main
            else:
                assert response.status == 404 and "No such ticket" in main
                assert "Payslip" not in tab.page.content()
            tab.page.goto(f"{base}/agent")
            queues = tab.page.locator("main").inner_text()
            assert ("SUP-1" in queues) is sees, who
            assert tab.csp_clean()
        finally:
            tab.close()
