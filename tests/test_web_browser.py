"""The web side in a real browser: Debian's Chromium, headless, driven by Playwright.

Every test starts from real mail the real daemon sent over SMTP and clicks the link in it, as a
person would: "View request" in the acknowledgement, a rating in the resolution mail, the agent's
"Open SUP-1" and the sign-in link mailed to them. JavaScript is off in every page (the pages work
without it), and any Content-Security-Policy report in the console fails the test.

Needs `chromium` (apt) and the `playwright` package (pip; never `playwright install`: the
Debian browser is used). Under CI=true they must be there (.ci/run installs them).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, RunningDaemon, Sink, body_of, need
from sqlalchemy import select
from support.web import CUSTOMER, TRIAGE, agent_says, http, link, one_click_url, open_ticket, resolve

from mailgate.store.models import Participant

CHROMIUM = os.environ.get("MAILGATE_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Screenshots go to a temporary directory; MAILGATE_SCREENSHOTS=docs/screenshots refreshes the
# README's (a test run must not rewrite tracked files).
SHOTS_DIR = os.environ.get("MAILGATE_SCREENSHOTS")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    need(Path(CHROMIUM).exists() or bool(shutil.which("chromium")), "Chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright package (pip install playwright)")
        raise
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Page:
    """A fresh browser context (no cookies), JavaScript off, CSP reports collected."""

    def __init__(self, browser: Any, *, phone: bool = False) -> None:
        size = {"width": 390, "height": 844} if phone else {"width": 1100, "height": 900}
        self.context = browser.new_context(java_script_enabled=False, viewport=size)
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(m.text))

    def csp_clean(self) -> bool:
        return not [m for m in self.console if "Content Security Policy" in m]

    def close(self) -> None:
        self.context.close()


def shot(page: Any, name: str, tmp: Path) -> None:
    """A screenshot: proof the page renders; the README's when MAILGATE_SCREENSHOTS says where."""
    where = (REPO / SHOTS_DIR) if SHOTS_DIR else tmp
    where.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(where / name), full_page=True)
    assert (where / name).stat().st_size > 1000


def test_requester_opens_view_request_from_the_acknowledgement(
    browser: Any, daemon: RunningDaemon, sink: Sink, tmp_path: Path
) -> None:
    ack, note = open_ticket(daemon, sink)
    agent_says(daemon, sink, note, "Thanks, we are checking the card with the issuer.")
    agent_says(daemon, sink, note, "#internal\n\nIssuer ticket 7781, do not share.")
    tab = Page(browser, phone=True)
    try:
        tab.page.goto(link(ack, "View request:"))
        assert tab.page.title() == "SUP-1 · Gift card balance"
        assert tab.page.locator("#status").inner_text() == "Open"
        text = tab.page.locator("main").inner_text()
        assert "My gift card shows zero." in text and "checking the card with the issuer" in text
        assert "7781" not in text  # the internal note stays the agents'
        shot(tab.page, "request-page-phone.png", tmp_path)
        # turn this request's mail off by the button (a POST with the form's CSRF field)
        tab.page.get_by_role("button", name="Turn off this request's notifications").click()
        assert tab.page.locator("#flash").inner_text() == "Notifications are off."
        assert tab.csp_clean()
    finally:
        tab.close()
    with daemon.db.session() as s:
        notify = s.execute(select(Participant.notify).where(Participant.address == CUSTOMER)).scalar_one()
    assert notify is False


def test_requester_rates_from_the_resolution_mail_then_reopens(
    browser: Any, daemon: RunningDaemon, sink: Sink, tmp_path: Path
) -> None:
    _, note = open_ticket(daemon, sink)
    resolution = resolve(daemon, sink, note)
    tab = Page(browser)
    try:
        tab.page.goto(link(resolution, "4 Good"))
        assert tab.page.locator('input[name="rating"][value="4"]').is_checked()
        daemon.settle()
        assert daemon.tickets()[0].rating is None  # opening the link recorded nothing
        heard = len(sink.to(TRIAGE))
        tab.page.fill("#comment", "Fast, thank you")
        shot(tab.page, "rating-page.png", tmp_path)
        tab.page.get_by_role("button", name="Send rating").click()
        assert "You rated this request 4 out of 5." in tab.page.locator("main").inner_text()
        daemon.settle()
        t = daemon.tickets()[0]
        assert (t.rating, t.rating_comment, t.status) == (4, "Fast, thank you", "resolved")
        told = sink.wait_to(TRIAGE, heard + 1)[-1]
        assert "rated SUP-1 4/5" in body_of(told) and "Fast, thank you" in body_of(told)
        # "this isn't resolved" from the request page: reopened as a reply would, agents told
        tab.page.goto(link(resolution, "View request:"))
        tab.page.fill("#why", "The balance is still zero.")
        tab.page.get_by_role("button", name="This isn't resolved").click()
        assert "open again" in tab.page.locator("#flash").inner_text()
        assert tab.csp_clean()
    finally:
        tab.close()
    daemon.settle()
    t = daemon.tickets()[0]
    assert t.status_category != "closed"
    reopened = sink.wait_to(TRIAGE, heard + 2)[-1]
    assert "open again" in body_of(reopened) and "still zero" in body_of(reopened)


def test_one_click_unsubscribe_posted_by_a_mail_client(daemon: RunningDaemon, sink: Sink) -> None:
    """What Gmail or Yahoo does with List-Unsubscribe-Post (RFC 8058): one POST, no browser."""
    ack, note = open_ticket(daemon, sink)
    r = http("POST", one_click_url(ack), {"List-Unsubscribe": "One-Click"})
    assert r.status == 200
    before = len(sink.to(CUSTOMER))
    agent_says(daemon, sink, note, "We have news.")
    assert len(daemon.outbox_to(CUSTOMER)) == before  # nothing more queued for the customer


def test_agent_signs_in_from_the_mailed_link_and_lands_on_the_ticket(
    browser: Any, daemon: RunningDaemon, sink: Sink, tmp_path: Path
) -> None:
    _, note = open_ticket(daemon, sink)
    agent_says(daemon, sink, note, "#internal\n\nChecked with the issuer: card 7781 blocked.")
    agent_url = link(note, "Open SUP-1:")
    tab = Page(browser)
    try:
        tab.page.goto(agent_url)  # not signed in: the sign-in form, which remembers where to go
        assert tab.page.url.startswith(agent_url.split("/agent/")[0] + "/agent/signin")
        tab.page.fill("#address", TRIAGE)
        tab.page.get_by_role("button", name="Mail me a sign-in link").click()
        assert "Check your mail" in tab.page.locator("h1").inner_text()
        daemon.settle()
        mail = next(m for m in reversed(sink.to(TRIAGE)) if "Sign in" in str(m["Subject"]))
        url = re.search(r"Sign in: (\S+)", body_of(mail)).group(1)  # type: ignore[union-attr]
        tab.page.goto(url)
        tab.page.get_by_role("button", name="Sign in").click()
        assert tab.page.url == agent_url
        main = tab.page.locator("main").inner_text()
        assert "card 7781 blocked" in main  # the internal note, agents only
        assert "new-ticket" in main or "ticket-created" in main  # the routing explanation
        shot(tab.page, "agent-ticket.png", tmp_path)
        tab.page.goto(agent_url.split("/agent/")[0] + "/agent?q=gift")
        assert "SUP-1" in tab.page.locator("main").inner_text()
        tab.page.get_by_role("button", name="Sign out").click()
        tab.page.goto(agent_url)
        assert "/agent/signin" in tab.page.url
        assert tab.csp_clean()
    finally:
        tab.close()
