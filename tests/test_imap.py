"""IMAP intake against a real Dovecot (tests/dovecot.py): messages APPENDed with imapclient, the
poller run as the daemon runs it, and what a desk would notice checked — tickets, acknowledgements
at the relay, flags and folders on the server, and never a message twice."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO, RunningDaemon, Sink, free_port, make_mail, need, wait_until, write_config
from dovecot import Dovecot, available
from imapclient import SEEN
from sqlalchemy import select
from support.imap import ENV, append, client, count, imap_table, poller

from mailgate.config import Config, load_config
from mailgate.pipeline.runner import Runner
from mailgate.store import imap_state
from mailgate.store.db import Database
from mailgate.store.models import InboxItem, InboxRaw, OutboxItem, Ticket

pytestmark = pytest.mark.imap


def desk(tmp_path: Path, tables: str, relay_port: int | None = None) -> Config:
    path = write_config(tmp_path / "desk", relay_port=relay_port, extra=tables)
    return load_config(path, env=ENV)


def flags_by_subject(d: Dovecot, folder: str = "INBOX") -> dict[str, set[bytes]]:
    with client(d) as c:
        c.select_folder(folder, readonly=True)
        uids = c.search(["ALL"])
        data = c.fetch(uids, ["FLAGS", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]) if uids else {}
    return {
        v[b"BODY[HEADER.FIELDS (SUBJECT)]"].decode().split(":", 1)[1].strip(): set(v[b"FLAGS"])
        for v in data.values()
    }


def acks(db: Database) -> list[int]:
    """The ticket ids that acknowledgements were queued for, one entry per acknowledgement."""
    with db.session() as s:
        stmt = select(OutboxItem.ticket_id).where(OutboxItem.kind == "acknowledgement")
        return sorted(t for t in s.execute(stmt).scalars() if t is not None)


class ImapDaemon(RunningDaemon):
    """RunningDaemon whose config also gets the IMAP passwords from the test environment."""

    def __init__(self, config_path: Path) -> None:
        from mailgate.daemon import Daemon

        self.config_path = config_path
        self.config = load_config(config_path, env=ENV)
        self.daemon = Daemon(self.config, worker="thread")
        self.daemon.start()


def test_new_mail_becomes_ticket_ack_reaches_relay_and_reply_threads(
    tmp_path: Path, dovecot: Dovecot, sink: Sink
) -> None:
    """The full daemon with IDLE: APPEND → ticket → acknowledgement at the relay → \\Seen."""
    path = write_config(tmp_path / "desk", relay_port=sink.port, extra=imap_table(dovecot))
    d = ImapDaemon(path)
    try:
        append(dovecot, make_mail("printer on fire", message_id="<fire-1@acme.com>"))
        wait_until(lambda: len(d.tickets()) == 1, what="a ticket from IMAP")
        wait_until(lambda: any(m["To"] == "customer1@acme.com" for m in sink.messages), what="the ack")
        [ack] = [m for m in sink.messages if m["To"] == "customer1@acme.com"]
        assert ack["Subject"] == "[SUP-1] printer on fire"
        assert ack["In-Reply-To"] == "<fire-1@acme.com>"
        wait_until(lambda: SEEN in flags_by_subject(dovecot)["printer on fire"], what="\\Seen")
        # The requester answers the acknowledgement; it arrives through the same mailbox.
        append(dovecot, make_mail("Re: printer on fire", "still burning", in_reply_to=ack["Message-ID"]))
        wait_until(lambda: len(d.inbox()) == 2, what="the reply")
        d.settle()
        assert [t.key for t in d.tickets()] == ["SUP-1"]
        assert [i.disposition for i in d.inbox()] == ["ticket-created", "reply"]
        assert [i.source for i in d.inbox()] == ["imap:alice", "imap:alice"]
        # The reply reaches the agent, but the requester gets no second acknowledgement: the one
        # mail ever queued for them is the one that arrived.
        assert [r.kind for r in d.outbox_to("customer1@acme.com")] == ["acknowledgement"]
        assert [m["Subject"] for m in sink.messages if m["To"] == "customer1@acme.com"] == [ack["Subject"]]
        assert all(SEEN in f for f in flags_by_subject(dovecot).values())
    finally:
        d.stop()


def test_a_bounce_fetched_by_imap_proves_itself_by_the_address_it_came_to(
    tmp_path: Path, dovecot: Dovecot, sink: Sink
) -> None:
    """VERP through a mailbox: mail fetched by IMAP has no envelope recipient of its own (the
    poller gives the desk's address), so the bounce address is read where the delivering MTA and
    the bouncing one wrote it (X-Original-To, To). A report naming our acknowledgement but sent
    to the plain address quiets nobody; Postfix's real bounce sent back to the envelope sender does."""
    path = write_config(tmp_path / "desk", relay_port=sink.port, extra=imap_table(dovecot))
    d = ImapDaemon(path)
    customer = "customer1@acme.com"
    try:
        append(dovecot, make_mail("parcel lost", message_id="<parcel-1@acme.com>"))
        wait_until(lambda: bool(sink.envelope_from(customer)), what="the ack")
        [verp] = sink.envelope_from(customer)
        assert verp.startswith("support+sup-1-") and verp.endswith("-b@localhost")
        [ack] = [m for m in sink.messages if m["To"] == customer]
        fixture = (REPO / "tests" / "fixtures" / "mail" / "postfix_real_bounce.eml").read_bytes()

        def report(to: str) -> bytes:
            raw = fixture.replace(b"out.gone.1@example.test", str(ack["Message-ID"]).strip("<>").encode())
            raw = raw.replace(b"gone@customer.test", customer.encode())
            return f"X-Original-To: {to}\r\nDelivered-To: support@localhost\r\n".encode() + raw.replace(
                b"support@example.test", to.encode()
            )

        append(dovecot, report("support@localhost"))
        wait_until(lambda: len(d.inbox()) == 2, what="the forged report")
        d.settle()
        assert d.inbox()[-1].disposition == "bounce"
        assert any("not muted" in t["decision"] for t in d.inbox()[-1].trace)
        assert "address-bounced" not in [r.kind for r in d.outbox()]
        append(dovecot, report(verp))
        wait_until(lambda: len(d.inbox()) == 3, what="the real report")
        d.settle()
        assert d.inbox()[-1].disposition == "bounce"
        assert any(f"no automatic mail to {customer}" in t["decision"] for t in d.inbox()[-1].trace)
        assert "address-bounced" in [r.kind for r in d.outbox()]
    finally:
        d.stop()


@pytest.mark.parametrize(
    ("after", "capability"),
    [("move", ""), ("move", "IMAP4rev1 IDLE UIDPLUS"), ("delete", "")],
    ids=["move", "move-without-MOVE", "delete"],
)
def test_after_modes_move_or_delete_only_what_was_stored(tmp_path: Path, after: str, capability: str) -> None:
    need(available(), "dovecot (Debian dovecot-imapd) is not installed")
    dv = Dovecot(capability=capability).start()
    try:
        config = desk(tmp_path, imap_table(dv, after=after))
        db = Database(config.database_url)
        append(dv, make_mail("one"), make_mail("two"))
        p = poller(config, db)
        with client(dv) as c:
            assert c.has_capability("MOVE") == (capability == "")
        result = p.run_once()
        assert (result.stored, result.duplicates) == (2, 0)
        assert flags_by_subject(dv) == {}  # INBOX is empty: nothing left behind
        if after == "move":
            assert sorted(flags_by_subject(dv, "Processed")) == ["one", "two"]
        else:
            with client(dv) as c:
                assert not c.folder_exists("Processed")
        assert p.run_once().seen == 0
        Runner(db, config).run_until_idle()
        assert count(db, Ticket) == 2
    finally:
        dv.cleanup()


def test_first_run_takes_only_unseen_or_since_never_old_mail(tmp_path: Path, dovecot: Dovecot) -> None:
    year_ago = datetime.now() - timedelta(days=365)
    # alice: last year's mail, all read, and one unread message.
    append(dovecot, *(make_mail(f"old {i}") for i in range(5)), flags=(SEEN,), when=year_ago)
    append(dovecot, make_mail("unread"))
    # bob: last year's mail unread (never tidied), and this week's.
    append(dovecot, *(make_mail(f"bob old {i}") for i in range(3)), when=year_ago, user="bob")
    append(dovecot, make_mail("bob recent"), user="bob")
    since = (datetime.now() - timedelta(days=7)).strftime("%Y-%m-%d")
    config = desk(
        tmp_path,
        imap_table(dovecot) + imap_table(dovecot, name="bob", user="bob", first_run="since", since=since),
    )
    db = Database(config.database_url)
    assert poller(config, db).run_once().stored == 1
    assert poller(config, db, "bob").run_once().stored == 1
    # After the first run, new mail is taken even if another client already read it.
    append(dovecot, make_mail("read elsewhere"), flags=(SEEN,))
    assert poller(config, db).run_once().stored == 1
    Runner(db, config).run_until_idle()
    with db.session() as s:
        subjects = sorted(s.execute(select(Ticket.subject)).scalars())
    assert subjects == ["bob recent", "read elsewhere", "unread"]
    assert len(acks(db)) == 3  # nobody from last year hears from us


def test_dovecot_killed_mid_run_every_message_processed_exactly_once(
    tmp_path: Path, dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    config = desk(tmp_path, imap_table(dovecot))
    db = Database(config.database_url)
    append(dovecot, *(make_mail(f"batch {i}", sender=f"c{i}@acme.com") for i in range(40)))
    p = poller(config, db, retry_base=0.05, retry_max=0.3, timeout=5).start()
    try:
        with caplog.at_level(logging.DEBUG, logger="mailgate.intake.imap"):
            wait_until(lambda: count(db, InboxItem) >= 3, what="the first messages")
            dovecot.stop()  # SIGKILL to the whole process group, mid-run

            def logged(text: str) -> int:
                return sum(text in r.getMessage() for r in caplog.records if r.name == "mailgate.intake.imap")

            # The poller fetches and commits in one thread: once it logs the outage, the message
            # it was fetching is committed or dropped, and the count below is what was stored.
            wait_until(lambda: logged("retrying with backoff") >= 1, what="the outage logged")
            stored_while_down = count(db, InboxItem)
            wait_until(lambda: logged("still failing") >= 2, what="reconnect attempts failing")
            assert count(db, InboxItem) == stored_while_down
            dovecot.start()
            append(dovecot, *(make_mail(f"after {i}", sender=f"d{i}@acme.com") for i in range(5)))
            try:
                wait_until(lambda: count(db, InboxItem) == 45, what="all 45 messages", timeout=20)
            except AssertionError:
                print(count(db, InboxItem), dovecot.log[-6000:])
                raise
            wait_until(lambda: all(SEEN in f for f in flags_by_subject(dovecot).values()), what="all \\Seen")
    finally:
        p.stop()  # joins the poller: nothing is stored after this, so the counts below are final
    assert count(db, InboxItem) == 45
    with db.session() as s:
        keys = list(s.execute(select(InboxItem.source_key)).scalars())
    assert len(set(keys)) == 45
    outage_logs = [r for r in caplog.records if "retrying with backoff" in r.getMessage()]
    retries = [r for r in caplog.records if "still failing" in r.getMessage()]
    assert len(outage_logs) == 1, [r.getMessage() for r in outage_logs]  # once per outage
    assert retries  # ... although it retried more than once
    assert any("connected again" in r.getMessage() for r in caplog.records)
    Runner(db, config).run_until_idle()
    assert count(db, Ticket) == 45
    assert acks(db) == list(range(1, 46))


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from mailgate.config import load_config
    from mailgate.intake.accept import Acceptor
    from mailgate.intake.imap import ImapPoller
    from mailgate.store.db import Database

    config = load_config(sys.argv[1], env=dict(os.environ))
    db = Database(config.database_url)
    kill_at = int(sys.argv[2])

    def after_commit(uid, result):
        # The real hook in the poller: the commit is done, the \\\\Seen flag not yet set.
        if uid == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    p = ImapPoller(config.imap[0], db, Acceptor(db, config), desk_address="support@localhost",
                   after_commit=after_commit)
    r = p.run_once()
    print(r.stored, r.duplicates)
    """
)


def test_crash_between_commit_and_flag_makes_no_second_ticket_or_ack(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    path = write_config(tmp_path / "desk", extra=imap_table(dovecot))
    append(dovecot, make_mail("first"), make_mail("second"), make_mail("third"))
    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO)}

    def child(kill_at: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(kill_at)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    crashed = child(kill_at=2)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    flags = flags_by_subject(dovecot)
    assert SEEN in flags["first"] and SEEN not in flags["second"] and SEEN not in flags["third"]
    config = load_config(path, env=ENV)
    db = Database(config.database_url)
    assert count(db, InboxItem) == 2  # "second" was committed before the crash

    restarted = child(kill_at=0)
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.split() == ["1", "1"]  # "third" stored; "second" recognised by its uid
    assert all(SEEN in f for f in flags_by_subject(dovecot).values())
    Runner(db, config).run_until_idle()
    with db.session() as s:
        tickets = list(s.execute(select(Ticket.subject).order_by(Ticket.id)).scalars())
    assert tickets == ["first", "second", "third"]
    assert acks(db) == [1, 2, 3]  # one acknowledgement per ticket


def test_uidvalidity_change_resyncs_without_duplicates(tmp_path: Path, dovecot: Dovecot) -> None:
    config = desk(tmp_path, imap_table(dovecot, folder="Support"))
    db = Database(config.database_url)
    a, b = make_mail("alpha", message_id="<alpha@x>"), make_mail("beta", message_id="<beta@x>")
    with client(dovecot) as c:
        c.create_folder("Support")
    append(dovecot, a, b, folder="Support")
    p = poller(config, db)
    first = p.run_once()
    assert (first.stored, first.resynced) == (2, False)
    # The mailbox is rebuilt (restored from backup, migrated to another server): new UIDVALIDITY,
    # the same two messages, unread again, and one new one.
    with client(dovecot) as c:
        c.delete_folder("Support")
        c.create_folder("Support")
    append(dovecot, a, b, make_mail("gamma", message_id="<gamma@x>"), folder="Support")
    second = p.run_once()
    assert second.uidvalidity != first.uidvalidity
    assert (second.resynced, second.stored, second.duplicates) == (True, 1, 2)
    assert all(SEEN in f for f in flags_by_subject(dovecot, "Support").values())
    with db.session() as s:
        state = imap_state.get_state(s, "alice", "Support")
        assert state is not None and (state.uidvalidity, state.last_uid) == (second.uidvalidity, 3)
    Runner(db, config).run_until_idle()
    assert count(db, Ticket) == 3 and acks(db) == [1, 2, 3]


def test_a_message_the_server_cannot_deliver_is_skipped_not_blocking(
    tmp_path: Path, dovecot: Dovecot
) -> None:
    config = desk(tmp_path, imap_table(dovecot))
    db = Database(config.database_url)
    append(dovecot, make_mail("before"), make_mail("broken"), make_mail("after"))
    # Make one message unreadable for Dovecot: FETCH answers "Internal error" and BYE.
    [bad] = [f for f in dovecot.maildir().glob("*/*") if b"Subject: broken" in f.read_bytes()]
    bad.chmod(0)
    p = poller(config, db, retry_base=0.05, max_tries=3).start()
    try:
        wait_until(lambda: count(db, InboxItem) == 2, what="the messages around the bad one")
    finally:
        p.stop()
    with db.session() as s:
        subjects = [
            raw.split(b"Subject: ")[1].split(b"\n")[0].strip()
            for raw in s.execute(select(InboxRaw.raw).order_by(InboxRaw.id)).scalars()
        ]
        [failure] = imap_state.failures(s, "alice")
    assert subjects == [b"before", b"after"]
    assert (failure.uid, failure.attempts, failure.given_up) == (2, 3, True)
    assert "Internal error" in failure.last_error
    for f in dovecot.maildir().glob("*/*"):  # Dovecot has moved it from new/ to cur/ meanwhile
        f.chmod(0o600)
    assert SEEN not in flags_by_subject(dovecot)["broken"]  # left on the server for a human


def test_imap_check_reports_state_and_clear_errors(
    tmp_path: Path, dovecot: Dovecot, capsys: pytest.CaptureFixture[str]
) -> None:
    from mailgate.cli import main

    tls = Dovecot(tls=True).start()
    try:
        tables = (
            imap_table(dovecot)
            + imap_table(dovecot, name="wrongpw", user="wrong")
            + imap_table(dovecot, name="refused", port=free_port())
            + imap_table(dovecot, name="nohost").replace('"127.0.0.1"', '"mail.nonexistent.invalid"')
            + imap_table(dovecot, name="badcert", port=tls.tls_port, security="tls")
            + imap_table(
                dovecot, name="token", auth="xoauth2", token_command="echo token expired >&2; exit 3"
            )
        )
        root = tmp_path / "desk"
        path = write_config(root, extra=tables)
        (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in ENV.items()))
        append(dovecot, make_mail("a"), make_mail("b"), flags=(SEEN,))
        append(dovecot, make_mail("c"))

        def check(name: str) -> tuple[int, str]:
            rc = main(["--config", str(path), "imap", "check", "--account", name, "--timeout", "5"])
            out = capsys.readouterr()
            return rc, out.out + out.err

        rc, out = check("alice")
        assert rc == 0, out
        assert "folder:       INBOX  (3 messages, 1 unseen)" in out
        assert "IDLE" in out and "MOVE" in out
        assert "not started yet" in out
        rc, out = check("wrongpw")
        assert rc == 77 and "login refused for wrong" in out
        rc, out = check("refused")
        assert rc == 69 and "connection refused" in out
        rc, out = check("nohost")
        assert rc == 68 and "unknown host 'mail.nonexistent.invalid'" in out
        rc, out = check("badcert")
        assert rc == 69 and "not trusted" in out and "self-signed" in out
        rc, out = check("token")
        assert rc == 77 and "token_command exited 3: token expired" in out
    finally:
        tls.cleanup()
