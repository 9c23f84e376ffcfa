"""Issue 19 item 11: "RE: SUP-1" — the key without brackets — threads onto SUP-1 when it leads the
subject and names an existing ticket of this desk; in the middle of a new request's subject, inside
a word, or another desk's key, it does not (domain/threading.py says why: Zammad's hook anywhere,
ours only where it leads). Membership still decides who may join: a stranger is held."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, make_mail, write_config

from mailgate.domain.threading import bare_subject_key, find_ticket


@pytest.mark.parametrize(
    ("subject", "key"),
    [
        ("RE: SUP-1", ("SUP", 1)),
        ("Re: Fwd: SUP-1: the printer again", ("SUP", 1)),
        ("AW: SUP-1 – Drucker", ("SUP", 1)),
        ("SUP-1", ("SUP", 1)),
        ("SUP-1, any news?", ("SUP", 1)),
        ("Same as SUP-1 but for printers", None),
        ("RE: printers (was SUP-1)", None),
        ("SUP-12a firmware", None),
        ("SUP-1-2 range", None),
        ("SUP-1.5 release notes", None),
        ("RE: [JIRA-5] SUP-1", None),
        # Outlook's localised prefixes: es forward, hu reply, el reply, tr forward, nl forward
        ("RV: SUP-1 impresora", ("SUP", 1)),
        ("Vá: SUP-1", ("SUP", 1)),
        ("ΑΠ: SUP-1", ("SUP", 1)),
        ("İLT: SUP-1", ("SUP", 1)),
        ("Doorst: RE: SUP-1", ("SUP", 1)),
        ("Vacation: SUP-1", None),
    ],
)
def test_bare_key_only_where_it_leads_the_subject(subject: str, key: tuple[str, int] | None) -> None:
    assert bare_subject_key(subject) == key


class Keys:
    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)

    def key_for_message_id(self, message_id: str) -> str | None:
        return None

    def key_exists(self, key: str) -> bool:
        return key in self.keys


def _find(subject: str, desk: str = "SUP", *existing: str) -> str | None:
    hit, _ = find_ticket(
        desk_key=desk, subject=subject, recipients=[], in_reply_to=None, references=[], lookup=Keys(*existing)
    )
    return hit.key if hit else None


def test_finder_needs_this_desks_existing_ticket_and_comes_after_the_tag() -> None:
    assert _find("RE: SUP-1", "SUP", "SUP-1") == "SUP-1"
    assert _find("RE: SUP-2", "SUP", "SUP-1") is None  # no such ticket
    assert _find("RE: CARE-1", "SUP", "CARE-1") is None  # another desk's key
    assert _find("RE: XSUP-1", "SUP", "SUP-1") is None  # inside a word
    # A bracketed tag is the stronger evidence: "SUP-1 [SUP-2]" is SUP-2.
    assert _find("SUP-1 [SUP-2]", "SUP", "SUP-1", "SUP-2") == "SUP-2"


def test_bare_key_threads_by_mail_and_strangers_are_held(tmp_path: Path, sink: Sink) -> None:
    daemon = RunningDaemon(write_config(tmp_path / "desk", relay_port=sink.port))
    try:
        daemon.send(make_mail("printer jammed", "Tray 2 is stuck.\n", message_id="<p1@acme.com>"))
        daemon.settle()
        # A new mail (no In-Reply-To, no token, no brackets) from the requester: SUP-1.
        daemon.send(make_mail("RE: SUP-1", "Still stuck this morning.\n", message_id="<p2@acme.com>"))
        # The same key in the middle of a new request: a new ticket.
        daemon.send(
            make_mail("Same as SUP-1 but for the scanner", "Scanner too.\n", message_id="<p3@acme.com>")
        )
        # A key inside a word, an unknown ticket, another desk's key: new tickets.
        daemon.send(make_mail("RE: XSUP-1 rollout", "x\n", message_id="<p4@acme.com>"))
        daemon.send(make_mail("RE: SUP-99", "y\n", message_id="<p5@acme.com>"))
        daemon.send(make_mail("RE: CARE-1", "z\n", message_id="<p6@acme.com>"))
        # A stranger who knows the key is held on SUP-1, not let in and not a new ticket.
        daemon.send(
            make_mail(
                "Re: SUP-1", "Let me in.\n", sender="mallory@evil.example", message_id="<m1@evil.example>"
            ),
            sender="mallory@evil.example",
        )
        daemon.settle()
        tickets = {t.key: t for t in daemon.tickets()}
        assert sorted(tickets, key=lambda k: int(k.split("-")[1])) == [
            "SUP-1",
            "SUP-2",
            "SUP-3",
            "SUP-4",
            "SUP-5",
        ]
        by_mid = {i.message_id: i for i in daemon.inbox()}
        sup1 = tickets["SUP-1"].id
        assert (by_mid["p2@acme.com"].ticket_id, by_mid["p2@acme.com"].disposition) == (sup1, "reply")
        assert any("subject starts with the key SUP-1" in str(t) for t in by_mid["p2@acme.com"].trace)
        assert by_mid["p3@acme.com"].disposition == "ticket-created"
        assert tickets["SUP-2"].subject == "Same as SUP-1 but for the scanner"
        for mid in ("p4@acme.com", "p5@acme.com", "p6@acme.com"):
            assert by_mid[mid].disposition == "ticket-created", mid
        assert (by_mid["m1@evil.example"].ticket_id, by_mid["m1@evil.example"].disposition) == (
            sup1,
            "held:stranger",
        )
        assert not sink.to("mallory@evil.example")
    finally:
        daemon.stop()
