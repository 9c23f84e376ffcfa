"""What requesters notice about their mail beyond threading: attachments kept once by content
(names never paths) or refused with a reason they are told, turning notifications off by one
mail (List-Unsubscribe), bounces of our own mail attached and never answered, and the handler
order that decides which kind a mail is."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

from conftest import RunningDaemon, Sink, body_of, make_mail, reply, write_config
from sqlalchemy import select

from mailgate.pipeline.handlers import registry


def _with_attachments(files: list[tuple[str, bytes]], subject: str = "logs attached") -> bytes:
    msg = EmailMessage()
    msg["From"] = "customer1@acme.com"
    msg["To"] = "support@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<att-{len(files)}-{subject.replace(' ', '')}@acme.com>"
    msg.set_content("See the attached files.\n")
    for name, data in files:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def test_attachments_stored_once_and_oversize_refused_with_a_reason(tmp_path: Path, sink: Sink) -> None:
    cfg = write_config(tmp_path / "desk", relay_port=sink.port)
    text = cfg.read_text() + "\n[limits]\nmax_attachment_size = 1000\nmax_attachments = 2\n"
    cfg.write_text(text)
    d = RunningDaemon(cfg)
    try:
        same = b"A" * 500
        d.send(
            _with_attachments(
                [
                    ("../../etc/passwd", same),
                    ("copy.bin", same),
                    ("big.bin", b"B" * 5000),
                    ("fourth.bin", b"C" * 10),
                ]
            )
        )
        d.settle()
        from mailgate.store.models import Message

        with d.db.session() as s:
            [msg] = s.execute(select(Message)).scalars().all()
        kept = [a for a in msg.attachments if "sha256" in a]
        refused = [a["rejected"] for a in msg.attachments if "rejected" in a]
        assert [a["filename"] for a in kept] == ["passwd", "copy.bin"]  # the path part is gone
        assert kept[0]["sha256"] == kept[1]["sha256"]
        blobs = [p for p in (tmp_path / "desk" / "state" / "attachments").rglob("*") if p.is_file()]
        assert len(blobs) == 1 and blobs[0].read_bytes() == same  # stored once by content
        assert refused[0].startswith("big.bin (") and "over the" in refused[0]
        assert "fourth.bin" in refused[1] and "limit of 2 attachments" in refused[1]
        told = [m for m in sink.wait_to("customer1@acme.com", 2) if "not kept" in body_of(m)]
        assert len(told) == 1 and "big.bin" in body_of(told[0]) and "fourth.bin" in body_of(told[0])
        assert not (tmp_path / "etc").exists()
    finally:
        d.stop()


def test_list_unsubscribe_turns_off_one_tickets_mail(daemon: RunningDaemon, sink: Sink) -> None:
    daemon.send(make_mail("noisy ticket", cc="watcher@acme.com"))
    daemon.settle()
    [ack] = sink.wait_to("customer1@acme.com", 1)
    unsub = str(ack["List-Unsubscribe"]).strip()  # <https…one-click>, <mailto:…> (RFC 8058)
    mailto = unsub[unsub.index("<mailto:") :]
    assert mailto.startswith("<mailto:support+sup-1-") and "-off@localhost" in mailto
    address = mailto[len("<mailto:") :].split("?", 1)[0]
    # someone else cannot unsubscribe the customer with the customer's link
    daemon.send(
        make_mail("unsubscribe", "", sender="mallory@evil.example", to=address),
        sender="mallory@evil.example",
        rcpt=address,
    )
    daemon.send(make_mail("unsubscribe", "", to=address), rcpt=address)
    daemon.settle()
    assert [i.disposition for i in daemon.inbox()] == ["ticket-created", "rejected", "unsubscribed"]
    from mailgate.store.models import Participant

    with daemon.db.session() as s:
        notify = {p.address: p.notify for p in s.execute(select(Participant)).scalars()}
    assert notify == {"customer1@acme.com": False, "watcher@acme.com": True}


def test_bounce_of_our_ack_is_noted_and_never_answered(daemon: RunningDaemon, sink: Sink) -> None:
    daemon.send(make_mail("hello", sender="gone@acme.com"), sender="gone@acme.com")
    daemon.settle()
    [ack] = sink.wait_to("gone@acme.com", 1)
    [verp] = sink.envelope_from("gone@acme.com")  # where an MTA sends the report (VERP)
    dsn = EmailMessage()
    dsn["From"] = "MAILER-DAEMON@mx.acme.com"
    dsn["To"] = verp
    dsn["Subject"] = "Undelivered Mail Returned to Sender"
    dsn["Message-ID"] = "<dsn-1@mx.acme.com>"
    dsn["Auto-Submitted"] = "auto-replied"
    dsn.set_content("This is the mail system at host mx.acme.com.\n")
    dsn.make_mixed()
    report = EmailMessage()
    report.set_content(
        "Reporting-MTA: dns; mx.acme.com\n\nFinal-Recipient: rfc822; gone@acme.com\nAction: failed\n"
        "Status: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\n"
    )
    dsn.attach(report)
    headers = EmailMessage()
    headers.set_content(f"Message-ID: {ack['Message-ID']}\nSubject: {ack['Subject']}\n")
    dsn.attach(headers)
    raw = dsn.as_bytes().replace(b"multipart/mixed", b"multipart/report; report-type=delivery-status", 1)
    raw = raw.replace(
        b'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: 7bit\n\nReporting',
        b"Content-Type: message/delivery-status\n\nReporting",
        1,
    )
    daemon.send(raw, sender="", rcpt=verp)
    daemon.settle()
    item = daemon.inbox()[-1]
    assert item.disposition == "bounce", item.trace
    assert any("no automatic mail to gone@acme.com" in t["decision"] for t in item.trace), item.trace
    assert len(daemon.tickets()) == 1
    assert len(sink.to("gone@acme.com")) == 1  # nothing more is sent to a dead address
    # a later agent update to this ticket does not go to the bounced address either
    daemon.send(
        reply(ack, "gone@acme.com", "are you there?"),
        sender="gone@acme.com",
        rcpt=str(ack["Reply-To"].addresses[0].addr_spec),
    )
    daemon.settle()
    assert len(sink.to("gone@acme.com")) == 1


def test_handler_order_is_pinned(daemon: RunningDaemon) -> None:
    names = [h.name for h in registry(daemon.daemon.runner.services)]
    assert names == ["bounce", "unsubscribe", "agent-reply", "reply", "new-ticket"]
