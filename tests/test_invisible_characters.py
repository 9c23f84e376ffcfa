"""Attacks by characters nobody sees: bidi overrides, isolates, marks and zero-width characters in
a subject or a display name, which change what an agent reads without being seen ("Trojan
Source", CVE-2021-42574). "Refund \u202e]1-PUS[\u202c" shows as "Refund [SUP-1]": a request that
looks like a reply on another ticket. mailgate drops them where a subject or name comes in
(mail/decode.visible, through decode_header_value) and again where it shows one — in the headers
of the mail it sends, on the terminal and on its pages — so a row stored before this cannot do it
either. The controls: Arabic and Hebrew subjects and names arrive whole, and the joiners Persian
and emoji spell with stay.
"""

from __future__ import annotations

import email
import email.policy
import re
import sqlite3
from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, make_mail
from support.console import InitDesk
from support.web import http, link

from mailgate.mail.compose import Outgoing, build
from mailgate.mail.decode import visible

# Every character that reorders or hides text, as the attacks use them.
HIDDEN = re.compile("[\u00ad\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\x1b\x9b]")
SPOOF = "Refund \u202e]1-PUS[\u202c please"  # shows as "Refund [SUP-1] please"
NAME = "Bob \u2067\u202eenilnO tnuoccA\u202c\u2069 \u200bSmith"  # shows "Account Online"
ARABIC = "\u0637\u0644\u0628 \u0627\u0633\u062a\u0631\u062f\u0627\u062f"  # "refund request"
HEBREW_NAME = "\u05d3\u05e0\u05d4 \u05dc\u05d5\u05d9"  # a name, with no mark in it
PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want": ZWNJ is spelling


def _raw(subject: str, name: str, sender: str = "bob@acme.com") -> bytes:
    return make_mail(subject, "Please look.\n", sender=f'"{name}" <{sender}>')


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (SPOOF, "Refund ]1-PUS[ please"),
        (NAME, "Bob enilnO tnuoccA Smith"),
        ("[S\u200dUP-1] hello", "[SUP-1] hello"),  # a joiner beside ASCII only splits a tag
        ("a\x1b[2Jb\u009b2Jc", "a[2Jb2Jc"),  # ESC and CSI redraw a terminal
        ("tag\U000e0041\U000e0042s", "tags"),  # tag characters hide words
        (f"{ARABIC} \u200f(2)", f"{ARABIC} (2)"),  # a mark dropped, the letters kept
        (PERSIAN, PERSIAN),
        (
            "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
            "\U0001f468\u200d\U0001f469\u200d\U0001f467 family",
        ),
        ("\u0915\u094d\u200d\u0937", "\u0915\u094d\u200d\u0937"),  # Devanagari half form
    ],
)
def test_visible_drops_what_is_not_seen_and_keeps_every_letter(text: str, shown: str) -> None:
    assert visible(text) == shown


def test_attack_a_subject_and_name_that_reorder_themselves_are_shown_as_they_are(tmp_path: Path) -> None:
    """Through the installed console script: stored, listed, shown and mailed without them."""
    desk = InitDesk(tmp_path)
    desk.ingest(_raw(SPOOF, NAME))
    desk.ingest(_raw(ARABIC, HEBREW_NAME, sender="dana@acme.com"))  # control
    [(spoof, name), (arabic, hebrew)] = desk.query(
        "SELECT t.subject, p.name FROM ticket t JOIN participant p ON p.ticket_id = t.id AND p.role = 'requester'"
        " ORDER BY t.id"
    )
    assert (spoof, name) == ("Refund ]1-PUS[ please", "Bob enilnO tnuoccA Smith")
    assert (arabic, hebrew) == (ARABIC, HEBREW_NAME)
    listed = desk.cli("tickets", "list").out
    assert "Refund ]1-PUS[ please" in listed and ARABIC in listed and not HIDDEN.search(listed)
    shown = desk.cli("tickets", "show", "SUP-1").out
    assert "SUP-1  Refund ]1-PUS[ please" in shown and not HIDDEN.search(shown)
    parsed = desk.cli("parse", str(tmp_path / "mail-1.eml")).out
    assert "Refund ]1-PUS[ please" in parsed and not HIDDEN.search(parsed)
    # the mail queued to the requester and the agent: our tag first, nothing hidden after it
    for (raw,) in desk.query("SELECT raw FROM outboxitem"):
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        subject = str(msg["Subject"])
        assert not HIDDEN.search(subject) and not HIDDEN.search(str(msg["From"])), subject
        assert subject.startswith(("[SUP-1] Refund ]1-PUS[ please", f"[SUP-2] {ARABIC}")), subject


def test_attack_a_row_stored_before_is_cleaned_where_it_is_shown(tmp_path: Path) -> None:
    """A subject stored as it came, before intake cleaned it: the terminal and the mail header
    still show it without its overrides."""
    desk = InitDesk(tmp_path)
    desk.ingest(_raw("Refund please", "Bob"))
    with sqlite3.connect(desk.db) as conn:
        conn.execute("UPDATE ticket SET subject = ?", (SPOOF,))
    assert "Refund ]1-PUS[ please" in desk.cli("tickets", "list").out
    assert "SUP-1  Refund ]1-PUS[ please" in desk.cli("tickets", "show", "SUP-1").out
    out = Outgoing(
        from_addr="support@localhost",
        from_name=f"{NAME} via Support",
        to=["bob@acme.com"],
        subject=f"[SUP-1] {SPOOF}",
        text="x",
        message_id="m@localhost",
    )
    msg = email.message_from_bytes(build(out), policy=email.policy.default)
    assert str(msg["Subject"]) == "[SUP-1] Refund ]1-PUS[ please"
    assert msg["From"].addresses[0].display_name == "Bob enilnO tnuoccA Smith via Support"


def test_attack_a_body_that_redraws_the_terminal_is_shown_without_its_escapes(tmp_path: Path) -> None:
    """`tickets show` prints what the customer wrote to the admin's terminal: an ESC sequence in
    it (clear the screen, set the window title, hide text) would run there. Shown without the
    controls; the lines and the words stay (the control)."""
    desk = InitDesk(tmp_path)
    body = "Printer broken.\x1b[2J\x1b]0;root shell\x07\nSecond line \x1b[8mhidden\x1b[0m here.\n"
    desk.ingest(make_mail("Printer", body, sender="bob@acme.com"))
    shown = desk.cli("tickets", "show", "SUP-1").out
    assert "\x1b" not in shown and "\x07" not in shown and not HIDDEN.search(shown)
    assert "Printer broken.[2J]0;root shell\nSecond line [8mhidden[0m here." in shown


def test_attack_the_pages_show_the_subject_without_its_overrides(daemon: RunningDaemon, sink: Sink) -> None:
    daemon.send(_raw(SPOOF, NAME, sender="customer1@acme.com"))
    daemon.settle()
    [ack] = sink.wait_to("customer1@acme.com", 1)
    mails = sink.wait_for(2)  # the acknowledgement and the agents' notification
    assert {str(m["Subject"]) for m in mails} == {"[SUP-1] Refund ]1-PUS[ please"}
    page = http("GET", link(ack, "View request:")).text
    assert "Refund ]1-PUS[ please" in page and not HIDDEN.search(page)
