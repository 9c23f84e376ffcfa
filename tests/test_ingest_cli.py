"""`mailgate ingest` as an MTA pipe and for migrations: exit codes an MTA can act on (sysexits),
nothing acknowledged before it is stored, and whole mboxes / maildirs in one go."""

from __future__ import annotations

import mailbox
import os
import subprocess
import sys
from pathlib import Path

from conftest import RunningDaemon, Sink, make_mail, write_config
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mailgate.cli import main
from mailgate.config import load_config
from mailgate.store.db import Database
from mailgate.store.models import OutboxItem, Ticket


def _tickets(cfg_path: Path) -> list[Ticket]:
    db = Database(load_config(cfg_path).database_url)
    with db.session() as s:
        return list(s.execute(select(Ticket).order_by(Ticket.id)).scalars())


def run_cli(
    cfg: Path, *args: str, stdin: bytes = b"", env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "MAILGATE_SECRET": "test-secret", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "mailgate", "--config", str(cfg), *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
    )


def test_pipe_stores_processes_and_queues_ack(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "desk")
    r = run_cli(
        cfg,
        "ingest",
        "--recipient",
        "support@localhost",
        "--sender",
        "customer1@acme.com",
        stdin=make_mail("printer jammed"),
    )
    assert r.returncode == 0, r.stderr
    [t] = _tickets(cfg)
    assert (t.key, t.subject) == ("SUP-1", "printer jammed")
    # the file transport of the embedded default: the ack is a file after `run` sends it; here it is queued
    db = Database(load_config(cfg).database_url)
    with db.session() as s:
        [ack] = s.execute(select(OutboxItem).where(OutboxItem.kind == "acknowledgement")).scalars().all()
    assert ack.recipients == ["customer1@acme.com"] and ack.kind == "acknowledgement"
    # the same message piped again (the MTA retried after a timeout): no second ticket, exit 0
    r2 = run_cli(cfg, "ingest", stdin=make_mail("printer jammed", message_id="<again@x>"))
    r3 = run_cli(cfg, "ingest", stdin=make_mail("printer jammed", message_id="<again@x>"))
    assert r2.returncode == r3.returncode == 0
    assert len(_tickets(cfg)) == 2


def test_pipe_exit_codes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "desk")
    assert (
        run_cli(cfg, "ingest", "--recipient", "sales@localhost", stdin=make_mail()).returncode == 67
    )  # EX_NOUSER
    assert run_cli(cfg, "ingest", str(tmp_path / "missing.eml")).returncode == 66  # EX_NOINPUT
    assert run_cli(cfg, "ingest", stdin=b"").returncode == 65  # EX_DATAERR
    # the database is down: 75 EX_TEMPFAIL, so the MTA keeps the mail queued and retries
    down = run_cli(
        cfg,
        "ingest",
        stdin=make_mail(),
        env_extra={"MAILGATE_DATABASE_URL": "postgresql://mailgate@127.0.0.1:1/none?connect_timeout=2"},
    )
    assert down.returncode == 75, down.stderr
    assert b"try again later" in down.stderr
    assert _tickets(cfg) == []


def test_mbox_and_maildir_migration(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path / "desk")
    box = mailbox.mbox(tmp_path / "old.mbox")
    for i in range(5):
        box.add(make_mail(f"old request {i}", message_id=f"<old{i}@acme.com>"))
    box.add(make_mail("Re: [SUP-1] old request 0", "a follow-up", message_id="<old-reply@acme.com>"))
    box.close()
    md = mailbox.Maildir(tmp_path / "old.maildir")
    md.add(make_mail("from the maildir", message_id="<md1@acme.com>"))
    md.add(make_mail("old request 3", message_id="<old3@acme.com>"))  # already imported from the mbox
    md.close()
    assert main(["--config", str(cfg), "ingest", "--mbox", str(tmp_path / "old.mbox")]) == 0
    assert main(["--config", str(cfg), "ingest", "--maildir", str(tmp_path / "old.maildir")]) == 0
    out = capsys.readouterr().out
    assert "stored 6, duplicates 0" in out and "stored 1, duplicates 1" in out
    tickets = _tickets(cfg)
    assert [t.subject for t in tickets] == [f"old request {i}" for i in range(5)] + ["from the maildir"]


def test_pipe_refuses_a_message_over_the_size_limit_without_reading_it_all(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "desk")
    cfg.write_text(cfg.read_text().replace("[smtp]\n", "[smtp]\nmax_message_size = 2000\n"))
    r = run_cli(cfg, "ingest", stdin=make_mail("huge", "x" * 5000))
    assert r.returncode == 65 and b"message too big" in r.stderr
    assert _tickets(cfg) == []
    assert run_cli(cfg, "ingest", stdin=make_mail("small", "ok")).returncode == 0
    assert [t.subject for t in _tickets(cfg)] == ["small"]


def test_group_commit_rolls_back_only_the_failing_message(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A batch shares one transaction between its messages (group commit); a message that fails
    half-way, or stops with an expected outcome, undoes only its own writes."""
    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.pipeline import stages
    from mailgate.pipeline.runner import Runner
    from mailgate.store.models import InboxItem

    cfg = write_config(tmp_path / "desk")
    config = load_config(cfg, env={"MAILGATE_SECRET": "x"})
    db = Database(config.database_url)
    raws = [make_mail(f"request {i}", message_id=f"<g{i}@acme.com>") for i in range(6)]
    raws[2] = make_mail("request 2 explodes", message_id="<g2@acme.com>")
    raws[4] = make_mail("looping", sender="support@localhost", message_id="<g4@acme.com>")  # our own address
    Acceptor(db, config).accept_many([(r, Envelope(source="mbox")) for r in raws])
    real = stages.thread

    def exploding(ctx, config, repo):  # type: ignore[no-untyped-def]
        result = real(ctx, config, repo)
        if "explodes" in ctx.mail.subject:
            repo.next_ticket_number("SUP")  # a write that must be undone with the message
            raise RuntimeError("bug after a write")
        return result

    monkeypatch.setattr(stages, "thread", exploding)
    runner = Runner(db, config)
    assert runner.run_until_idle() == 6
    with db.session() as s:
        rows = {r.message_id: r for r in s.execute(select(InboxItem)).scalars()}
    assert rows["g2@acme.com"].state == "failed" and "bug after a write" in (rows["g2@acme.com"].reason or "")
    assert rows["g4@acme.com"].disposition == "ignored:loop"
    tickets = _tickets(cfg)
    # no gap in the numbers: the failed message's counter update was rolled back with it
    assert [(t.key, t.subject) for t in tickets] == [
        ("SUP-1", "request 0"),
        ("SUP-2", "request 1"),
        ("SUP-3", "request 3"),
        ("SUP-4", "request 5"),
    ]


def test_a_reply_that_fails_after_changing_its_ticket_leaves_the_ticket_as_it_was(tmp_path: Path) -> None:
    """A reply threads onto an existing ticket, changes it, then fails: in a batch with other mail,
    its changes are rolled back, it is quarantined naming the ticket, and the rest of the batch
    is processed."""
    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.pipeline.runner import Runner
    from mailgate.store.models import InboxItem, Message

    cfg = write_config(tmp_path / "desk")
    config = load_config(cfg, env={"MAILGATE_SECRET": "x"})
    db = Database(config.database_url)
    acceptor = Acceptor(db, config)
    runner = Runner(db, config)
    acceptor.accept(make_mail("printer on fire", message_id="<first@acme.com>"), Envelope())
    assert runner.run_until_idle() == 1
    [ticket] = _tickets(cfg)
    real = runner.sla.refresh

    def failing(repo, ticket, desk, new):  # type: ignore[no-untyped-def]
        real(repo, ticket, desk, new=new)
        if not new:  # the reply
            ticket.priority = "urgent"  # an ORM change to the ticket, flushed, then a failure
            repo.session.flush()
            raise RuntimeError("bug after changing the ticket")

    runner.sla.refresh = failing  # type: ignore[method-assign]
    acceptor.accept_many(
        [
            (make_mail("before", message_id="<b@acme.com>", sender="b@acme.com"), Envelope()),
            (
                make_mail(f"Re: [{ticket.key}] printer on fire", "still burning", message_id="<r@acme.com>"),
                Envelope(),
            ),
            (make_mail("after", message_id="<a@acme.com>", sender="a@acme.com"), Envelope()),
        ]
    )
    assert runner.run_until_idle() == 3
    with db.session() as s:
        rows = {r.message_id: r for r in s.execute(select(InboxItem)).scalars()}
        on_ticket = s.execute(select(Message).where(Message.ticket_id == ticket.id)).scalars().all()
    reply = rows["r@acme.com"]
    assert reply.state == "failed" and "bug after changing the ticket" in (reply.reason or "")
    assert reply.ticket_id == ticket.id
    assert (rows["b@acme.com"].state, rows["a@acme.com"].state) == ("done", "done")
    assert len(on_ticket) == 1  # the reply's message was rolled back with it
    tickets = {t.key: t for t in _tickets(cfg)}
    assert tickets[ticket.key].priority == ticket.priority != "urgent"
    assert sorted(t.subject for t in tickets.values()) == ["after", "before", "printer on fire"]


def _with_attachment(raw: bytes, name: str, content: bytes) -> bytes:
    from email import message_from_bytes, policy

    msg = message_from_bytes(raw, policy=policy.default)
    msg.add_attachment(content, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


def test_batches_thread_across_batch_boundaries_and_keep_attachments(tmp_path: Path) -> None:
    """Messages are claimed and processed in batches; a reply that comes batches after its
    ticket still threads onto it, a mail that looks like a reply but threads onto nothing is
    routed by its words, and each kept attachment is in the blob store, byte for byte, while
    one over the size limit is refused."""
    import hashlib
    import os

    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.pipeline.runner import Runner
    from mailgate.store.blobs import BlobStore
    from mailgate.store.models import InboxItem, Message

    cfg = write_config(tmp_path / "desk", extra="[limits]\nmax_attachment_size = 100000\n")
    config = load_config(cfg, env={"MAILGATE_SECRET": "x"})
    db = Database(config.database_url)
    raws = [make_mail(f"request {i}", message_id=f"<p{i}@acme.com>") for i in range(12)]
    report, huge = os.urandom(60_000), os.urandom(150_000)
    raws[4] = _with_attachment(raws[4], "report.bin", report)
    raws[7] = _with_attachment(_with_attachment(raws[7], "small.bin", b"tiny"), "huge.bin", huge)
    raws.append(make_mail("Re: [SUP-3] request 2", "more", message_id="<p-reply@acme.com>"))
    # Looks like a reply but threads onto nothing: a new ticket, routed by its words.
    password = ("forgot my password", "locked out since this morning")
    raws.append(make_mail(*password, message_id="<p-pw1@acme.com>", in_reply_to="<n-7@news.example>"))
    raws.append(make_mail(*password, message_id="<p-pw2@acme.com>", sender="customer2@acme.com"))
    Acceptor(db, config).accept_many([(r, Envelope(source="mbox")) for r in raws])
    # Batches of four: the reply to SUP-3 comes three batches after it.
    assert Runner(db, config, batch_size=4).run_until_idle() == 15
    tickets = _tickets(cfg)
    assert [t.subject for t in tickets] == [f"request {i}" for i in range(12)] + [password[0]] * 2
    routed = {(t.group, t.category) for t in tickets if t.subject == password[0]}
    assert routed == {("IT", "Accounts and passwords")}
    with db.session() as s:
        states = {r.message_id: (r.state, r.disposition) for r in s.execute(select(InboxItem)).scalars()}
    assert states["p-reply@acme.com"] == ("done", "reply")
    assert all(state == "done" for state, _ in states.values())
    with db.session() as s:
        stored = {m.message_id: m.attachments for m in s.execute(select(Message)).scalars()}
    blobs = BlobStore(config.state_dir / "attachments")
    [entry] = stored["p4@acme.com"]
    assert entry["filename"] == "report.bin" and entry["size"] == len(report)
    assert entry["sha256"] == hashlib.sha256(report).hexdigest() and blobs.get(entry["sha256"]) == report
    small, refused = stored["p7@acme.com"]
    assert blobs.get(small["sha256"]) == b"tiny"
    assert "huge.bin" in refused["rejected"] and "over the" in refused["rejected"]
    assert not blobs.exists(hashlib.sha256(huge).hexdigest())


_MBOX_PARTS = [
    b"From x@y Mon Jan 1 00:00:00 2024\n",
    b"\n",
    b"a line\n",
    b">From quoted\n",
    b"\r\n",
    b"tail",
    b"From ",
    b"From",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_MBOX_PARTS), max_size=14))
def test_mbox_is_split_exactly_as_the_stdlib_splits_it(parts: list[bytes]) -> None:
    """`ingest --mbox` reads an mbox with its own fast splitter: every message must come out as
    the stdlib's mailbox.mbox gives it (From_ lines, blank separators, CRLF, a file cut short)."""
    import tempfile

    from mailgate.intake.pipe import mbox_messages

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "box"
        path.write_bytes(b"".join(parts))
        box = mailbox.mbox(path, create=False)
        expected = [box.get_bytes(k) for k in box.iterkeys()]
        box.close()
        assert list(mbox_messages(path)) == expected


def test_a_piped_message_goes_to_the_running_daemon(
    daemon: RunningDaemon, sink: Sink, desk_dir: Path
) -> None:
    """With the daemon listening, Postfix's pipe (`mailgate ingest`) hands the message to it over
    SMTP and exits 0 only after the daemon's 250, which follows its commit. The daemon makes the
    ticket and the acknowledgement; the piping process never loads the database layer. A message
    the daemon refuses gets the exit code that makes the MTA bounce it or keep it."""
    cfg = desk_dir / "config.toml"
    # Piped as an MTA pipes it: LF line ends.
    raw = make_mail("printer on fire", sender="alice@acme.com").replace(b"\r\n", b"\n")
    env = {**os.environ, "MAILGATE_SECRET": "test-secret"}
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mailgate", "--config", str(cfg), "ingest"]
        + ["--sender", "alice@acme.com", "--recipient", "support@localhost"],
        input=raw,
        capture_output=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    imported = {line.rsplit(b"|", 1)[-1].strip() for line in r.stderr.splitlines() if b"import time:" in line}
    assert b"mailgate.config" in imported  # the listing works
    assert not {b"sqlalchemy", b"sqlmodel", b"mailgate.pipeline.runner"} & imported
    daemon.settle()
    [ticket] = daemon.tickets()
    assert ticket.subject == "printer on fire"
    assert [i.source for i in daemon.inbox()] == ["smtp"]
    [ack] = sink.wait_to("alice@acme.com", 1)
    assert ticket.key in str(ack["Subject"])
    # The same message again is the same message: stored once, still exit 0.
    assert (
        run_cli(cfg, "ingest", "-f", "alice@acme.com", "-r", "support@localhost", stdin=raw).returncode == 0
    )
    daemon.settle()
    assert len(daemon.inbox()) == 1
    # A line over SMTP's 1000 bytes: the daemon's listener refuses it (500), the pipe stores it.
    head = (
        b"From: bob@acme.com\nTo: support@localhost\nSubject: one long line\nMessage-ID: <long@acme.com>\n\n"
    )
    long_line = run_cli(
        cfg, "ingest", "-f", "bob@acme.com", "-r", "support@localhost", stdin=head + b"y" * 1500 + b"\n"
    )
    assert long_line.returncode == 0, long_line.stderr
    daemon.settle()
    assert [i.source for i in daemon.inbox()] == ["smtp", "pipe"]
    assert [t.subject for t in daemon.tickets()] == ["printer on fire", "one long line"]
    # A daemon that is shutting down answers 421: the MTA must keep the message and try again.
    daemon.daemon.handler.accepting = False
    late = run_cli(
        cfg,
        "ingest",
        "-f",
        "carol@acme.com",
        "-r",
        "support@localhost",
        stdin=make_mail("during the shutdown"),
    )
    assert late.returncode == 75, late.stderr


def test_a_pipe_never_hands_mail_to_a_server_that_is_not_mailgate(tmp_path: Path, sink: Sink) -> None:
    """If something else answers on the `[smtp]` address (the MTA itself, say), the pipe must not
    give it the mail, which could loop straight back: ingest stores the message itself."""
    cfg = write_config(tmp_path / "desk", smtp_port=sink.port)
    r = run_cli(cfg, "ingest", "-r", "support@localhost", stdin=make_mail("not for the stranger"))
    assert r.returncode == 0, r.stderr
    assert [t.subject for t in _tickets(cfg)] == ["not for the stranger"]
    assert sink.messages == []
