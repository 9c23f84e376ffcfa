"""`mailgate ingest`: one message from stdin or a file (an MTA pipe transport, like rt-mailgate),
or a whole mbox / maildir for migrations. The reading, the hand-over to a running daemon and the
storing are the pipe intake's (mailgate/intake/pipe.py); this command parses its arguments,
calls it, processes what was stored (the pipeline's one runner path) and picks the exit code.

Exit codes follow sysexits(3) so the MTA knows what to do: 0 stored (it is ours now), 75
EX_TEMPFAIL when the database is unavailable (the MTA keeps the mail and retries), 67 EX_NOUSER
when no desk takes the recipient, 66 EX_NOINPUT for a missing file, 65 EX_DATAERR for empty input.
Processing happens after the commit; a processing problem never changes the exit code, because
the message is already safe in the inbox.

One message (a file or stdin) says what became of it in one line (inbox id and ticket, or the
inbox row it duplicates) only to a person: when standard output is a terminal, or with --verbose.
An MTA's pipe has no terminal, and Postfix puts the command's output into delivery status
notices and bounces, where a sender must not read our inbox ids (docs/postfix.md).
"""

from __future__ import annotations

import argparse
import gc
import logging
import mailbox
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from mailgate.cli.common import config_of, open_db
from mailgate.config import Config
from mailgate.intake import pipe
from mailgate.mail.decode import NULL_REVERSE_PATH, reverse_path

if TYPE_CHECKING:  # the database layer is loaded only when the message is stored here
    from mailgate.pipeline.runner import Runner
    from mailgate.store.db import Database

log = logging.getLogger(__name__)


def _ingest(args: argparse.Namespace) -> int:
    if args.file not in (None, "-") and not Path(args.file).exists():
        print(f"mailgate ingest: no such file: {args.file}", file=sys.stderr)
        return os.EX_NOINPUT
    config = config_of(args)
    source = "mbox" if args.mbox else "maildir" if args.maildir else "pipe"
    # An explicit empty sender is the null reverse path (Postfix pipe with `null_sender=`); no
    # --sender at all is an envelope nobody gave. Either way stored as the SMTP intake stores it.
    mail_from = NULL_REVERSE_PATH if args.sender == "" else reverse_path(args.sender)
    rcpts = tuple(r.lower() for r in args.recipient or ())
    unknown = [r for r in rcpts if not config.desk_for(r)]
    if unknown:
        print(f"mailgate ingest: no desk for {', '.join(unknown)}", file=sys.stderr)
        return os.EX_NOUSER
    limit = config.smtp.max_message_size
    if source != "pipe":
        return _store(args, config, source, mail_from, rcpts, _counted(args, limit))
    try:
        raw = pipe.read_one(args.file, limit)
    except pipe.TooBig as exc:
        print(f"mailgate ingest: message too big ({exc}; smtp.max_message_size): not stored", file=sys.stderr)
        return os.EX_DATAERR
    except OSError as exc:
        print(f"mailgate ingest: cannot read input: {exc}", file=sys.stderr)
        return os.EX_TEMPFAIL
    if not raw.strip():
        print("mailgate ingest: empty message", file=sys.stderr)
        return os.EX_DATAERR
    if rcpts and mail_from and not args.direct and not args.no_process:
        # Only a known envelope goes by SMTP: there an unknown sender could only be said as "<>",
        # which is a delivery report's.
        code = pipe.hand_to_daemon(config, raw, mail_from, rcpts)
        if code is not None:
            if code == os.EX_OK and _to_a_person(args):
                print(f"handed to the running daemon on port {config.smtp.port}: `mailgate inbox` shows it")
            return code
    return _store(args, config, source, mail_from, rcpts, iter([raw]), raw)


def _to_a_person(args: argparse.Namespace) -> bool:
    return bool(args.verbose) or sys.stdout.isatty()


def _store(
    args: argparse.Namespace,
    config: Config,
    source: str,
    mail_from: str,
    rcpts: tuple[str, ...],
    messages: Iterator[bytes | None],
    one: bytes | None = None,
) -> int:
    """Store the messages here and now, then process them unless --no-process. `one` is the
    message when a single one was piped or named: what became of it is told to a person."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from mailgate.intake.accept import Acceptor, Envelope

    try:
        with open_db(config, create=True) as db:
            done = pipe.store(
                Acceptor(db, config), messages, Envelope(mail_from=mail_from, rcpt_tos=rcpts, source=source)
            )
            if source == "pipe" and not (done.stored or done.duplicates):
                print("mailgate ingest: no desk takes this message (no matching recipient)", file=sys.stderr)
                return os.EX_NOUSER
            processed = 0 if args.no_process else _process(args, db, config)
            told = _outcome(db, done, one) if one is not None and _to_a_person(args) else []
    except (OperationalError, DBAPIError) as exc:
        print(f"mailgate ingest: database unavailable, try again later: {exc}", file=sys.stderr)
        return os.EX_TEMPFAIL
    except OSError as exc:
        print(f"mailgate ingest: cannot read input: {exc}", file=sys.stderr)
        return os.EX_TEMPFAIL if source == "pipe" else os.EX_NOINPUT
    for line in told:
        print(line)
    if source != "pipe":
        print(
            f"stored {done.stored}, duplicates {done.duplicates}, without desk {done.without_desk}, "
            f"processed {processed}"
            + (f", over the size limit (not stored) {done.too_big}" if done.too_big else "")
        )
    return os.EX_OK


def _outcome(db: Database, done: pipe.Stored, raw: bytes) -> list[str]:
    """One line per desk: the inbox row stored and what processing made of it, or the row this
    message duplicates (stored before, so nothing was done)."""
    from sqlmodel import col, select

    from mailgate.intake.accept import message_id_of
    from mailgate.store.inbox import content_digest
    from mailgate.store.models import InboxItem, Ticket

    lines: list[str] = []
    with db.reading() as s:
        for item_id in done.ids:
            item = s.get(InboxItem, item_id)
            if item is None:
                continue
            ticket = s.get(Ticket, item.ticket_id) if item.ticket_id is not None else None
            if item.state == "done":
                became = f"ticket {ticket.key}, {item.disposition}" if ticket else str(item.disposition)
            elif item.state == "failed":
                became = f"quarantined at {item.stage}: {item.reason} (`mailgate inbox failed`)"
            else:
                became = "not processed yet: the daemon will"
            lines.append(f"stored as inbox {item_id} ({item.desk}): {became}")
        if done.duplicate_desks:
            same = select(InboxItem.id, InboxItem.desk).where(
                col(InboxItem.desk).in_(done.duplicate_desks),
                col(InboxItem.message_id) == message_id_of(raw),
                col(InboxItem.digest) == content_digest(raw),
            )
            for first, desk in s.exec(same):
                lines.append(f"already stored (duplicate of inbox {first}, {desk}), nothing done")
    return lines


def _counted(args: argparse.Namespace, limit: int) -> Iterator[bytes | None]:
    """The messages of the mbox or maildir, counted on a progress bar when a person watches:
    bytes of an mbox (its messages are only counted by reading it), messages of a maildir."""
    from mailgate.cli.progress import progress

    path = Path(args.file)
    if args.mbox:
        total, unit = path.stat().st_size, "B"
    else:
        total, unit = sum(1 for _ in mailbox.Maildir(path, factory=None, create=False).iterkeys()), "msg"
    source = "mbox" if args.mbox else "maildir"
    with progress(args, total=total, desc=f"storing {source}", unit=unit, unit_scale=unit == "B") as bar:
        shown = 0
        for raw in pipe.mailbox_messages(path, mbox=args.mbox, limit=limit):
            yield raw
            step = 1 if unit == "msg" else len(raw) if raw is not None else 0
            bar.update(step)
            shown += step
        bar.update(max(total - shown, 0))  # an mbox's From_ lines and skipped messages
        bar.close()  # stored: the processing bar takes its place


def _process(args: argparse.Namespace, db: Database, config: Config) -> int:
    """Work off the inbox through the pipeline, as the daemon's worker does (one runner path),
    with a bar of the messages processed when a person watches. Stored is stored: a failure here
    is logged, and a running daemon picks the messages up."""
    from mailgate.pipeline.runner import Runner

    try:
        runner = Runner(db, config)
        # What is loaded now lives as long as the process: the collector's full passes need
        # not walk it again for every batch (gc.freeze, as servers do after start).
        gc.freeze()
        return _run_watched(args, db, runner)
    except Exception as exc:  # noqa: BLE001 - the messages are committed: the daemon processes them
        log.error("processing after ingest failed (the messages are stored): %s", exc)
        return 0


def _run_watched(args: argparse.Namespace, db: Database, runner: Runner) -> int:
    """`runner.run_until_idle()`; on a terminal, a thread counts the rows still to do (a read,
    which on SQLite takes no lock from the runner) for the bar."""
    from mailgate.cli.progress import progress, wanted

    if not wanted(args):
        return runner.run_until_idle()
    from sqlalchemy import func, select
    from sqlmodel import col

    from mailgate.store.models import InboxItem

    def left() -> int:
        with db.reading() as s:
            count = select(func.count()).where(col(InboxItem.state).in_(["new", "processing"]))
            return int(s.execute(count).scalar_one())

    total = left()
    done = threading.Event()
    with progress(args, total=total, desc="processing", unit="msg") as bar:

        def watch() -> None:
            shown = 0
            while not done.wait(0.5):
                now_done = total - left()
                bar.update(max(now_done - shown, 0))
                shown = max(shown, now_done)
            bar.update(max(total - shown, 0))

        watcher = threading.Thread(target=watch, name="progress", daemon=True)
        watcher.start()
        try:
            return runner.run_until_idle()
        finally:
            done.set()
            watcher.join()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="take mail from stdin, a file, an mbox or a maildir")
    p.add_argument("file", nargs="?", help="message file, mbox or maildir; - or nothing for stdin")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--mbox", action="store_true", help="FILE is an mbox")
    kind.add_argument("--maildir", action="store_true", help="FILE is a maildir")
    p.add_argument("--recipient", "-r", action="append", help="envelope recipient (the MTA's ${recipient})")
    p.add_argument(
        "--sender",
        "-f",
        help='envelope sender (the MTA\'s ${sender}); "" or MAILER-DAEMON is the null sender <> of a bounce',
    )
    p.add_argument("--no-process", action="store_true", help="only store; the daemon processes later")
    p.add_argument(
        "--direct",
        action="store_true",
        help="store and process here even when a daemon listens (default: hand a piped message to it)",
    )
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=_ingest)
