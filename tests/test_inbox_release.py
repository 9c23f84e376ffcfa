"""Held mail has a way out: `mailgate inbox release ID…` runs a held message (an out-of-office
answering no ticket, mail past a sender's flood limit) through the pipeline as if it had not been
held, and the ticket's history names who released it; `mailgate inbox drop ID…` discards one.
Both as an admin runs them: the installed console script on a desk made by `mailgate init`, and
real mail over SMTP into `mailgate run`.

The attacks: a release lets one message through and nothing more — the other held mail of a
flood stays held, a released out-of-office is still never answered (no loop with the
auto-responder), a dropped message delivered again is still known, not ticketed; and a release
interrupted after its commit, or run twice, makes one ticket.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import Sink, deliver, make_mail, scenario_config
from pg import EnvDaemon, backend, config_env  # noqa: F401  (fixture)
from sqlalchemy import select
from support.console import CLEAN_ENV, MAILGATE, InitDesk, mailgate, wait_for_db

from mailgate.store.models import Event

OOO = {"Auto-Submitted": "auto-replied", "X-Autoreply": "yes"}


class Desk(InitDesk):
    def __init__(self, root: Path, *, flood_limit: int | None = None) -> None:
        limits = f"\n[limits]\nnew_tickets_per_sender = {flood_limit}\nflood_window_minutes = 60\n"
        super().__init__(root, extra_config=limits if flood_limit is not None else "")

    def rows(self) -> list[tuple[object, ...]]:
        """(id, state, disposition, ticket key or None) of every inbox row, oldest first."""
        return self.query(
            "SELECT i.id, i.state, i.disposition, t.key FROM inboxitem i"
            " LEFT JOIN ticket t ON t.id = i.ticket_id ORDER BY i.id"
        )

    def mail_to(self, address: str) -> list[str]:
        """The kinds of mail queued to `address`."""
        return [
            str(kind)
            for kind, rcpts in self.query("SELECT kind, recipients FROM outboxitem ORDER BY id")
            if address in json.loads(str(rcpts))
        ]


def out_of_office(n: int = 1) -> bytes:
    return make_mail(
        "Automatic reply: printer",
        "I am out of the office. PS the printer in room 4 is broken again, please send someone.\n",
        sender="bob@acme.com",
        message_id=f"<ooo{n}@acme.com>",
        headers=OOO,
    )


def test_a_released_out_of_office_becomes_a_ticket_that_names_who_released_it(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    desk.ingest(out_of_office())
    listed = desk.cli("inbox", "list").out
    assert re.search(r"^\s+1 done\s+SUP\s+-\s+.*held:auto-reply \(automatic answer", listed, re.M), listed
    assert "`mailgate inbox release 1`" in desk.cli("inbox", "show", "1").out

    released = desk.cli("inbox", "release", "1", "--by", "alice@localhost")
    # what happens next, truthfully: the command sends nothing, and no daemon runs to send it
    assert released.out.strip() == (
        "inbox item 1 released by alice@localhost: ticket SUP-1 (ticket-created); 1 mail about it"
        " waits in the outbox until `mailgate run` sends it (no daemon is running)"
    )
    assert desk.cli("outbox", "list").out.count("pending") == 1
    assert desk.rows() == [(1, "done", "ticket-created", "SUP-1")]
    history = desk.cli("tickets", "show", "SUP-1").out
    assert re.search(
        r"alice@localhost: released inbox message 1, held as held:auto-reply: processed as if not held",
        history,
    ), history
    shown = json.loads(desk.cli("inbox", "show", "1", "--json").out)
    assert shown["released_by"] == "alice@localhost" and shown["ticket"] == "SUP-1"
    assert any(s["stage"] == "release" for s in shown["trace"]), shown["trace"]
    # docs/operations.md: releasing it again is no error; dropping it now is refused (a ticket's).
    assert desk.cli("inbox", "release", "1").out.startswith("inbox item 1 was released by alice@localhost")
    dropped = desk.cli("inbox", "drop", "1", ok=(1,))
    assert dropped.err.startswith("inbox item 1 was released by alice@localhost"), dropped
    assert desk.rows() == [(1, "done", "ticket-created", "SUP-1")]
    # The desk hears of it; the auto-responder is still never answered (no loop to start).
    assert desk.mail_to("team-lead@localhost") == ["triage-needed"]
    assert desk.mail_to("bob@acme.com") == []
    # Without --by, the login running the command is who released it.
    desk.ingest(out_of_office(2))
    assert re.fullmatch(
        r"inbox item 2 released by \S+: ticket SUP-2 \(ticket-created\); 1 mail about it waits in the outbox"
        r" until `mailgate run` sends it \(no daemon is running\)\n",
        desk.cli("inbox", "release", "2").out,
    )


def test_release_refuses_what_is_not_held_and_says_why(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    desk.ingest(make_mail("printer jammed", "Paper stuck.\n", message_id="<p1@acme.com>"))
    not_held = desk.cli("inbox", "release", "1", ok=(1,))
    assert not_held.err.strip() == (
        "inbox item 1 is not held (its outcome: ticket-created, ticket SUP-1): only held:auto-reply,"
        " held:flood, dropped can be released"
    )
    assert desk.cli("inbox", "release", "7", ok=(1,)).err.strip() == "no inbox item 7"
    assert desk.cli("inbox", "drop", "1", ok=(1,)).err.startswith("inbox item 1 is not held")
    # A stranger's mail kept on a ticket is let in by an agent, not released.
    desk.ingest(make_mail("Re: [SUP-1] printer jammed", "Me too.\n", sender="eve@elsewhere.example"))
    assert desk.rows()[1][2] == "held:stranger"
    stranger = desk.cli("inbox", "release", "2", ok=(1,)).err
    assert "a stranger's mail, kept on SUP-1" in stranger and "#cc add" in stranger, stranger
    # One refused id among good ones: the good ones are released, the exit code says one was not.
    desk.ingest(out_of_office())
    both = desk.cli("inbox", "release", "3", "1", ok=(1,))
    assert "inbox item 3 released by" in both.out and "inbox item 1 is not held" in both.err
    assert [r[3] for r in desk.rows()] == ["SUP-1", "SUP-1", "SUP-2"]
    assert desk.query("SELECT count(*) FROM ticket") == [(2,)]


def test_a_flood_release_lets_one_message_through_and_a_drop_keeps_the_rest_out(tmp_path: Path) -> None:
    """Attack: a sender past the flood limit. The admin releases the one real request among the
    held: it alone becomes a ticket (and its sender, a person, gets the acknowledgement); the
    others stay held; a dropped one delivered again is known and not ticketed."""
    desk = Desk(tmp_path, flood_limit=2)
    for i in range(5):
        desk.ingest(
            make_mail(f"buy now {i}", "Cheap.\n", sender="spam@flood.example", message_id=f"<f{i}@x>")
        )
    assert [r[2] for r in desk.rows()] == ["ticket-created"] * 2 + ["held:flood"] * 3

    assert (
        desk.cli("inbox", "release", "4")
        .out.strip()
        .endswith(
            ": ticket SUP-3 (ticket-created); 2 mails about it wait in the outbox until `mailgate run` sends them"
            " (no daemon is running)"
        )
    )
    assert [r[2] for r in desk.rows()] == ["ticket-created"] * 2 + [
        "held:flood",
        "ticket-created",
        "held:flood",
    ]
    assert desk.mail_to("spam@flood.example").count("acknowledgement") == 3

    dropped = desk.cli("inbox", "drop", "3", "5", "--by", "alice@localhost").out.splitlines()
    assert dropped[0].startswith("inbox item 3 dropped by alice@localhost (it was held as held:flood: ")
    assert desk.cli("inbox", "drop", "3").out.startswith("inbox item 3 was dropped already: dropped by alice")
    assert "dropped" in desk.cli("inbox", "list").out
    desk.ingest(make_mail("buy now 2", "Cheap.\n", sender="spam@flood.example", message_id="<f2@x>"))
    assert len(desk.rows()) == 5  # the same message again: a duplicate, no row, no ticket
    assert desk.query("SELECT count(*) FROM ticket") == [(3,)]
    # A drop made by mistake is undone by a release.
    assert ": ticket SUP-4 (ticket-created); 2 mails about it wait" in desk.cli("inbox", "release", "5").out


def test_a_release_interrupted_after_its_commit_or_run_again_makes_one_ticket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release is committed before the message is processed: a process that dies between
    the two leaves the row waiting like any new one. The next release (or a worker) processes
    it, once; releasing it again changes nothing and is no error."""
    from mailgate.cli import main
    from mailgate.pipeline.runner import Runner

    desk = Desk(tmp_path)
    desk.ingest(out_of_office())

    def dies(self: Runner, max_batches: int = 0) -> int:
        raise KeyboardInterrupt  # the process ends right after the release's commit

    monkeypatch.setattr(Runner, "run_until_idle", dies)
    assert main(["--config", str(desk.config), "inbox", "release", "1", "--by", "alice@localhost"]) == 130
    monkeypatch.undo()
    assert desk.rows() == [(1, "new", "held:auto-reply", None)]
    assert "released by alice@localhost, waiting" in desk.cli("inbox", "list").out

    again = desk.cli("inbox", "release", "1", "--by", "bert@localhost").out
    assert re.fullmatch(
        r"inbox item 1 was released by alice@localhost at \S+ \S+ UTC: ticket SUP-1 \(ticket-created\); 1 mail"
        r" about it waits in the outbox until `mailgate run` sends it \(no daemon is running\)\n",
        again,
    ), again
    assert ": ticket SUP-1 (ticket-created); 1 mail about it waits" in desk.cli("inbox", "release", "1").out
    assert desk.query("SELECT count(*) FROM ticket") == [(1,)]
    assert desk.query("SELECT actor FROM event WHERE kind = 'released'") == [("alice@localhost",)]
    assert desk.mail_to("team-lead@localhost") == ["triage-needed"]


def test_a_release_whose_processing_fails_with_no_daemon_says_who_processes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The release stands when processing it here fails; with no daemon up, "the running
    daemon's worker processes it" was untrue: nothing would, until `mailgate run` starts."""
    from mailgate.cli import main
    from mailgate.pipeline.runner import Runner

    desk = Desk(tmp_path)
    desk.ingest(out_of_office())

    def fails(self: Runner, max_batches: int = 0) -> int:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Runner, "run_until_idle", fails)
    assert main(["--config", str(desk.config), "inbox", "release", "1", "--by", "alice@localhost"]) == 0
    assert capsys.readouterr().out == (
        "inbox item 1 released by alice@localhost: queued, not processed yet, and no daemon is running:"
        " `mailgate run` (or this command again) processes it\n"
    )
    monkeypatch.undo()
    assert desk.cli("inbox", "release", "1").out.startswith(
        "inbox item 1 was released by alice@localhost at "
    )
    assert desk.rows() == [(1, "done", "ticket-created", "SUP-1")]


def test_release_of_mail_held_by_the_running_daemon(tmp_path: Path) -> None:
    """Real mail over SMTP into `mailgate run`: the daemon holds the out-of-office; the admin
    releases it while the daemon runs; one ticket, whichever worker takes it."""
    desk = Desk(tmp_path)
    desk.cli("db", "upgrade")  # the database the daemon's heartbeat is read from below
    assert MAILGATE
    with (tmp_path / "run.log").open("ab") as log:
        proc = subprocess.Popen(
            [MAILGATE, "--config", str(desk.config), "run"],
            cwd=tmp_path,
            env=CLEAN_ENV,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_db(desk.db, "SELECT count(*) FROM daemonbeat WHERE listeners LIKE '%smtp://%'", (1,))
        assert deliver(desk.port, out_of_office(), sender="bob@acme.com") == {}
        wait_for_db(
            desk.db, "SELECT state, disposition FROM inboxitem WHERE id = 1", ("done", "held:auto-reply")
        )
        out = desk.cli("inbox", "release", "1", "--by", "alice@localhost").out
        # whichever worker took it, the words say that the running daemon does the rest
        assert re.fullmatch(
            r"inbox item 1 released by alice@localhost: (ticket SUP-1 \(ticket-created\); 1 mail about it goes"
            r" out with the running daemon|queued; the running daemon's worker processes it \(`mailgate"
            r" inbox show 1` tells the outcome\))\n",
            out,
        ), out
        wait_for_db(
            desk.db, "SELECT state, disposition FROM inboxitem WHERE id = 1", ("done", "ticket-created")
        )
        assert desk.query("SELECT key FROM ticket") == [("SUP-1",)]
        assert desk.query("SELECT actor FROM event WHERE kind = 'released'") == [("alice@localhost",)]
    finally:
        proc.terminate()
        proc.wait(60)


def test_release_and_drop_on_each_backend_beside_the_running_daemon(
    tmp_path: Path,
    sink: Sink,
    backend: dict[str, str],  # noqa: F811
) -> None:
    """The flood case on SQLite and on PostgreSQL, the command run while the daemon (whose
    worker claims with FOR UPDATE SKIP LOCKED on PostgreSQL) is up: one ticket per release."""
    cfg = scenario_config(
        tmp_path / "desk",
        relay_port=sink.port,
        desks=[("support@localhost", "SUP", "default")],
        team='triage = "triage@localhost"\n[[agents]]\naddress = "triage@localhost"\n',
        extra="[limits]\nnew_tickets_per_sender = 1\nflood_window_minutes = 60",
    )
    d = EnvDaemon(cfg, backend)
    env = config_env(backend)
    try:
        for i in range(3):
            d.send(make_mail(f"order {i}", sender="shop@flood.example"), sender="shop@flood.example")
        d.settle()
        held = [r.id for r in d.inbox() if r.disposition == "held:flood"]
        assert len(held) == 2
        out = mailgate(
            tmp_path, "--config", str(cfg), "inbox", "release", str(held[0]), "--by", "alice@x", env=env
        ).out
        assert re.fullmatch(
            rf"inbox item {held[0]} released by alice@x: ticket SUP-2 \(ticket-created\); \d mails? about it"
            r" (goes|go) out with the running daemon\n",
            out,
        ), out
        dropped = mailgate(tmp_path, "--config", str(cfg), "inbox", "drop", str(held[1]), env=env).out
        assert dropped.startswith(f"inbox item {held[1]} dropped by ")
        d.settle()
        assert sorted(t.key for t in d.tickets()) == ["SUP-1", "SUP-2"]
        assert [r.disposition for r in d.inbox()] == ["ticket-created", "ticket-created", "dropped"]
        with d.db.session() as s:
            actors = s.execute(select(Event.actor).where(Event.kind == "released")).scalars().all()
        assert actors == ["alice@x"]
    finally:
        d.stop()
