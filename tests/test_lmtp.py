"""LMTP intake (`[smtp] lmtp = true`): per-recipient replies, the way Postfix and Dovecot expect.

RFC 2033 4.2: after DATA an LMTP server answers once for every recipient accepted at RCPT, in
RCPT order; a recipient refused at RCPT gets no reply after DATA. Checked at the protocol level
with smtplib.LMTP, then with a real Postfix `lmtp` client, which must deliver to the desk and
bounce only the unknown recipient.
"""

from __future__ import annotations

import shutil
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import postfix as pf
import pytest
from conftest import RunningDaemon, Sink, make_mail, need

LMTP_SMTP = '[smtp]\nlmtp = true\nhost = "127.0.0.1"\nport = {port}\n'


@pytest.fixture
def lmtp_desk() -> Iterator[tuple[RunningDaemon, int]]:
    port = pf.free_port()
    desk: Path = pf.desk_dir(
        address="support@example.test",
        key="SUP",
        extra_desks=(("sales@example.test", "SAL"),),
        owner=None,
        smtp=LMTP_SMTP.format(port=port),
    )
    d = RunningDaemon(desk / "config.toml")
    try:
        yield d, port
    finally:
        d.stop()
        shutil.rmtree(desk, ignore_errors=True)


def test_lmtp_answers_once_per_accepted_recipient(lmtp_desk: tuple[RunningDaemon, int]) -> None:
    d, port = lmtp_desk
    raw = make_mail(
        "Quote for 40 seats", sender="buyer@acme.com", to="sales@example.test, support@example.test"
    )
    with smtplib.LMTP("127.0.0.1", port, timeout=10) as lmtp:
        code, _ = lmtp.ehlo()  # smtplib.LMTP sends LHLO
        assert code == 250
        assert lmtp.mail("buyer@acme.com")[0] == 250
        assert lmtp.rcpt("support@example.test")[0] == 250
        code, text = lmtp.rcpt("ghost@example.test")
        assert (code, text) == (550, b"5.1.1 <ghost@example.test>: no such mailbox here")
        assert lmtp.rcpt("sales@example.test")[0] == 250
        replies = [lmtp.data(raw)]  # the first per-recipient reply ...
        replies.append(lmtp.getreply())  # ... and the second, for sales@
        assert [c for c, _ in replies] == [250, 250]
        # Exactly two: the next reply on the wire belongs to NOOP, not to a third recipient.
        assert lmtp.noop() == (250, b"OK")
    d.settle()
    assert sorted(t.key for t in d.tickets()) == ["SAL-1", "SUP-1"]
    assert sorted((i.desk, i.source) for i in d.inbox()) == [("SAL", "lmtp"), ("SUP", "lmtp")]


def test_lmtp_rejects_smtp_greetings(lmtp_desk: tuple[RunningDaemon, int]) -> None:
    """An MTA configured for SMTP against the LMTP port fails loudly instead of half-working."""
    _, port = lmtp_desk
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        assert smtp.ehlo()[0] == 500
        assert smtp.helo()[0] == 500


@pytest.mark.postfix
def test_postfix_lmtp_client_delivers_to_desk_and_bounces_only_the_unknown(
    lmtp_desk: tuple[RunningDaemon, int],
) -> None:
    need(pf.available(), "postfix (Debian package `postfix`) and root, to run a private instance")
    d, port = lmtp_desk
    sink = Sink().start()
    nexthop = f"lmtp:inet:127.0.0.1:{port}"
    postfix = pf.Postfix(
        relay_port=sink.port,
        transport={"support@example.test": nexthop, "ghost@example.test": nexthop},
    )
    try:
        postfix.start()
        raw = make_mail("Badge reader broken", sender="bob@acme.com", to="support@example.test")
        with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as smtp:
            # Postfix itself accepts both; only mailgate knows ghost@ is no desk.
            assert smtp.sendmail("bob@acme.com", ["support@example.test", "ghost@example.test"], raw) == {}
        postfix.wait_log("to=<support@example.test>", count=1)
        postfix.wait_log("to=<ghost@example.test>", count=1)
        postfix.wait_empty()
        log = postfix.log
        [sent] = [line for line in log.splitlines() if "to=<support@example.test>" in line]
        [bounced] = [line for line in log.splitlines() if "to=<ghost@example.test>" in line]
        assert "status=sent (250 2.0.0 OK: queued as" in sent
        assert "status=bounced" in bounced and "550 5.1.1" in bounced
        d.settle()
        [ticket] = d.tickets()
        assert ticket.subject == "Badge reader broken"
        # Bob is told about ghost@ only: one DSN for one recipient.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            dsns = [m for m in sink.messages if m.get_content_type() == "multipart/report"]
            if dsns:
                break
            time.sleep(0.05)
        [dsn] = dsns
        assert dsn["To"] == "bob@acme.com"
        status = dsn.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        assert "ghost@example.test" in status and "support@example.test" not in status
    finally:
        postfix.cleanup()
        sink.stop()
