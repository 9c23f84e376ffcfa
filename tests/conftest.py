"""Shared test helpers: a real relay sink (aiosmtpd), a real daemon on loopback, and a desk config.

End-to-end tests read in three lines: `deliver(...)`, `daemon.run_until_idle()` (or wait),
`sink.wait_for(n)` (Mailman's make_testable_runner / get_queue_messages habit).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiosmtpd.controller import Controller

if TYPE_CHECKING:
    from dovecot import Dovecot

REPO = Path(__file__).resolve().parent.parent
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Every daemon a test starts (in this process or as `mailgate run`) puts its web listener on a
# free port, never on the default 8025 another daemon or test run may hold.
os.environ.setdefault("MAILGATE_WEB_PORT", "0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(condition: bool, reason: str) -> None:
    """Skip when a real part is missing on a developer's machine; under CI=true that is a failure."""
    if condition:
        return
    if CI:
        pytest.fail(f"required under CI=true: {reason}")
    pytest.skip(reason)


class SinkHandler:
    """Stands in for the outbound relay: stores what it receives; can refuse with a given reply."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.reply: str | None = None  # e.g. "451 4.3.0 try later" or "550 5.1.1 no such user"
        self.cond = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply:
            return self.reply
        with self.cond:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            self.cond.notify_all()
        return "250 OK"


class Sink:
    def __init__(self) -> None:
        self.handler = SinkHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[EmailMessage]:
        with self.handler.cond:
            return [message_from_bytes(raw, policy=policy.default) for _, _, raw in self.handler.messages]  # type: ignore[misc]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until at least n messages arrived; return all of them."""
        deadline = time.monotonic() + timeout
        with self.handler.cond:
            while len(self.handler.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.handler.cond.wait(left)
        got = self.messages
        assert len(got) >= n, (
            f"expected {n} mail(s) at the relay, got {len(got)}: {[m['Subject'] for m in got]}"
        )
        return got

    def to(self, address: str) -> list[EmailMessage]:
        """What the relay got for one recipient, in order."""
        with self.handler.cond:
            raws = [raw for _, rcpts, raw in self.handler.messages if address in rcpts]
        return [message_from_bytes(raw, policy=policy.default) for raw in raws]  # type: ignore[misc]

    def envelope_from(self, address: str) -> list[str]:
        """The envelope senders (SMTP MAIL FROM) of the mails one recipient got, in order: where
        a delivery report of each goes back to (VERP, pipeline/notify.py)."""
        with self.handler.cond:
            return [sender for sender, rcpts, _ in self.handler.messages if address in rcpts]

    def wait_to(self, address: str, n: int, timeout: float = 10.0) -> list[EmailMessage]:
        """Wait until `address` got at least n mails; return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.to(address)
            if len(got) >= n:
                return got
            with self.handler.cond:
                self.handler.cond.wait(0.05)
        got = self.to(address)
        assert len(got) >= n, (
            f"expected {n} mail(s) to {address}, got {len(got)}: {[m['Subject'] for m in got]}"
        )
        return got

    def clear(self) -> None:
        with self.handler.cond:
            self.handler.messages.clear()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


def write_config(
    root: Path, *, relay_port: int | None = None, smtp_port: int | None = None, extra: str = ""
) -> Path:
    """A desk directory like an admin's: config.toml, rules/ and templates/ copied from the repo."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("rules", "templates"):
        if not (root / name).exists():
            shutil.copytree(REPO / name, root / name)
    outgoing = (
        f'[outgoing]\ntransport = "smtp"\nhost = "127.0.0.1"\nport = {relay_port}\n'
        "retry_base_seconds = 0.2\nretry_max_seconds = 1.0\n"
        if relay_port
        else '[outgoing]\ntransport = "file"\n'
    )
    text = (
        'admin_address = "admin@example.com"\n'
        f"{extra}\n"
        '[[desks]]\naddress = "support@localhost"\nkey = "SUP"\nname = "Support"\n\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port or free_port()}\n\n'
        # the web listener on any free port: daemons of one test (and of parallel runs) never meet
        "[web]\nport = 0\n\n"
        f"{outgoing}"
    )
    path = root / "config.toml"
    path.write_text(text)
    return path


def make_mail(
    subject: str = "System is down",
    body: str = "Cannot access the backend\nSystem is unreachable\n",
    *,
    sender: str = "customer1@acme.com",
    to: str = "support@localhost",
    cc: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or f"<{time.time_ns()}.{os.getpid()}@client.example>"
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    return msg.as_bytes()


def deliver(
    port: int, raw: bytes, *, sender: str = "customer1@acme.com", rcpt: str | list[str] = "support@localhost"
) -> dict[str, tuple[int, bytes]]:
    """Send over real SMTP; returns smtplib's refused dict (empty when all accepted).

    Lines end in CRLF on the wire (RFC 5321 2.3.8): smtplib converts str messages but sends bytes
    as they are, so the bytes are normalised here as every real client does."""
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
        return smtp.sendmail(sender, [rcpt] if isinstance(rcpt, str) else rcpt, raw)


class RunningDaemon:
    """A real `Daemon` on loopback ports, with helpers to wait for the pipeline to settle."""

    def __init__(
        self, config_path: Path, *, worker: str = "thread", env: dict[str, str] | None = None
    ) -> None:
        """`worker="thread"` (the default here) keeps the worker in this process, so a test can
        look inside it or patch it; `mailgate run`'s own default, a worker process, is run by
        tests/test_worker_process.py and by every test that starts `mailgate run` itself.
        `env` replaces the environment (default: one token key, "test-secret", and the web
        listener on a free port)."""
        from mailgate.config import load_config
        from mailgate.daemon import Daemon

        self.config_path = config_path
        self.config = load_config(
            config_path, env=env or {"MAILGATE_SECRET": "test-secret", "MAILGATE_WEB_PORT": "0"}
        )
        self.daemon = Daemon(self.config, worker=worker)
        self.daemon.start()

    @property
    def port(self) -> int:
        return self.daemon.smtp_port  # type: ignore[return-value]

    @property
    def db(self) -> Any:
        return self.daemon.db

    def send(self, raw: bytes, **kw: Any) -> dict[str, tuple[int, bytes]]:
        return deliver(self.port, raw, **kw)

    def settle(self, timeout: float = 10.0, *, outbox: bool = True) -> None:
        """Wait until every received message is processed and every mail due is handed to the
        relay, so that "nobody else was mailed" assertions are true assertions."""
        from sqlalchemy import func, or_, select

        from mailgate.store.models import InboxItem, OutboxItem, now_utc

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.db.session() as s:
                busy = s.execute(
                    select(func.count())
                    .select_from(InboxItem)
                    .where(InboxItem.state.in_(["new", "processing"]))
                ).scalar_one()
                busy += (
                    outbox
                    and s.execute(
                        select(func.count())
                        .select_from(OutboxItem)
                        .where(
                            or_(
                                OutboxItem.state == "sending",
                                (OutboxItem.state == "pending") & (OutboxItem.next_attempt_at <= now_utc()),
                            )
                        )
                    ).scalar_one()
                )
            if not busy:
                return
            self.daemon.wake()
            if self.daemon.sender is not None:  # thread mode; a worker process's sender polls
                self.daemon.sender.wake.set()
            time.sleep(0.02)
        raise AssertionError("pipeline did not settle")

    def tickets(self) -> list[Any]:
        from sqlalchemy import select

        from mailgate.store.models import Ticket

        with self.db.session() as s:
            return list(s.execute(select(Ticket).order_by(Ticket.id)).scalars())

    def outbox(self) -> list[Any]:
        """Every mail queued, sent or not. After `settle()` these rows are all the mail there will
        be until something new arrives: asserting on them (rather than on the relay after a
        sleep) is how a test says "and nothing more was sent"."""
        from sqlalchemy import select

        from mailgate.store.models import OutboxItem

        with self.db.session() as s:
            return list(s.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars())

    def outbox_to(self, address: str) -> list[Any]:
        """`outbox()` for one recipient."""
        return [r for r in self.outbox() if address in r.recipients]

    def inbox(self) -> list[Any]:
        from sqlalchemy import select

        from mailgate.store.models import InboxItem

        with self.db.session() as s:
            return list(s.execute(select(InboxItem).order_by(InboxItem.id)).scalars())

    def stop(self) -> None:
        self.daemon.stop()


@pytest.fixture
def desk_dir(tmp_path: Path) -> Path:
    return tmp_path / "desk"


@pytest.fixture
def daemon(desk_dir: Path, sink: Sink) -> Iterator[RunningDaemon]:
    d = RunningDaemon(write_config(desk_dir, relay_port=sink.port))
    yield d
    d.stop()


def reply(
    to_msg: EmailMessage, sender: str, body: str, *, cc: str | None = None, keep_subject: bool = True
) -> bytes:
    """A reply as a mail client writes it: Reply-To honoured, Re: subject, threading headers,
    and the original quoted below an attribution line (what Thunderbird/Gmail send)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = str(to_msg["Reply-To"] or to_msg["From"])
    if cc:
        msg["Cc"] = cc
    subject = str(to_msg["Subject"])
    msg["Subject"] = f"Re: {subject}" if keep_subject else "Re: your mail"
    msg["Message-ID"] = f"<{time.time_ns()}.{os.getpid()}@{sender.split('@')[1]}>"
    msg["Date"] = "Mon, 23 Nov 2026 11:00:00 +0000"
    msg["In-Reply-To"] = str(to_msg["Message-ID"])
    refs = str(to_msg.get("References", "") or "")
    msg["References"] = f"{refs} {to_msg['Message-ID']}".strip()
    original = to_msg.get_body(preferencelist=("plain",))
    quoted = "\n".join("> " + line for line in (original.get_content() if original else "").splitlines())
    msg.set_content(f"{body}\n\nOn Mon, 23 Nov 2026 at 10:30, {to_msg['From']} wrote:\n{quoted}\n")
    return msg.as_bytes()


def body_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content().replace("\r\n", "\n") if part is not None else ""


def scenario_config(
    root: Path,
    *,
    relay_port: int,
    desks: list[tuple[str, str, str]],
    team: str,
    routing: str = "",
    extra: str = "",
) -> Path:
    """A desk directory for a seed story: its own desks (address, key, workflow), team and routing."""
    path = write_config(root, relay_port=relay_port, extra=extra)
    text = path.read_text()
    head, _, tail = text.partition("[[desks]]")
    tail = tail.split("\n\n", 1)[1]  # drop the default desk
    desk_tables = "".join(
        f'[[desks]]\naddress = "{a}"\nkey = "{k}"\nname = "{k.title()} desk"\nworkflow = "{w}"\n\n'
        for a, k, w in desks
    )
    path.write_text(head + desk_tables + tail)
    (root / "rules" / "team.toml").write_text(team)
    (root / "rules" / "routing.toml").write_text(routing)
    return path


@pytest.fixture
def small_desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    """The small desk of tests/support/small_desk.py (SUP, Tara triaging, Theo), running."""
    from support.small_desk import start_desk

    d = start_desk(tmp_path / "desk", sink)
    yield d
    d.stop()


def start_counter(daemon: RunningDaemon, desk: str, next_number: int) -> None:
    """Make the desk's next ticket number `next_number` (the seeds talk about SUP-20)."""
    from mailgate.store.models import Counter

    with daemon.db.session() as s:
        s.add(Counter(desk=desk, next_number=next_number))


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for a state (a row, a flag, a log line) to come true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A private Dovecot for the IMAP tests (tests/dovecot.py), skipped when not installed."""
    from dovecot import Dovecot, available

    need(available(), "dovecot (Debian dovecot-imapd) is not installed")
    d = Dovecot().start()
    yield d
    d.cleanup()
