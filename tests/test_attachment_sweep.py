"""Attachment files no message names are swept, and only those: `mailgate attachments sweep` (the
console script, on a desk made by `mailgate init`) and the scheduler's daily run remove the blobs
that held mail and crashes left once they are older than the grace period, and never one a
ticket names — however old — nor one written a moment ago, nor one a message in hand is putting
while the sweep runs."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest
from support.console import InitDesk

from mailgate.store.blobs import BlobStore

DAY = 24 * 3600


def with_file(subject: str, content: bytes, *, auto: bool = False, n: int = 0) -> bytes:
    msg = EmailMessage()
    msg["From"] = "bob@acme.com"
    msg["To"] = "support@localhost"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<sweep{n}.{time.time_ns()}@acme.com>"
    if auto:
        msg["Auto-Submitted"] = "auto-replied"
    msg.set_content("See the attached log.\n")
    msg.add_attachment(content, maintype="application", subtype="octet-stream", filename=f"log{n}.bin")
    return msg.as_bytes()


class Desk(InitDesk):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.blobs = BlobStore(self.dir / "state" / "attachments")

    def out(self, *args: str) -> str:
        return self.cli(*args).out

    def age(self, seconds: float) -> None:
        """Every blob file as if last put `seconds` ago (time passing, without waiting for it)."""
        for path in self.blobs.root.rglob("*"):
            if path.is_file():
                then = path.stat().st_mtime - seconds
                os.utime(path, (then, then))


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_the_sweep_removes_what_held_mail_left_and_keeps_every_blob_a_ticket_names(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    named, orphan, fresh = b"named " * 100, b"orphan " * 100, b"fresh " * 100
    desk.ingest(with_file("printer log", named, n=1))  # SUP-1 names it
    desk.ingest(with_file("Out of office", orphan, auto=True, n=2))  # held:auto-reply: a file nobody names
    assert "held:auto-reply" in desk.out("inbox", "list")
    assert desk.blobs.exists(digest(orphan))

    # Two days later; then one more file is written, a moment ago, which no row names yet.
    desk.age(2 * DAY)
    desk.blobs.put(fresh)
    assert desk.out("attachments", "sweep", "--dry-run").startswith("would remove 1 file(s), 700 bytes")
    assert desk.blobs.exists(digest(orphan))
    out = desk.out("attachments", "sweep")
    assert out.startswith("removed 1 file(s), 700 bytes, older than 24 h that no message names; kept 1"), out
    assert not desk.blobs.exists(digest(orphan))
    assert desk.blobs.exists(digest(named)) and desk.blobs.exists(digest(fresh))
    assert desk.out("tickets", "attachment", "SUP-1", "log1.bin").encode() == named
    assert desk.out("attachments", "sweep").startswith("removed 0 file(s)")  # twice: nothing more

    # Content an old orphan had, arriving again in new mail, is named from now on and stays.
    desk.ingest(with_file("Out of office", b"again " * 100, auto=True, n=3))
    desk.age(2 * DAY)
    desk.ingest(with_file("same log again", b"again " * 100, n=4))  # put touches the old file
    out = desk.out("attachments", "sweep")  # only `fresh`, two days old now, goes
    assert out.startswith("removed 1 file(s), 600 bytes"), out
    assert desk.blobs.exists(digest(b"again " * 100)) and not desk.blobs.exists(digest(fresh))

    # The held message's file was swept; releasing it writes it again and its ticket has it.
    released = desk.out("inbox", "release", "2", "--by", "alice@localhost")
    assert "(ticket-created); 1 mail about it waits in the outbox" in released, released
    key = released.split("ticket ")[1].split()[0]
    assert desk.out("tickets", "attachment", key, "log2.bin").encode() == orphan

    assert "at least 1 hour" in desk.cli("attachments", "sweep", "--older-than", "0.5", ok=(64,)).err


def test_a_put_racing_the_sweep_keeps_its_blob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack on the window between the sweep's listing and its removal: a message in hand puts
    the content of an old orphan (its transaction not committed, so no row names it yet) —
    before the sweep reads the names, or just after the sweep renamed the file aside. Either
    way the blob is there after the sweep."""
    blobs = BlobStore(tmp_path / "attachments")
    first, second, gone = b"first" * 10, b"second" * 10, b"gone" * 10
    for content in (first, second, gone):
        blobs.put(content)
    old = time.time() - 2 * DAY
    for path in blobs.root.rglob("*"):
        if path.is_file():
            os.utime(path, (old, old))
    cutoff = time.time() - DAY

    def names() -> frozenset[str]:
        blobs.put(first)  # between the listing and the removal
        return frozenset()

    real_rename = os.rename

    def rename(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_rename(src, dst)
        if Path(src).name == digest(second):
            blobs.put(second)  # just after the sweep moved it aside

    monkeypatch.setattr(os, "rename", rename)
    swept = blobs.sweep(names, cutoff)
    assert swept.removed == 2  # `second`'s old file, and `gone`
    assert blobs.get(digest(first)) == first and blobs.get(digest(second)) == second
    assert not blobs.exists(digest(gone))
    assert not [p for p in blobs.root.rglob(".sweep-*")], "nothing left aside"


def test_a_sweep_cut_short_puts_its_file_back(tmp_path: Path) -> None:
    """A crash between moving a file aside and removing it: the next sweep puts it back, and
    judges it afresh (named: kept)."""
    blobs = BlobStore(tmp_path / "attachments")
    d = blobs.put(b"kept" * 10)
    path = blobs.path_for(d)
    os.rename(path, path.with_name(f".sweep-{d}.1234abcd"))
    swept = blobs.sweep(lambda: frozenset({d}), time.time() + 60)
    assert (swept.removed, swept.kept) == (0, 1) and blobs.get(d) == b"kept" * 10


def test_the_scheduler_sweeps_daily_with_its_grace(tmp_path: Path) -> None:
    """The daemon's daily job: nothing younger than [scheduler] attachment_grace_hours goes."""
    from conftest import scenario_config

    from mailgate.config import load_config
    from mailgate.pipeline.runner import Runner
    from mailgate.scheduler import Scheduler
    from mailgate.store.db import Database
    from mailgate.store.models import now_utc

    team = 'triage = "triage@localhost"\n[[agents]]\naddress = "triage@localhost"\n'
    path = scenario_config(
        tmp_path / "desk", relay_port=1, desks=[("support@localhost", "SUP", "default")], team=team
    )
    cfg = load_config(path)
    db = Database(cfg.database_url)
    try:
        runner = Runner(db, cfg)
        blobs = BlobStore(cfg.state_dir / "attachments")
        d = blobs.put(b"left by a crash")
        later = now_utc() + timedelta(hours=cfg.scheduler.attachment_grace_hours) - timedelta(minutes=5)
        assert Scheduler(runner, clock=lambda: later).sweep_attachments().removed == 0
        later += timedelta(minutes=10)
        assert Scheduler(runner, clock=lambda: later).sweep_attachments().removed == 1
        assert not blobs.exists(d)
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_names_are_read_on_each_backend(backend: str, tmp_path: Path) -> None:
    """What the sweep keeps is what `named_digests` reads: every digest of every message's
    attachments, on SQLite and on PostgreSQL (a JSON column, compared as text)."""
    from pg import database_on

    from mailgate.store.models import Message, Ticket
    from mailgate.store.sweep import named_digests

    a, b = digest(b"a"), digest(b"b")
    with database_on(backend, tmp_path) as db:
        with db.session() as s:
            ticket = Ticket(key="SUP-1", desk="SUP", number=1, subject="x", requester="r@x", status="open")
            s.add(ticket)
            s.flush()
            assert ticket.id is not None
            s.add(
                Message(
                    ticket_id=ticket.id, attachments=[{"filename": "a", "sha256": a}, {"filename": "big"}]
                )
            )
            s.add(Message(ticket_id=ticket.id, attachments=[]))
            s.add(Message(ticket_id=ticket.id, attachments=[{"filename": "b", "sha256": b}]))
        assert named_digests(db) == {a, b}
