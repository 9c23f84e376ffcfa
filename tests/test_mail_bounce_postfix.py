"""Postfix's own bounces and delay notices, made by a real Postfix here and read by mailgate.

A real Postfix instance (tests/postfix.py) relays our outgoing mail to a customer MX (an aiosmtpd
server) that refuses one recipient for good (550 5.1.1) and one for now (451 4.2.1). Postfix then
writes what it writes in the field: a bounce (RFC 3464 multipart/report with its "I'm sorry to
have to inform you" notice) and, with `delay_warning_time` set, a delay warning ("THIS IS A
WARNING ONLY"). `mailgate parse --json` must call the first a permanent failure and the second a
temporary one, each with the recipient, the status and our original Message-ID.

With MAILGATE_CAPTURE_FIXTURES=1 the captured mails are also written to tests/fixtures/mail/
(postfix_real_bounce.eml, postfix_real_delay.eml), which is how those fixtures were made.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import postfix as pf
import pytest
from aiosmtpd.controller import Controller
from conftest import free_port, need

pytestmark = pytest.mark.postfix

FIXTURES = Path(__file__).parent / "fixtures" / "mail"
DESK = "support@example.test"
GONE = "gone@customer.test"
SLOW = "slow@customer.test"


class CustomerMX:
    """The customer's MX: refuses GONE for good and SLOW for now; keeps what reaches DESK (the
    notices Postfix sends back to our envelope sender)."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.cond = threading.Condition()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if address == GONE:
            return "550 5.1.1 <gone@customer.test>: Recipient address rejected: User unknown"
        if address == SLOW:
            return "451 4.2.1 <slow@customer.test>: Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.cond:
            self.received.append(envelope.original_content)
            self.cond.notify_all()
        return "250 OK"

    def wait_for(self, needle: bytes, timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for raw in self.received:
                    if needle in raw:
                        return raw
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no mail containing {needle!r}; got {len(self.received)}")
                self.cond.wait(left)


@pytest.fixture(scope="module")
def notices() -> Iterator[dict[str, bytes]]:
    need(pf.available(), "Postfix (Debian postfix) is not installed")
    mx = CustomerMX()
    port = free_port()
    controller = Controller(mx, hostname="127.0.0.1", port=port)
    controller.start()
    postfix = pf.Postfix(relay_port=port, transport={})
    # Postfix's delay warning (off by default) after one second in the queue, so a test sees it.
    with open(Path(postfix.etc) / "main.cf", "a") as cf:
        cf.write("delay_warning_time = 1s\nbounce_queue_lifetime = 0\nmaximal_queue_lifetime = 1h\n")
    try:
        postfix.start()
        for rcpt, mid in ((GONE, "<out.gone.1@example.test>"), (SLOW, "<out.slow.1@example.test>")):
            msg = EmailMessage()
            msg["From"] = f"Support <{DESK}>"
            msg["To"] = rcpt
            msg["Subject"] = "[SUP-7] Your request was received"
            msg["Message-ID"] = mid
            msg.set_content("We got your mail and will answer soon.\n")
            with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as smtp:
                smtp.send_message(msg, from_addr=DESK, to_addrs=[rcpt])
        bounce = mx.wait_for(b"out.gone.1@example.test")
        delay = mx.wait_for(b"out.slow.1@example.test")
        yield {"bounce": bounce, "delay": delay}
    finally:
        postfix.cleanup()
        controller.stop()
    if os.environ.get("MAILGATE_CAPTURE_FIXTURES"):
        (FIXTURES / "postfix_real_bounce.eml").write_bytes(bounce)
        (FIXTURES / "postfix_real_delay.eml").write_bytes(delay)


def parse_json(raw: bytes, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "notice.eml"
    path.write_bytes(raw)
    out = subprocess.run(
        [sys.executable, "-m", "mailgate", "parse", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


def test_postfix_bounce_is_a_permanent_failure_of_the_refused_recipient(
    notices: dict[str, bytes], tmp_path: Path
) -> None:
    data = parse_json(notices["bounce"], tmp_path)
    assert data["is_bounce"], data
    bounce = data["bounce"]
    assert bounce["failed_recipients"] == [GONE]
    assert bounce["permanent"] is True and bounce["kind"] == "failed"
    assert bounce["status"] == "5.1.1"
    assert "User unknown" in bounce["diagnostic"]
    assert bounce["original_message_id"] == "out.gone.1@example.test"


def test_postfix_delay_warning_is_temporary_not_a_failure(notices: dict[str, bytes], tmp_path: Path) -> None:
    assert b"THIS IS A WARNING ONLY" in notices["delay"]
    data = parse_json(notices["delay"], tmp_path)
    assert data["is_bounce"], data
    bounce = data["bounce"]
    assert bounce["failed_recipients"] == [SLOW]
    assert bounce["permanent"] is False and bounce["kind"] == "delayed"
    assert bounce["status"].startswith("4.")
    assert bounce["original_message_id"] == "out.slow.1@example.test"
