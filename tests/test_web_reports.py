"""The reports page (/agent/reports) on the hand-worked week of tests/support/report_desk.py,
served by the real daemon: in Debian's Chromium (headless, JavaScript off) it shows what
`mailgate report` prints for the same filters, and its CSV link gives the CLI's CSV byte for byte;
and whoever may not see the figures — a stranger, a requester, an agent who leads no group, a lead
asking for another group, a forged session — gets none of them, each beside the honest control.

The lead signs in as a person does (the sign-in form, the link in the mail the file transport
wrote); the other sessions are made as the server makes them (a signed session link), to put
each role in front of the page.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, body_of
from support.report_desk import known_week
from support.sla_desk import ANGEL, CUSTOMER, LEAD, TEAM, TECH
from support.web import http
from test_reports_cli import mailgate
from test_web_browser import Page, browser, shot  # noqa: F401  (browser is a fixture)

from mailgate.domain.tokens import Purpose, make_link

BOSS = "boss@example.com"
SECRET = "test-secret"  # RunningDaemon's MAILGATE_SECRET
WEEK = {"since": "2026-11-02", "until": "2026-11-08", "by": "day"}
CLI_WEEK = ("report", "--since", "2026-11-02", "--until", "2026-11-08", "--by", "day")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    """The known week, then a second group (Network, led by Angel) and an admin (Boss) in
    team.toml, and the daemon with its web listener over it."""
    desk = known_week(tmp_path_factory.mktemp("web-reports") / "desk")
    desk.db.dispose()
    (desk.config.root / "rules" / "team.toml").write_text(
        TEAM
        + f'[[agents]]\naddress = "{BOSS}"\nname = "Bo Boss"\nrole = "admin"\n'
        + f'[[groups]]\nname = "Network"\nmembers = ["{ANGEL}"]\nlead = "{ANGEL}"\n'
    )
    d = RunningDaemon(desk.config.root / "config.toml")
    yield d
    d.stop()


def base(d: RunningDaemon) -> str:
    return d.daemon.config.web.url


def session(who: str, secret: str = SECRET) -> str:
    return "mailgate_session=" + make_link(secret, Purpose.SESSION, "", who, int(time.time()) + 3600)


def get(d: RunningDaemon, path: str, cookie: str | None = None) -> Any:
    return http("GET", base(d) + path, headers={"Cookie": cookie} if cookie else None)


def config_of(d: RunningDaemon) -> Path:
    return d.config_path


def signin_url(d: RunningDaemon, tab: Page, address: str) -> str:
    """Ask for a sign-in link on the page, then read it from the mail the file transport wrote."""
    tab.page.fill("#address", address)
    tab.page.get_by_role("button", name="Mail me a sign-in link").click()
    outgoing = d.config.state_dir / "outgoing"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for path in sorted(outgoing.glob("*.eml"), key=lambda p: p.stat().st_mtime, reverse=True):
            msg = message_from_bytes(path.read_bytes(), policy=policy.default)
            if "Sign in" in str(msg["Subject"]) and address in str(msg["To"]):
                return re.search(r"Sign in: (\S+)", body_of(msg)).group(1)  # type: ignore[arg-type,union-attr]
        time.sleep(0.1)
    raise AssertionError(f"no sign-in mail to {address}")


def cells(tab: Page, table: str) -> tuple[list[str], list[list[str]]]:
    """The column keys and every row (label first) of one figures table, as the page shows it."""
    loc = tab.page.locator(f"#figures-{table}")
    keys = loc.locator("thead th[data-key]").evaluate_all("els => els.map(e => e.dataset.key)")
    rows = [
        [c.inner_text() for c in r.locator("th, td").all()] for r in loc.locator("tbody tr, tfoot tr").all()
    ]
    return keys, rows


def shown(value: object) -> str:
    return "–" if value is None else str(value)


def test_a_lead_sees_the_figures_the_cli_prints_with_charts_and_the_same_csv(
    browser: Any,  # noqa: F811
    served: RunningDaemon,
    tmp_path: Path,
) -> None:
    tab = Page(browser)
    try:
        tab.page.goto(base(served) + "/agent/reports")  # not signed in: the sign-in form
        assert "/agent/signin" in tab.page.url
        tab.page.goto(signin_url(served, tab, LEAD))
        tab.page.get_by_role("button", name="Sign in").click()
        assert tab.page.url == base(served) + "/agent/reports"  # back where the lead was going
        tab.page.fill('input[name="since"]', WEEK["since"])
        tab.page.fill('input[name="until"]', WEEK["until"])
        tab.page.select_option('select[name="by"]', "day")
        tab.page.get_by_role("button", name="Show").click()
        # A lead's figures are their group's: the filter is filled in, and it is the only choice.
        assert tab.page.locator("#period").inner_text() == (
            "2026-11-02 00:00 – 2026-11-09 00:00 (UTC) · group Service Desk"
        )
        assert tab.page.locator('select[name="group"] option').all_inner_texts() == ["Service Desk"]

        cli = json.loads(
            mailgate(config_of(served), *CLI_WEEK, "--group", "Service Desk", "--format", "json").stdout
        )
        assert tab.page.locator("#h-created").inner_text() == str(cli["total"]["created"]) == "5"
        assert tab.page.locator("#h-sla").inner_text() == "60% / 40%"
        assert tab.page.locator("#h-first-response").inner_text() == "1h 00m / 2h 30m"
        compared = 0
        for table in ("volume", "times", "sla", "satisfaction"):
            keys, rows = cells(tab, table)
            want = [[r["period"], *(shown(r[k]) for k in keys)] for r in cli["rows"]]
            want.append(["total", *(shown(cli["total"][k]) for k in keys)])
            assert rows == want, table
            compared += len(keys)
        assert compared == len(cli["total"]) - 1  # every figure of the CLI's rows, but the label

        # Five charts, drawn by the server: SVG with a title and a description, no script.
        charts = tab.page.locator("figure.chart svg")
        assert charts.count() == 5
        for i in range(5):
            svg = charts.nth(i)
            assert svg.locator("title").first.text_content() and svg.locator("desc").count() == 1
        assert tab.page.locator("script").count() == 0
        volume = tab.page.locator("#chart-volume svg desc").text_content() or ""
        assert volume.startswith("2026-11-02: created 2, open at end 1, waiting at end 0;")
        assert "Ratings (2, average 3.5)" in tab.page.locator("#chart-satisfaction").inner_html()
        shot(tab.page, "reports-page.png", tmp_path)

        # The CSV link: the CLI's CSV for the same filters, byte for byte.
        href = tab.page.locator("#csv").get_attribute("href")
        assert href is not None
        got = tab.context.request.get(base(served) + href)
        assert got.status == 200 and got.headers["content-disposition"].startswith("attachment;")
        cli_csv = mailgate(config_of(served), *CLI_WEEK, "--group", "Service Desk", "--format", "csv").stdout
        assert got.text() == cli_csv
        assert list(csv.DictReader(io.StringIO(got.text())))[-1]["created"] == "5"
        assert tab.csp_clean()
    finally:
        tab.close()


def test_an_admin_chooses_any_group_and_sees_every_ticket(browser: Any, served: RunningDaemon) -> None:  # noqa: F811
    tab = Page(browser)
    try:
        tab.context.add_cookies(
            [{"name": "mailgate_session", "value": session(BOSS).split("=", 1)[1], "url": base(served)}]
        )
        tab.page.goto(base(served) + "/agent/reports?since=2026-11-02&until=2026-11-08&by=agent")
        options = tab.page.locator('select[name="group"] option').all_inner_texts()
        assert options == ["every group", "Network", "Service Desk"]
        keys, rows = cells(tab, "volume")
        assert [r[0] for r in rows] == [LEAD, TECH, "total"]
        assert rows[-1][1 + keys.index("created")] == "5"
        assert tab.page.get_by_role("link", name="Reports").count() == 1  # in the navigation
        assert tab.csp_clean()
    finally:
        tab.close()


# --- who may not see the figures: each attack beside its honest control ------------------------

FIGURES = "Tickets created"


def test_a_stranger_is_sent_to_sign_in(served: RunningDaemon) -> None:
    for path in ("/agent/reports", "/agent/reports.csv"):
        r = get(served, path)
        assert r.status == 303 and r.headers["location"].startswith("/agent/signin")
        assert FIGURES not in r.text
    assert get(served, "/agent/reports", session(LEAD)).status == 200  # control


def test_a_requester_or_a_forged_session_gets_no_figures(served: RunningDaemon) -> None:
    # A session signed with our key for someone who is no agent (a requester), and a lead's
    # session signed with another key: both are no session at all.
    for cookie in (session(CUSTOMER), session(LEAD, secret="another-secret")):
        for path in ("/agent/reports", "/agent/reports.csv"):
            r = get(served, path, cookie)
            assert r.status == 303 and r.headers["location"].startswith("/agent/signin"), (cookie, path)
            assert FIGURES not in r.text and "created" not in r.text
    ok = get(served, "/agent/reports.csv?since=2026-11-02&until=2026-11-08", session(LEAD))
    assert ok.status == 200 and ok.text.startswith("period,created,")  # control


def test_an_agent_who_leads_no_group_is_refused(served: RunningDaemon) -> None:
    for path in ("/agent/reports", "/agent/reports.csv", "/agent/reports?group=Service+Desk"):
        r = get(served, path, session(TECH))
        assert r.status == 403, path
        assert "Reports are for group leads" in r.text and FIGURES not in r.text
    queues = get(served, "/agent", session(TECH))
    assert queues.status == 200 and 'href="/agent/reports"' not in queues.text  # no link offered
    assert 'href="/agent/reports"' in get(served, "/agent", session(LEAD)).text  # control


def test_a_lead_gets_no_figures_of_another_group(served: RunningDaemon) -> None:
    week = "since=2026-11-02&until=2026-11-08&by=day"
    for path in (f"/agent/reports?{week}&group=Network", f"/agent/reports.csv?{week}&group=Network"):
        r = get(served, path, session(LEAD))
        assert r.status == 403 and FIGURES not in r.text and "period,created" not in r.text, path
    # Angel leads Network, which has no tickets; the Service Desk is not theirs.
    assert get(served, f"/agent/reports?{week}&group=Service+Desk", session(ANGEL)).status == 403
    network = get(served, f"/agent/reports.csv?{week}", session(ANGEL))  # their own group by default
    assert network.status == 200 and network.text.splitlines()[-1].startswith("total,0,")
    mine = get(served, f"/agent/reports.csv?{week}&group=Service+Desk", session(LEAD))  # control
    assert mine.status == 200 and mine.text.splitlines()[-1].startswith("total,5,")


def test_bad_filters_are_told_not_crashed(served: RunningDaemon) -> None:
    r = get(served, "/agent/reports?since=last+tuesday", session(BOSS))
    assert r.status == 400 and "is not a date" in r.text
    r = get(served, "/agent/reports?desk=NOPE", session(BOSS))
    assert r.status == 400 and "no desk" in r.text
    assert get(served, "/agent/reports?by=%3Cscript%3E", session(BOSS)).status == 200  # unknown by: day
