"""mailgate inside a real Postfix (3.x, `postfix -c DIR`, loopback only), in front and behind.

1. Postfix in front, `pipe` transport: mail for support@ runs `mailgate ingest` as uid nobody;
   while mailgate's database is down it exits 75 and Postfix keeps the mail deferred; after the
   fix, `postqueue -f` delivers it, and it becomes exactly one ticket.
2. Postfix in front over LMTP and behind as the relay: a customer's mail reaches `mailgate run`
   through Postfix, the acknowledgement leaves through Postfix to the customer's MX (an aiosmtpd
   sink), and the customer's reply to it comes back through Postfix onto the same ticket.
3. The same, with a customer's MX that refuses the customer for good: Postfix's own bounce goes
   back to the acknowledgement's envelope sender (VERP, support+<token>-b@) and through Postfix
   into mailgate, which quiets the address and tells the agent.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import postfix as pf
import pytest
from aiosmtpd.controller import Controller
from conftest import RunningDaemon, Sink, body_of, make_mail
from sqlalchemy import select

from mailgate.config import load_config
from mailgate.store.db import Database
from mailgate.store.models import BouncedAddress, InboxItem, InboxRaw, Message, OutboxItem, Ticket

pytestmark = pytest.mark.postfix

DESK = "support@example.test"
LMTP_DESK = "help@example.test"


def pipe_service(config: Path) -> str:
    """The master.cf entry an admin writes (docs/postfix.md), with this checkout's interpreter."""
    argv, env = pf.nobody_python()
    # Postfix pipe(8) sets no environment of its own choosing; `env` puts PYTHONPATH in when the
    # venv's interpreter is not reachable by nobody (see tests/postfix.py nobody_python).
    prefix = ["/usr/bin/env", *(f"{k}={v}" for k, v in env.items())] if env else []
    cmd = " ".join([*prefix, *argv, "-m", "mailgate", "--config", str(config), "--log-level", "WARNING"])
    return (
        "mailgate  unix  -       n       n       -       -       pipe\n"
        f"  flags=Rq user={pf.PIPE_USER} argv={cmd} ingest --sender ${{sender}} --recipient ${{recipient}}\n"
    )


class Env:
    def __init__(self, postfix: pf.Postfix, sink: Sink, pipe_desk: Path, lmtp_port: int) -> None:
        self.postfix = postfix
        self.sink = sink
        self.pipe_desk = pipe_desk
        self.lmtp_port = lmtp_port


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    pf_ok = pf.available()
    if not pf_ok:
        from conftest import need

        need(False, "postfix (Debian package `postfix`) and root, to run a private instance")
    sink = Sink().start()
    pipe_desk = pf.desk_dir(address=DESK)
    lmtp_port = pf.free_port()
    postfix = pf.Postfix(
        relay_port=sink.port,
        transport={DESK: "mailgate:", LMTP_DESK: f"lmtp:inet:127.0.0.1:{lmtp_port}"},
        services=pipe_service(pipe_desk / "config.toml"),
    )
    try:
        postfix.start()
        yield Env(postfix, sink, pipe_desk, lmtp_port)
    finally:
        postfix.cleanup()
        sink.stop()
        import shutil

        shutil.rmtree(pipe_desk, ignore_errors=True)


def send(port: int, raw: bytes, rcpt: str | list[str], sender: str = "customer1@acme.com") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        assert s.sendmail(sender, [rcpt] if isinstance(rcpt, str) else rcpt, raw) == {}


def read_desk(desk: Path) -> dict[str, list[Any]]:
    """Tickets and inbox rows of a nobody-owned desk, read as root without stealing its files.

    SQLite creates -wal/-shm beside the database for whoever opens it first; they go away when the
    last connection closes, and whatever remains is given back to the pipe user.
    """
    config = load_config(
        desk / "config.toml", env={"MAILGATE_SECRET": "unused"}
    )  # not .env: it may be broken
    db = Database(config.database_url, upgrade=False)
    try:
        with db.session() as s:
            return {
                "tickets": list(s.execute(select(Ticket).order_by(Ticket.id)).scalars()),
                "inbox": list(s.execute(select(InboxItem).order_by(InboxItem.id)).scalars()),
                "raw": list(s.execute(select(InboxRaw.raw).order_by(InboxRaw.id)).scalars()),
            }
    finally:
        db.dispose()
        pf.chown_tree(desk / "state")


def test_pipe_delivery_defers_on_temporary_failure_and_delivers_once_fixed(env: Env) -> None:
    postfix = env.postfix
    mark = postfix.mark()
    send(postfix.port, make_mail("VPN drops every hour", message_id="<vpn-1@acme.com>"), DESK)
    postfix.wait_log("status=sent (delivered via mailgate service", since=mark)
    postfix.wait_empty()
    got = read_desk(env.pipe_desk)
    [ticket] = got["tickets"]
    assert (ticket.key, ticket.subject, ticket.requester) == (
        "SUP-1",
        "VPN drops every hour",
        "customer1@acme.com",
    )
    [item] = got["inbox"]
    assert (item.source, item.mail_from, item.rcpt_tos) == ("pipe", "customer1@acme.com", [DESK])
    assert got["raw"][0].startswith(b"Return-Path: <customer1@acme.com>")  # flags=R

    # The database goes away (the admin's .env points at a PostgreSQL that is down): exit 75.
    dotenv = env.pipe_desk / ".env"
    good = dotenv.read_text()
    dotenv.write_text(good + f"MAILGATE_DATABASE_URL=postgresql://mailgate@127.0.0.1:{pf.free_port()}/x\n")
    send(postfix.port, make_mail("Printer jams", message_id="<jam-1@acme.com>"), DESK)
    # Kept and retried: with this fixture's one-second backoff the message moves between the
    # deferred, incoming and active queues, so any queue will do as long as it holds the reason.
    postfix.wait(
        "the message deferred by the pipe",
        lambda: any(
            "temporary failure" in str(q["recipients"][0].get("delay_reason", ""))  # type: ignore[index]
            for q in postfix.queue()
        ),
    )
    assert "status=bounced" not in postfix.log[mark:]
    assert len(read_desk(env.pipe_desk)["tickets"]) == 1

    dotenv.write_text(good)  # the database is back
    postfix.flush()
    postfix.wait_log("status=sent (delivered via mailgate service", count=2, since=mark)
    postfix.wait_empty()
    got = read_desk(env.pipe_desk)
    assert [t.subject for t in got["tickets"]] == ["VPN drops every hour", "Printer jams"]
    assert [i.message_id for i in got["inbox"]].count("jam-1@acme.com") == 1
    assert "status=bounced" not in postfix.log[mark:]


def _mail_to(sink: Sink, rcpt: str, timeout: float = 15.0) -> EmailMessage:
    """The one mail the sink got for `rcpt` (agents may get notifications of their own)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        with sink.handler.cond:
            got = [raw for _, rcpts, raw in sink.handler.messages if rcpt in rcpts]
        if got or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(got) == 1, f"expected one mail for {rcpt}, got {len(got)}"
    return message_from_bytes(got[0], policy=policy.default)  # type: ignore[return-value]


def _wait_ticket_messages(d: RunningDaemon, key: str, n: int) -> list[Message]:
    import time

    deadline = time.monotonic() + 15
    while True:
        d.settle()
        with d.db.session() as s:
            t = s.execute(select(Ticket).where(Ticket.key == key)).scalar_one_or_none()
            msgs = (
                list(
                    s.execute(select(Message).where(Message.ticket_id == t.id).order_by(Message.id)).scalars()
                )
                if t
                else []
            )
        if len(msgs) >= n or time.monotonic() > deadline:
            return msgs
        time.sleep(0.05)


def _lmtp_desk(env: Env) -> Path:
    """The HELP desk behind Postfix: Postfix delivers to its LMTP listener, and it sends through
    Postfix."""
    return pf.desk_dir(
        address=LMTP_DESK,
        key="HELP",
        owner=None,
        smtp=f'[smtp]\nlmtp = true\nhost = "127.0.0.1"\nport = {env.lmtp_port}\n',
        outgoing=(
            f'[outgoing]\ntransport = "smtp"\nhost = "127.0.0.1"\nport = {env.postfix.port}\n'
            "retry_base_seconds = 0.2\nretry_max_seconds = 1.0\n"
        ),
    )


def test_lmtp_in_front_relay_behind_and_the_reply_threads_back(env: Env) -> None:
    postfix, sink = env.postfix, env.sink
    desk = _lmtp_desk(env)
    d = RunningDaemon(desk / "config.toml")
    try:
        sink.clear()
        original = make_mail(
            "Laptop will not boot",
            sender="Ann Customer <ann@acme.com>",
            to=LMTP_DESK,
            message_id="<boot-1@acme.com>",
        )
        send(postfix.port, original, LMTP_DESK, sender="ann@acme.com")
        postfix.wait_log(f"to=<{LMTP_DESK}>, relay=127.0.0.1[127.0.0.1]:{env.lmtp_port}")
        ack = _mail_to(sink, "ann@acme.com")
        assert any("by gateway.example.test (Postfix)" in r for r in ack.get_all("Received", []))
        assert ack["Subject"] == "[HELP-1] Laptop will not boot"
        assert ack["In-Reply-To"] == "<boot-1@acme.com>"
        assert "<boot-1@acme.com>" in ack["References"]
        assert ack["Auto-Submitted"] == "auto-replied"
        with d.db.session() as s:
            [out] = s.execute(select(OutboxItem).where(OutboxItem.kind == "acknowledgement")).scalars()
        assert out.state == "sent"
        assert ack["Message-ID"] == f"<{out.message_id.strip('<>')}>"  # Postfix kept our Message-ID
        [item] = d.inbox()
        assert (item.source, item.rcpt_tos) == ("lmtp", [LMTP_DESK])

        # Ann answers the acknowledgement from her client: to its Reply-To, tag dropped.
        reply = EmailMessage()
        reply["From"] = "Ann Customer <ann@acme.com>"
        reply["To"] = ack["Reply-To"]
        reply["Subject"] = "Re: Laptop will not boot"
        reply["Message-ID"] = "<boot-2@acme.com>"
        reply["In-Reply-To"] = ack["Message-ID"]
        reply["References"] = f"<boot-1@acme.com> {ack['Message-ID']}"
        reply.set_content("It shows a blinking cursor now.\n\nOn Monday you wrote:\n> Just confirming\n")
        send(postfix.port, reply.as_bytes(), str(ack["Reply-To"]), sender="ann@acme.com")
        messages = _wait_ticket_messages(d, "HELP-1", 2)
        assert [t.key for t in d.tickets()] == ["HELP-1"]
        assert len(messages) == 2
        assert "blinking cursor" in (messages[1].text or "")
    finally:
        d.stop()
        import shutil

        shutil.rmtree(desk, ignore_errors=True)


class RefusingMX:
    """A customer's MX that refuses every recipient for good (550 5.1.1 user unknown)."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"


def test_real_postfix_bounce_comes_back_to_the_bounce_address_and_quiets_the_customer(env: Env) -> None:
    """The control of the forged-bounce attacks (test_attacks_membership.py): a real bounce,
    written by Postfix and sent back to our envelope sender as every MTA does, proves the address
    failed. Postfix finds mailgate for help+<token>-b@ by its recipient_delimiter, like a reply."""
    postfix, sink = env.postfix, env.sink
    gone = "gone@dead.example"
    mx_port = pf.free_port()
    mx = Controller(RefusingMX(), hostname="127.0.0.1", port=mx_port)
    mx.start()
    lmtp = f"lmtp:inet:127.0.0.1:{env.lmtp_port}"
    postfix.set_transport({DESK: "mailgate:", LMTP_DESK: lmtp, "dead.example": f"smtp:[127.0.0.1]:{mx_port}"})
    desk = _lmtp_desk(env)
    d = RunningDaemon(desk / "config.toml")
    try:
        sink.clear()
        mark = postfix.mark()
        send(postfix.port, make_mail("Where is my parcel", sender=gone, to=LMTP_DESK), LMTP_DESK, sender=gone)
        postfix.wait_log(f"to=<{gone}>", since=mark)
        assert "status=bounced" in postfix.log[mark:] and "User unknown" in postfix.log[mark:]
        with d.db.session() as s:
            [ack] = s.execute(select(OutboxItem).where(OutboxItem.kind == "acknowledgement")).scalars()
        assert ack.mail_from.startswith("help+help-1-") and ack.mail_from.endswith("-b@example.test")
        postfix.wait_log(f"to=<{ack.mail_from}>, relay=127.0.0.1[127.0.0.1]:{env.lmtp_port}", since=mark)

        def bounced() -> list[InboxItem]:
            d.settle()
            return [i for i in d.inbox() if i.disposition == "bounce"]

        postfix.wait("mailgate to take Postfix's bounce", lambda: bool(bounced()))
        [item] = bounced()
        assert (item.source, item.mail_from, item.rcpt_tos) == ("lmtp", "<>", [ack.mail_from])  # null sender
        with d.db.session() as s:
            assert [b.address for b in s.execute(select(BouncedAddress)).scalars()] == [gone]
        postfix.wait(
            "the agent told",
            lambda: any("cannot be reached" in body_of(m) for m in sink.to("angel@localhost")),
        )
        [told] = [m for m in sink.to("angel@localhost") if "cannot be reached" in body_of(m)]
        assert gone in body_of(told) and "5.1.1" in body_of(told)
    finally:
        d.stop()
        mx.stop()
        postfix.set_transport({DESK: "mailgate:", LMTP_DESK: lmtp})
        import shutil

        shutil.rmtree(desk, ignore_errors=True)
