"""Issue 19 item 10: web forms and portals. Mail relayed by a form — From the portal, Reply-To the
person — makes the person the requester when the portal is listed for the desk
(`[[desks]] portals = [...]`); the acknowledgement goes to the person, who can answer it. Only
configured portals are read this way, and only with a single valid Reply-To."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import RunningDaemon, Sink, make_mail, reply, write_config

from mailgate.config import ConfigError, load_config

PORTAL = "forms@portal.example"


def _config(root: Path, relay_port: int) -> Path:
    path = write_config(root, relay_port=relay_port)
    text = path.read_text().replace('name = "Support"\n', f'name = "Support"\nportals = ["{PORTAL}"]\n', 1)
    path.write_text(text)
    return path


def test_portal_mail_makes_the_person_the_requester(tmp_path: Path, sink: Sink) -> None:
    daemon = RunningDaemon(_config(tmp_path / "desk", sink.port))
    try:
        form = make_mail(
            "Web form: projector broken",
            "Name: Ann Lee\nRoom: 4.12\nThe projector shows nothing.\n",
            sender=PORTAL,
            headers={"Reply-To": "Ann Lee <ann@acme.com>"},
        )
        daemon.send(form, sender=PORTAL)
        daemon.settle()
        [ticket] = daemon.tickets()
        assert ticket.requester == "ann@acme.com"
        [ack] = sink.wait_to("ann@acme.com", 1)
        assert "[SUP-1]" in str(ack["Subject"]) and str(ack["To"]) == "ann@acme.com"
        assert not sink.to(PORTAL), "the acknowledgement went to the portal"
        assert any("relayed by portal forms@portal.example" in str(t) for t in daemon.inbox()[0].trace)

        # Ann answers the acknowledgement from her own mailbox: it threads, she is the requester.
        daemon.send(reply(ack, "ann@acme.com", "It is room 4.12, not 4.21."), sender="ann@acme.com")
        daemon.settle()
        assert daemon.inbox()[-1].disposition == "reply" and len(daemon.tickets()) == 1

        # Not a portal: Reply-To is a hint for mail clients, the sender stays the requester.
        daemon.send(
            make_mail("laptop slow", sender="bob@acme.com", headers={"Reply-To": "eve@evil.example"}),
            sender="bob@acme.com",
        )
        # A portal whose Reply-To is not one valid address, or is the desk itself: the portal.
        daemon.send(
            make_mail("two people", sender=PORTAL, headers={"Reply-To": "a@acme.com, b@acme.com"}),
            sender=PORTAL,
        )
        daemon.send(make_mail("nobody", sender=PORTAL, headers={"Reply-To": "not an address"}), sender=PORTAL)
        daemon.send(
            make_mail("loop", sender=PORTAL, headers={"Reply-To": "support@localhost"}), sender=PORTAL
        )
        daemon.settle()
        requesters = {t.subject: t.requester for t in daemon.tickets()}
        assert requesters == {
            "Web form: projector broken": "ann@acme.com",
            "laptop slow": "bob@acme.com",
            "two people": PORTAL,
            "nobody": PORTAL,
            "loop": PORTAL,
        }, requesters
        assert not sink.to("eve@evil.example") and not sink.to("a@acme.com")
        assert any("is not one valid address" in str(t) for t in daemon.inbox()[-2].trace)
    finally:
        daemon.stop()


def test_a_desk_address_cannot_be_a_portal(tmp_path: Path) -> None:
    path = write_config(tmp_path / "desk")
    path.write_text(
        path.read_text().replace('name = "Support"\n', 'name = "Support"\nportals = ["support@localhost"]\n')
    )
    with pytest.raises(ConfigError, match="desks\\[0\\].portals: support@localhost is a desk address"):
        load_config(path, env={"MAILGATE_SECRET": "x"})
