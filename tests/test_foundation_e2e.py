"""The foundation, end to end over real sockets: smtplib → the daemon's aiosmtpd listener →
ticket → acknowledgement received by an aiosmtpd sink standing in for the relay."""

from __future__ import annotations

import smtplib

import pytest
from conftest import RunningDaemon, Sink, make_mail
from sqlalchemy import select


def test_new_mail_makes_ticket_and_acknowledgement(daemon: RunningDaemon, sink: Sink) -> None:
    raw = make_mail("system is down", message_id="<orig-1@acme.com>")
    assert daemon.send(raw) == {}
    daemon.settle()
    [ticket] = daemon.tickets()
    assert ticket.key == "SUP-1"
    assert ticket.requester == "customer1@acme.com"
    [ack] = sink.wait_to("customer1@acme.com", 1)
    assert ack["Subject"] == "[SUP-1] system is down"
    assert ack["To"] == "customer1@acme.com"
    assert ack["In-Reply-To"] == "<orig-1@acme.com>"
    assert "<orig-1@acme.com>" in ack["References"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert "support+sup-1-" in ack["Reply-To"]
    assert "We're on it" in ack.get_content()


def test_replies_thread_by_tag_and_by_in_reply_to_alone(daemon: RunningDaemon, sink: Sink) -> None:
    daemon.send(make_mail("printer on fire", message_id="<p1@acme.com>"))
    daemon.settle()
    [ack] = sink.wait_to("customer1@acme.com", 1)
    # 1) a reply keeping the subject tag, with no threading headers at all (a webmail that drops them)
    daemon.send(make_mail("RE: AW: [SUP-1] printer on fire", "still burning"))
    # 2) a reply whose client removed the tag, carrying only In-Reply-To
    daemon.send(make_mail("printer on fire", "now it smokes", in_reply_to=ack["Message-ID"]))
    # 3) Exchange-style References separated by commas, tag removed, no In-Reply-To
    daemon.send(make_mail("Re: printer", "and now?", references=f"<unknown@x>,{ack['Message-ID']}"))
    daemon.settle()
    assert [t.key for t in daemon.tickets()] == ["SUP-1"]
    decisions = [i.disposition for i in daemon.inbox()]
    assert decisions == ["ticket-created", "reply", "reply", "reply"]
    finders = [" ".join(s["decision"] for s in i.trace if s["stage"] == "thread") for i in daemon.inbox()[1:]]
    assert "subject-tag: hit" in finders[0]
    assert "in-reply-to: hit" in finders[1]  # our Message-ID is stored: it carries no token
    assert "references: hit" in finders[2]
    # no second acknowledgement for replies: one mail queued for the requester, and it arrived
    assert [r.kind for r in daemon.outbox_to("customer1@acme.com")] == ["acknowledgement"]
    assert len(sink.to("customer1@acme.com")) == 1


def test_in_reply_to_a_stored_message_threads(daemon: RunningDaemon, sink: Sink) -> None:
    """A CC'd person answers the requester's original (not our mail): In-Reply-To names it."""
    daemon.send(make_mail("VPN broken", message_id="<orig-vpn@acme.com>", cc="boss@acme.com"))
    daemon.send(
        make_mail("Re: VPN broken", "me too", sender="boss@acme.com", in_reply_to="<orig-vpn@acme.com>"),
        sender="boss@acme.com",
    )
    daemon.settle()
    assert len(daemon.tickets()) == 1
    trace = daemon.inbox()[1].trace
    assert any("in-reply-to: hit" in s["decision"] for s in trace)


def test_foreign_and_unknown_tags_start_new_tickets(daemon: RunningDaemon, sink: Sink) -> None:
    daemon.send(make_mail("[JIRA-5] build broken"))
    daemon.send(make_mail("Re: [SUP-99] who is this"))
    daemon.settle()
    tickets = daemon.tickets()
    assert [t.key for t in tickets] == ["SUP-1", "SUP-2"]
    acks = sink.wait_to("customer1@acme.com", 2)
    assert sorted(m["Subject"] for m in acks) == [
        "[SUP-1] [JIRA-5] build broken",
        "[SUP-2] [SUP-99] who is this",
    ]


def test_duplicate_delivery_is_dropped_at_intake(daemon: RunningDaemon, sink: Sink) -> None:
    raw = make_mail("same message twice", message_id="<dup@acme.com>")
    daemon.send(raw)
    daemon.send(raw)  # a second MX host delivers the same message
    daemon.settle()
    assert len(daemon.inbox()) == 1
    assert len(daemon.tickets()) == 1


def test_unknown_recipient_550_and_oversize_552(daemon: RunningDaemon) -> None:
    with pytest.raises(smtplib.SMTPRecipientsRefused) as err:
        daemon.send(make_mail(), rcpt="nobody@localhost")
    code, _ = err.value.recipients["nobody@localhost"]
    assert code == 550
    with smtplib.SMTP("127.0.0.1", daemon.port) as smtp:
        smtp.ehlo()
        assert int(smtp.esmtp_features["size"]) == daemon.config.smtp.max_message_size
        big = make_mail(body="x" * 100) + b"y" * (daemon.config.smtp.max_message_size + 10)
        with pytest.raises(smtplib.SMTPResponseException) as err2:
            smtp.sendmail("a@b.c", ["support@localhost"], big)
        assert err2.value.smtp_code == 552
    assert daemon.inbox() == []


def test_a_failing_message_is_quarantined_and_the_next_is_processed(
    daemon: RunningDaemon,
    sink: Sink,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    from mailgate.pipeline import stages

    real = stages.thread

    def exploding(ctx, config, repo):  # type: ignore[no-untyped-def]
        if "explode" in ctx.mail.subject:
            raise RuntimeError("simulated bug in threading")
        return real(ctx, config, repo)

    monkeypatch.setattr(stages, "thread", exploding)
    explode = make_mail("please explode")
    daemon.send(explode)
    daemon.send(make_mail("a normal request"))
    daemon.settle()
    first, second = daemon.inbox()
    assert first.state == "failed" and first.stage == "thread"
    assert "simulated bug" in (first.reason or "")
    # The admin can take the quarantined message out as it came, to look at it in a mail client.
    from mailgate.cli import main

    monkeypatch.setenv("MAILGATE_DATABASE_URL", daemon.config.database_url)  # the daemon's, on either backend
    capsysbinary.readouterr()
    assert (
        main(["--config", str(daemon.config.root / "config.toml"), "inbox", "show", str(first.id), "--raw"])
        == 0
    )
    assert capsysbinary.readouterr().out.replace(b"\r\n", b"\n") == explode.replace(b"\r\n", b"\n")
    assert second.state == "done" and second.disposition == "ticket-created"
    assert [t.subject for t in daemon.tickets()] == ["a normal request"]
    # fixed: retry processes it
    monkeypatch.setattr(stages, "thread", real)
    from mailgate.store import inbox

    with daemon.db.session() as s:
        assert inbox.retry(s, first.id)
    daemon.settle()
    assert sorted(t.subject for t in daemon.tickets()) == ["a normal request", "please explode"]


def test_outbox_retries_after_relay_refuses(daemon: RunningDaemon, sink: Sink) -> None:
    from mailgate.store.models import OutboxItem

    sink.handler.reply = "451 4.3.0 try again later"
    daemon.send(make_mail("relay is grumpy"))
    daemon.settle(outbox=False)
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the sender has tried at least once
        with daemon.db.session() as s:
            items = s.execute(select(OutboxItem)).scalars().all()
        if any(i.attempts >= 1 for i in items):
            break
        time.sleep(0.05)
    # nothing lost, nothing sent: all still queued; the relay's answer is recorded on the one tried
    assert items and all(i.state in ("pending", "sending") for i in items)
    assert any(i.attempts >= 1 and "451" in (i.last_error or "") for i in items)
    assert sink.messages == []
    sink.handler.reply = None
    [ack] = sink.wait_to("customer1@acme.com", 1, timeout=15)
    assert ack["Subject"] == "[SUP-1] relay is grumpy"
    sink.wait_for(len(items), timeout=15)
    daemon.settle()
    with daemon.db.session() as s:
        assert {i.state for i in s.execute(select(OutboxItem)).scalars()} == {"sent"}


def test_permanent_relay_failure_is_recorded(daemon: RunningDaemon, sink: Sink) -> None:
    sink.handler.reply = "550 5.1.1 mailbox unavailable"
    daemon.send(make_mail("to a dead mailbox"))
    daemon.settle()
    import time

    from mailgate.store.models import OutboxItem

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with daemon.db.session() as s:
            [item] = s.execute(select(OutboxItem).where(OutboxItem.kind == "acknowledgement")).scalars().all()
        if item.state == "failed":
            break
        time.sleep(0.05)
    assert item.state == "failed" and "550" in (item.last_error or "")
