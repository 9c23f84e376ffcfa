"""The command line a person reads (issue 25), each view run as the installed console script in a
new process on a fresh desk made by `mailgate init`: the history as sentences, steady ticket
columns with filters, sorting, JSON and CSV, quiet ends when the reader goes away or on Ctrl-C,
the inbox and outbox headers, the outbox's last error and sender, `status` from the running
daemon's heartbeat, bounded References that still thread, and progress bars on a terminal only."""

from __future__ import annotations

import csv
import io
import json
import mailbox
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from email import message_from_bytes
from pathlib import Path

import pytest
from conftest import Sink, free_port, make_mail
from support.console import CLEAN_ENV, MAILGATE, Run, mailgate, on_terminal, wait_for_db

LONG = "someone.with.a.rather.long.address.indeed@example-company.com"


class Desk:
    """A desk made by `mailgate init` in a temporary directory, on a free SMTP port."""

    def __init__(self, root: Path, *, relay: int | None = None) -> None:
        self.root = root
        mailgate(root, "init", "desk", "--desk-address", "support@localhost", "--key", "SUP")
        # The example desk's rules (this repository's rules/: groups, round-robin, the care-it
        # rule), so the history and the filters have routing to show; init writes a minimal team.
        shutil.copytree(
            Path(__file__).resolve().parents[1] / "rules", root / "desk" / "rules", dirs_exist_ok=True
        )
        self.config = root / "desk" / "config.toml"
        self.port = free_port()
        text = re.sub(r"(?m)^port = 2525$", f"port = {self.port}", self.config.read_text(), count=1)
        if relay is not None:
            text = re.sub(r'(?m)^transport = "file"$', 'transport = "smtp"', text, count=1)
            text = re.sub(r"(?m)^port = 25$", f"port = {relay}", text, count=1)
        self.config.write_text(text)
        self.db = root / "desk" / "state" / "mailgate.db"

    def cli(self, *args: str, ok: tuple[int, ...] = (0,), stdin: bytes | None = None) -> Run:
        return mailgate(self.root, "--config", str(self.config), *args, ok=ok, stdin=stdin)

    def ingest(self, *mails: bytes) -> Run:
        """The mails as one mbox, stored and processed in one process, oldest first."""
        path = self.root / f"batch-{time.monotonic_ns()}.mbox"
        box = mailbox.mbox(path)
        for raw in mails:
            box.add(raw)
        box.close()
        return self.cli("ingest", "--mbox", str(path))

    def start(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        assert MAILGATE
        with (self.root / "run.log").open("ab") as log:
            return subprocess.Popen(
                [MAILGATE, "--config", str(self.config), "run"],
                cwd=self.root,
                # the web listener on any free port: 8025 may be another desk's on this machine
                env={**CLEAN_ENV, "MAILGATE_WEB_PORT": "0", **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def status(self, ok: tuple[int, ...] = (0, 1)) -> tuple[Run, dict[str, object]]:
        text = self.cli("status", ok=ok)
        return text, json.loads(self.cli("status", "--json", ok=ok).out)


def _wait(what: str, check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout}s for {what}")


# -- tickets show: the history as sentences ------------------------------------------------------


def test_history_reads_as_sentences_and_json_keeps_the_data(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    desk.ingest(
        make_mail("printer jammed in room 4", "Paper stuck.\n", message_id="<h1@acme.com>"),
        make_mail(
            "Re: printer jammed", "Still stuck.\n", message_id="<h2@acme.com>", in_reply_to="<h1@acme.com>"
        ),
    )
    shown = desk.cli("tickets", "show", "SUP-1").out
    history = shown.split("\nHistory:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert re.fullmatch(
        r"  \S+ \S+ UTC  customer1@acme\.com: opened the ticket by mbox, status \w+", history[0]
    ), history
    assert re.fullmatch(
        # after 18:00 desk time the shipped "after-hours" rule hits too
        r"  \S+ \S+ UTC  system: routed to IT by (rule|rules after-hours and) care-it; assigned to \S+@localhost \(.+\);.*",
        history[1],
    ), history
    assert any(line.endswith("customer1@acme.com: replied") for line in history), history
    # No event prints as data: no dicts, no key=value pairs.
    assert not any(c in "\n".join(history) for c in "{}=["), history
    as_json = json.loads(desk.cli("tickets", "show", "SUP-1", "--json").out)
    routed = next(e for e in as_json["events"] if e["kind"] == "routed")
    assert routed["data"]["routing"]["group"] == "IT"  # the data for machines, as stored
    assert routed["text"] == history[1].split("UTC  ", 1)[1]  # and the same sentence


def test_every_event_kind_the_code_writes_has_its_words() -> None:
    """A kind added to the pipeline without words would print as `kind key value` pairs: each
    kind written anywhere by `Repo.event` is worded in mailgate/domain/history.py."""
    from mailgate.domain.history import WORDS
    from mailgate.store.kinds import EventKind

    written = {kind.value for kind in EventKind}  # Repo.event takes nothing else
    assert {"created", "routed", "status", "assign", "held", "bounce"} <= written, written
    assert written <= set(WORDS), written - set(WORDS)


# -- tickets list: steady columns, filters, sorting, JSON, CSV -------------------------------------


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Desk:
    desk = Desk(tmp_path_factory.mktemp("list-desk"))
    desk.ingest(
        make_mail("printer jammed", "Paper stuck.\n", sender="a@acme.com", message_id="<l1@acme.com>"),
        make_mail("a very long subject line " * 6, "Hello.\n", sender=LONG, message_id="<l2@acme.com>"),
        make_mail("printer on fire", "Smoke.\n", sender="b@acme.com", message_id="<l3@acme.com>"),
        make_mail("invoice question", "Where is it?\n", sender="c@acme.com", message_id="<l4@acme.com>"),
    )
    return desk


def _rows(listing: str) -> list[str]:
    return listing.splitlines()[1:]


def test_tickets_list_keeps_its_columns_whatever_the_values(listed: Desk) -> None:
    out = listed.cli("tickets", "list").out
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "STATUS", "PRIORITY", "GROUP", "ASSIGNEE", "REQUESTER", "SUBJECT"]
    subject_at = header.index("SUBJECT")
    for row in rows:  # every subject starts under SUBJECT: a long address does not push it
        assert row[subject_at - 1] == " " and row[subject_at] != " ", (header, row)
    long_row = next(r for r in rows if r.startswith("SUP-2 "))
    assert "someone.with.a.rather.lon…" in long_row and LONG not in long_row
    assert long_row.endswith(("a very long subject line " * 6).strip())  # whole in a pipe


def test_tickets_list_filters_and_sorts(listed: Desk) -> None:
    keys = lambda *args: [r.split()[0] for r in _rows(listed.cli("tickets", "list", *args).out)]  # noqa: E731
    assert keys() == ["SUP-4", "SUP-3", "SUP-2", "SUP-1"]  # newest first
    assert keys("--sort", "key") == ["SUP-1", "SUP-2", "SUP-3", "SUP-4"]
    assert keys("--sort", "created", "--reverse", "--limit", "2") == ["SUP-1", "SUP-2"]
    it = json.loads(listed.cli("tickets", "list", "--json").out)
    groups = {t["key"]: t["group"] for t in it}
    assert {k for k, g in groups.items() if g == "IT"} == set(keys("--group", "IT")) != set()
    assert keys("--group", "it") == keys("--group", "IT")  # as an agent types it
    typo = listed.cli("tickets", "list", "--group", "Nework").out.strip()
    on_tickets = ", ".join(sorted({g for g in groups.values() if g}))
    assert typo == f"no tickets: no ticket has group 'Nework' (groups on tickets: {on_tickets})", typo
    assignee = next(t["assignee"] for t in it if t["key"] == "SUP-1")
    assert "SUP-1" in keys("--assignee", assignee) and "SUP-1" in keys("--mine", assignee)
    assert set(keys("--mine", assignee)) == {t["key"] for t in it if t["assignee"] == assignee}
    assert keys("--status", "open", "--desk", "SUP", "--sort", "key") == ["SUP-1", "SUP-2", "SUP-3", "SUP-4"]
    assert listed.cli("tickets", "list", "--status", "closed").out.strip() == "no tickets"
    assert listed.cli("tickets", "list", "--desk", "OTHER").out.strip() == "no tickets"


def test_tickets_list_json_and_csv(listed: Desk) -> None:
    as_json = json.loads(listed.cli("tickets", "list", "--sort", "key", "--json").out)
    assert [t["key"] for t in as_json] == ["SUP-1", "SUP-2", "SUP-3", "SUP-4"]
    assert as_json[1]["requester"] == LONG  # machines get the whole value
    rows = list(csv.DictReader(io.StringIO(listed.cli("tickets", "list", "--sort", "key", "--csv").out)))
    assert [r["key"] for r in rows] == ["SUP-1", "SUP-2", "SUP-3", "SUP-4"]
    assert rows[1]["requester"] == LONG and rows[0]["subject"] == "printer jammed"
    assert rows[0]["created_at"].endswith("+00:00")


# -- quiet ends -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("tickets", "list"), ("tickets", "show", "SUP-1"), ("inbox", "list"), ("outbox", "list"), ("status",)],
    ids=lambda a: " ".join(a),
)
def test_a_reader_that_goes_away_ends_the_command_quietly(listed: Desk, args: tuple[str, ...]) -> None:
    """`mailgate tickets list | head`: the reader closes before the command writes."""
    assert MAILGATE
    reader, writer = os.pipe()
    proc = subprocess.Popen(
        [MAILGATE, "--config", str(listed.config), *args],
        cwd=listed.root,
        env=CLEAN_ENV,
        stdout=writer,
        stderr=subprocess.PIPE,
    )
    os.close(writer)
    os.close(reader)  # gone before the command has loaded, let alone printed
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err.decode()  # 128 + SIGPIPE, as a shell reports `yes | head`
    assert err == b"", err.decode()


def _catches_sigint_and_waits_on_a_pipe(pid: int) -> bool:
    """The state a person's Ctrl-C meets: the process has its SIGINT handler in place (Python's,
    which raises KeyboardInterrupt) and sleeps in a read of a pipe (its standard input)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    return bool(caught & (1 << (signal.SIGINT - 1))) and "pipe_read" in Path(f"/proc/{pid}/wchan").read_text()


def test_ctrl_c_ends_a_command_without_a_traceback(listed: Desk) -> None:
    """Ctrl-C while `ingest -` waits for a message that never comes. The test waits on the
    child's state, never on time: its SIGINT handler installed and its read of standard input
    asleep. Standard input stays open until the child has exited — closed at once, as
    `communicate()` does, a loaded machine could let the read see end of file before the
    signal, and the command would end on "empty message" instead of the interrupt. The child
    starts with SIGINT at its default, as a terminal's foreground process does, whatever the
    test runner inherited (a runner started in the background ignores SIGINT, and so would a
    child it starts)."""
    assert MAILGATE
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])",
            MAILGATE,
            "--config",
            str(listed.config),
            "ingest",
            "-",
        ],
        cwd=listed.root,
        env=CLEAN_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:  # its pipes closed, standard input last, once it has exited
        assert proc.stderr is not None
        try:
            # Waiting for the message on standard input, as a person who forgot to pipe one in.
            _wait("ingest to wait on its input", lambda: _catches_sigint_and_waits_on_a_pipe(proc.pid))
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=120)
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 130, err.decode()
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err.decode()
    assert b"empty message" not in err, err.decode()


# -- inbox list, outbox list, status: what runs, from the daemon's heartbeat ----------------------


def test_inbox_list_has_a_header_row(listed: Desk) -> None:
    header, *rows = listed.cli("inbox", "list").out.splitlines()
    assert header.split() == ["ID", "STATE", "DESK", "TICKET", "FROM", "OUTCOME"]
    assert len(rows) == 4 and all(re.match(r"\s+\d+ done\s+SUP\s+SUP-\d", r) for r in rows), rows


def test_status_and_outbox_report_the_running_daemon_and_say_when_none_runs(tmp_path: Path) -> None:
    """`mailgate run` with MAILGATE_SMTP_PORT: status reports that port (not the config's), the
    pid, the last batch; the outbox shows the relay's answer and that the sender runs. Stopped,
    or killed, status says no daemon runs and exits 1."""
    relay = Sink().start()
    relay.handler.reply = "451 4.3.0 relay busy, try later"
    try:
        desk = Desk(tmp_path, relay=relay.port)
        desk.cli("db", "upgrade")  # a database, as the daemon leaves it (one never run: test_ops_cli)
        text, st = desk.status()
        assert text.code == 1 and "daemon:   NOT RUNNING" in text.out, text
        assert f"nothing listens (config.toml: smtp://127.0.0.1:{desk.port})" in text.out
        assert "no daemon is running" in text.out and st["daemons"] == []

        port = free_port()
        proc = desk.start({"MAILGATE_SMTP_PORT": str(port)})
        try:
            _wait("the daemon's heartbeat", lambda: desk.status()[1]["daemons"])
            text, st = desk.status()
            [daemon] = st["daemons"]  # type: ignore[misc]
            assert (daemon["pid"], daemon["alive"]) == (proc.pid, True)
            assert st["listeners"] == daemon["listeners"] == [f"smtp://127.0.0.1:{port}"]
            assert re.search(rf"^daemon:   running, pid {proc.pid} on \S+, started ", text.out, re.M), text
            assert re.search(rf"^intake:   smtp://127.0.0.1:{port}$", text.out, re.M), text
            assert text.code == 0 and text.out.rstrip().endswith("ok"), text

            # A message through the daemon: the pipeline's last batch, and mail the relay defers.
            desk.cli("ingest", "-", stdin=make_mail("vpn down", "It drops.\n", message_id="<s1@acme.com>"))
            _wait("the last batch in the heartbeat", lambda: desk.status()[1]["daemons"][0]["last_batch_at"])  # type: ignore[index]
            wait_for_db(desk.db, "SELECT count(*) > 0 FROM outboxitem WHERE last_error LIKE '451%'", (1,))
            listing = desk.cli("outbox", "list")
            header, *rows = listing.out.splitlines()
            assert header.split() == ["ID", "STATE", "KIND", "TO", "TRIES", "NEXT", "LAST", "ERROR"]
            deferred = [r for r in rows if "451 4.3.0 relay busy, try later" in r]
            assert deferred and all(re.search(r" pending .* in \d+[sm] ", r) for r in deferred), rows
            assert f"sender: running in the daemon, pid {proc.pid}" in listing.out, listing
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, (tmp_path / "run.log").read_text()[-3000:]
        text, st = desk.status()
        assert text.code == 1 and "daemon:   NOT RUNNING" in text.out and st["daemons"] == [], text
        assert "no daemon is running" in text.out
        listing = desk.cli("outbox", "list")
        assert "sender: NOT RUNNING (no daemon)" in listing.err, listing

        # Killed (no stop, no goodbye): the row stays, and status sees its process is gone.
        proc = desk.start({"MAILGATE_SMTP_PORT": str(port)})
        _wait("the daemon's heartbeat", lambda: desk.status()[1]["daemons"])
        proc.kill()
        proc.wait(60)
        text, st = desk.status()
        assert text.code == 1, text
        assert re.search(rf"^daemon:   NOT RUNNING \(last seen: pid {proc.pid} on \S+, ", text.out, re.M), (
            text
        )
        assert [d["alive"] for d in st["daemons"]] == [False]  # type: ignore[union-attr]
    finally:
        relay.stop()


# -- References on outgoing mail ------------------------------------------------------------------


def test_references_keep_the_first_and_the_last_few_and_still_thread(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    first = make_mail("printer jammed", "Paper stuck.\n", message_id="<r0@acme.com>")
    replies = [
        make_mail(
            f"Re: printer jammed ({n})",
            f"Update {n}.\n",
            message_id=f"<r{n}@acme.com>",
            in_reply_to="<r0@acme.com>",
        )
        for n in range(1, 13)
    ]
    desk.ingest(first, *replies)
    with sqlite3.connect(f"file:{desk.db}?mode=ro", uri=True) as conn:
        raws = [bytes(r) for (r,) in conn.execute("SELECT raw FROM outboxitem ORDER BY id")]
    newest = message_from_bytes(raws[-1])  # the agent's notification of the last reply
    longest = re.findall(r"<([^>]+)>", newest["References"])
    # 13 messages and 12 notifications on the ticket: the first id and the newest five.
    assert len(longest) == 6 and longest[0] == "r0@acme.com", longest
    assert longest[-1] == newest["In-Reply-To"].strip("<>") == "r12@acme.com", longest
    header = re.search(r"\r\nReferences:.*?\r\n(?! )", raws[-1].decode(), re.S)
    assert header and all(len(line) <= 78 for line in header.group(0).strip().split("\r\n")), header
    # A reply that carries only that References header (no In-Reply-To, no ticket tag) threads.
    answer = make_mail(
        "about my printer",
        "Fixed now, thanks.\n",
        message_id="<r99@acme.com>",
        references=" ".join(f"<{r}>" for r in longest),
    )
    desk.cli("ingest", "-", stdin=answer)
    keys = [r.split()[0] for r in desk.cli("tickets", "list").out.splitlines()[1:]]
    assert keys == ["SUP-1"], keys
    messages = json.loads(desk.cli("tickets", "show", "SUP-1", "--json").out)["messages"]
    assert messages[-1]["message_id"] == "r99@acme.com" and len(messages) == 14


# -- progress bars ------------------------------------------------------------------------------


def test_progress_bars_on_a_terminal_and_none_in_a_pipe_or_under_log_json(tmp_path: Path) -> None:
    desk = Desk(tmp_path)
    box = mailbox.mbox(tmp_path / "old.mbox")
    for n in range(40):
        box.add(
            make_mail(
                f"printer {n} jammed",
                "Paper stuck.\n",
                sender=f"p{n}@acme.com",
                message_id=f"<pb-{n}@acme.com>",
            )
        )
    box.close()
    md = mailbox.Maildir(tmp_path / "Maildir")
    for n in range(5):
        md.add(make_mail(f"vpn {n}", "It drops.\n", sender=f"v{n}@acme.com", message_id=f"<md-{n}@acme.com>"))

    shown = on_terminal(
        tmp_path, "--config", str(desk.config), "ingest", "--mbox", str(tmp_path / "old.mbox")
    )
    assert shown.out.startswith("stored 40, duplicates 0"), shown
    assert re.search(r"storing mbox: 100%\|.*\| [\d.]+k/[\d.]+k \[", shown.err), shown.err  # bytes, rate, ETA
    assert re.search(r"processing: 100%\|.*\| 40/40 \[.*msg/s\]", shown.err), shown.err
    shown = on_terminal(
        tmp_path, "--config", str(desk.config), "ingest", "--maildir", str(tmp_path / "Maildir")
    )
    assert re.search(r"storing maildir: 100%\|.*\| 5/5 \[", shown.err), shown.err

    # In a pipe: the same command draws nothing (logs only); under --log-json only JSON lines.
    (tmp_path / "again.mbox").write_bytes((tmp_path / "old.mbox").read_bytes().replace(b"pb-", b"pc-"))
    piped = desk.cli("ingest", "--mbox", str(tmp_path / "again.mbox"))
    assert "%|" not in piped.err and "\r" not in piped.err, piped.err
    (tmp_path / "third.mbox").write_bytes((tmp_path / "old.mbox").read_bytes().replace(b"pb-", b"pd-"))
    as_json = on_terminal(
        tmp_path, "--config", str(desk.config), "--log-json", "ingest", "--mbox", str(tmp_path / "third.mbox")
    )
    lines = [line for line in as_json.err.replace("\r\n", "\n").splitlines() if line.strip()]
    assert lines and all(json.loads(line) for line in lines), as_json.err[-2000:]

    # db upgrade from the schema one migration back (Alembic's own downgrade of the newest
    # migration, whichever it is): one bar step per migration.
    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from mailgate.store.migrate import HEAD, alembic_config

    before = ScriptDirectory.from_config(alembic_config()).get_revision(HEAD).down_revision
    engine = create_engine(f"sqlite:///{desk.db}")
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "-1")
    engine.dispose()
    upgraded = on_terminal(tmp_path, "--config", str(desk.config), "db", "upgrade")
    assert f"(was {before})" in upgraded.out, upgraded
    assert re.search(r"db upgrade: \w+: 100%\|.*\| 1/1 \[", upgraded.err), upgraded.err
    assert "%|" not in desk.cli("db", "upgrade").err
