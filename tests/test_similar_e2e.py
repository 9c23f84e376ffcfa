"""Similar tickets, likely duplicates, `mailgate tickets search` and knowledge-base articles on the
request page (issue 23), by mail over SMTP through `mailgate run` as its own process.

Two desks (SUP, HR) and two groups (IT, Billing): the new-ticket notification lists similar
tickets of the same desk only, and only those the agent's role and groups let them see; a
second request of the same person with the same subject within a day is flagged as a likely
duplicate, and `#merge KEY` on the notification merges it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from conftest import Sink, body_of, deliver, free_port, make_mail, reply, scenario_config
from support.daemon_process import DaemonProcess, wait_settled
from support.web import csrf_of, http, link

SUP = "support@localhost"
HR = "hr@localhost"
TRIAGE = "triage@desk.example"
IT1 = "it1@desk.example"  # IT's lead: new IT tickets are theirs
IT2 = "it2@desk.example"  # IT member, told of every new IT ticket (notify_new = members)
BILL = "bill1@desk.example"
ANN, BOB, CAROL, DAVE, EVE = (f"{n}@client.example" for n in ("ann", "bob", "carol", "dave", "eve"))

TEAM = f"""
triage = "{TRIAGE}"
[[agents]]
address = "{TRIAGE}"
[[agents]]
address = "{IT1}"
[[agents]]
address = "{IT2}"
[[agents]]
address = "{BILL}"

[[groups]]
name = "IT"
members = ["{IT1}", "{IT2}"]
lead = "{IT1}"
notify_new = "members"

[[groups]]
name = "Billing"
members = ["{BILL}"]
lead = "{BILL}"
"""
ROUTING = """
[[rules]]
name = "billing"
when.subject.words = ["invoice"]
then = { group = "Billing" }

[[rules]]
name = "guest-wifi"
when.text.words = ["guest wifi"]
then = { group = "IT", auto_reply = "kb_guest_wifi" }

[[rules]]
name = "it"
when.text.words = ["printer", "laptop", "wifi"]
then = { group = "IT" }
"""


@dataclass
class Desk:
    daemon: DaemonProcess
    sink: Sink
    cfg: Path
    db: object

    def send(self, subject: str, body: str, sender: str, rcpt: str = SUP) -> None:
        deliver(self.daemon.port, make_mail(subject, body, sender=sender, to=rcpt), sender=sender, rcpt=rcpt)
        wait_settled(self.db, timeout=60)

    def answer(self, note: EmailMessage, agent: str, text: str) -> None:
        to = str(note["Reply-To"].addresses[0].addr_spec)
        deliver(self.daemon.port, reply(note, agent, text), sender=agent, rcpt=to)
        wait_settled(self.db, timeout=60)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MAILGATE_SECRET": "test-secret"}
        env.pop("MAILGATE_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "mailgate", "--config", str(self.cfg), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[Desk]:
    from mailgate.config import load_config
    from mailgate.store.db import Database

    port = free_port()
    cfg = scenario_config(
        tmp_path / "desk",
        relay_port=sink.port,
        desks=[(SUP, "SUP", "default"), (HR, "HR", "default")],
        team=TEAM,
        routing=ROUTING,
    )
    cfg.write_text(re.sub(r"(\[smtp\]\nhost = \"127.0.0.1\"\nport = )\d+", rf"\g<1>{port}", cfg.read_text()))
    daemon = DaemonProcess(cfg, port, env={"MAILGATE_WEB_PORT": "0"})
    daemon.start()
    db = Database(load_config(cfg, env={"MAILGATE_SECRET": "test-secret"}).database_url, upgrade=False)
    try:
        yield Desk(daemon, sink, cfg, db)
    finally:
        daemon.stop()
        db.dispose()


def similar_block(note: EmailMessage) -> str:
    """What the notification says between the request and the footer about other tickets."""
    text = body_of(note)
    start = min(
        (i for i in (text.find("LIKELY DUPLICATE"), text.find("Similar tickets:")) if i >= 0), default=-1
    )
    return text[start : text.find("\n-- \n")] if start >= 0 else ""


def test_similar_tickets_of_the_desk_that_the_agent_may_see_and_a_likely_duplicate(
    desk: Desk, sink: Sink
) -> None:
    desk.send("Printer on floor 3 jams", "The printer on floor 3 jams on every page.\n", ANN)  # SUP-1, IT
    desk.send("Invoice for the printer is wrong", "We were charged twice for the printer.\n", BOB)  # SUP-2
    desk.send("Printer jams in the HR office", "Our printer jams too.\n", CAROL, rcpt=HR)  # HR-1
    first = sink.wait_to(IT1, 1, timeout=30)[-1]
    assert similar_block(first) == ""  # nothing like it yet: no block at all

    desk.send("Re: Printer on floor 3 jams", "Again! The printer on floor 3 jams.\n", ANN)  # SUP-3
    for agent in (IT1, IT2):
        note = sink.wait_to(agent, 2, timeout=30)[-1]
        assert "SUP-3" in str(note["Subject"])
        block = similar_block(note)
        assert "LIKELY DUPLICATE of SUP-1 (open): Printer on floor 3 jams" in block, body_of(note)
        assert '"#merge SUP-1"' in block
        assert re.search(r"^  SUP-1  open  \d{4}-\d\d-\d\d  Printer on floor 3 jams$", block, re.M), block
        assert "SUP-2" not in block  # Billing's ticket: neither IT agent may see it
        assert "HR-1" not in block  # another desk's
        assert "SUP-3" not in block  # not itself

    # Billing's agent sees Billing's ticket, and no IT ticket, however alike.
    desk.send("Invoice for printer toner", "The printer toner invoice is wrong.\n", DAVE)  # SUP-4
    bill = similar_block(sink.wait_to(BILL, 2, timeout=30)[-1])
    assert "SUP-2" in bill and "LIKELY DUPLICATE" not in bill  # another requester: similar only
    assert "SUP-1" not in bill and "SUP-3" not in bill and "HR-1" not in bill

    # `tickets show` tells the operator too.
    shown = desk.cli("tickets", "show", "SUP-3")
    assert shown.returncode == 0, shown.stderr
    assert "likely a duplicate of SUP-1" in shown.stdout
    data = json.loads(desk.cli("tickets", "show", "SUP-3", "--json").stdout)
    assert data["likely_duplicate_of"] == "SUP-1" and data["similar"][0] == "SUP-1"

    # One line away: the assignee merges the duplicate from the notification.
    note = sink.wait_to(IT1, 2)[-1]
    desk.answer(note, IT1, "#merge SUP-1\n")
    merged = json.loads(desk.cli("tickets", "show", "SUP-3", "--json").stdout)
    assert any(e["kind"] == "merged-into" for e in merged["events"]), merged["events"]

    # The same index answers `mailgate tickets search`.
    found = desk.cli("tickets", "search", "printer jams", "--desk", "SUP")
    assert found.returncode == 0, found.stderr
    keys = [line.split()[0] for line in found.stdout.splitlines()[1:]]
    assert keys[:2] == ["SUP-1", "SUP-3"] or keys[:2] == ["SUP-3", "SUP-1"], found.stdout
    assert "HR-1" not in keys and "SUP-2" not in keys  # SUP-2 has "printer" but not "jams"
    billing = json.loads(desk.cli("tickets", "search", "printer", "--group", "billing", "--json").stdout)
    assert sorted(h["key"] for h in billing) == ["SUP-2", "SUP-4"]
    nothing = desk.cli("tickets", "search", 'NEAR("printer" -jams) OR \'x', "--status", "closed")
    assert nothing.returncode == 0 and "no tickets match" in nothing.stdout, nothing.stderr


def test_the_request_page_shows_the_knowledge_base_articles_sent(desk: Desk, sink: Sink) -> None:
    desk.send("Visitors", "What is the guest wifi password for our visitors?\n", EVE)
    kb = body_of(sink.wait_to(EVE, 1, timeout=30)[-1])
    assert 'The guest Wi-Fi network is "Guest"' in kb  # the rule's kb_* auto-reply
    note = sink.wait_to(IT1, 1, timeout=30)[-1]
    desk.answer(note, IT1, "#canned kb_password_reset\n\nAnd your own password: see below.")
    answer = sink.wait_to(EVE, 2, timeout=30)[-1]
    page = http("GET", link(answer, "View request:"))
    assert page.status == 200
    assert "Help articles sent to you" in page.text
    assert '<a href="#kb-kb_guest_wifi">Guest Wi-Fi</a>' in page.text
    assert '<a href="#kb-kb_password_reset">Resetting your password</a>' in page.text
    assert "The guest Wi-Fi network is &#34;Guest&#34;" in page.text  # shown, escaped as HTML

    # Control: a request no article was sent on has no such section.
    desk.send("Laptop is slow", "My laptop takes ages to start.\n", ANN)
    plain = http("GET", link(sink.wait_to(ANN, 1, timeout=30)[-1], "View request:"))
    assert plain.status == 200 and "Help articles" not in plain.text


def _agent_session(desk: Desk, sink: Sink, base: str, agent: str) -> str:
    """Sign `agent` in as a browser does: ask for a link, open the mailed one, confirm."""
    page = http("GET", f"{base}/agent/signin")
    cookie = page.headers["set-cookie"].split(";")[0]
    before = len(sink.to(agent))
    asked = http(
        "POST",
        f"{base}/agent/signin",
        {"address": agent, "csrf": csrf_of(page.text)},
        {"Cookie": cookie, "Origin": base},
    )
    assert asked.status == 200
    mail = sink.wait_to(agent, before + 1, timeout=30)[-1]
    url = link(mail, "Sign in:")
    shown = http("GET", url)
    confirm = http("POST", url, {"csrf": csrf_of(shown.text)}, {"Origin": base})
    assert confirm.status == 303
    return str(confirm.headers["set-cookie"]).split(";")[0]


def test_agent_web_search_uses_the_index_and_shows_only_what_the_agent_may_see(
    desk: Desk, sink: Sink
) -> None:
    desk.send("Printer on floor 3 jams", "The printer on floor 3 jams.\n", ANN)  # SUP-1, IT
    desk.send("Invoice for the printer is wrong", "Charged twice.\n", BOB)  # SUP-2, Billing
    base = link(sink.wait_to(ANN, 1, timeout=30)[-1], "View request:").split("/r/")[0]
    session = {"Cookie": _agent_session(desk, sink, base, BILL)}

    def results(q: str) -> str:
        page = http("GET", f"{base}/agent?q={urllib.parse.quote(q)}", headers=session)
        assert page.status == 200, page.text[:500]
        return page.text.split('<section id="results">', 1)[1].split("</section>", 1)[0]

    found = results("print")  # a prefix: the index, not LIKE
    assert "SUP-2" in found and "Invoice for the printer" in found
    assert "Printer on floor 3" not in found  # IT's ticket: Billing's agent may not see it
    for hostile in ('"', "NEAR(printer", "printer OR *", "-printer", "') OR 1=1 --", "%"):
        assert "Printer on floor 3" not in results(hostile)
