"""`mailgate ingest`: one message from stdin or a file (an MTA pipe transport, like rt-mailgate),
or a whole mbox / maildir for migrations.

Exit codes follow sysexits(3) so the MTA knows what to do: 0 stored (it is ours now), 75
EX_TEMPFAIL when the database is unavailable (the MTA keeps the mail and retries), 67 EX_NOUSER
when no desk takes the recipient, 66 EX_NOINPUT for a missing file, 65 EX_DATAERR for empty input.
Processing happens after the commit; a processing problem never changes the exit code, because
the message is already safe in the inbox.

One piped message with its envelope recipient goes to the running daemon's listener when one
answers on the configured `[smtp]` address, as rt-mailgate hands mail to a running RT: the
daemon's 250 comes after its commit, so exit 0 means the same, and the process never loads the
database layer and the pipeline (about a second of CPU per message). With no daemon answering,
or `--direct`, it stores and processes the message itself.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import mailbox
import mmap
import os
import sys
from collections.abc import Iterator
from os import EX_DATAERR, EX_NOINPUT, EX_NOUSER, EX_TEMPFAIL
from pathlib import Path
from typing import TYPE_CHECKING

from mailgate.cli.common import config_of
from mailgate.config import Config

if TYPE_CHECKING:
    from mailgate.pipeline.runner import Runner
    from mailgate.store.db import Database

log = logging.getLogger(__name__)
BATCH = 200
_RELEASE_EVERY = 16 * 1024 * 1024  # bytes of a mapped mbox read before its pages are let go


class TooBig(Exception):
    """A single message over smtp.max_message_size: refused like SMTP's 552, never read whole."""


def mbox_messages(path: Path) -> Iterator[bytes]:
    """The messages of an mbox, as the stdlib's `mailbox.mbox` reads them (every line starting
    "From " begins a message; the blank line before it is the separator), without its per-line
    Python loop, which dominated indexing a large mailbox (bench/README.md). The file is
    mapped and walked once; pages behind the reader are let go, so a mailbox of any size costs
    about one message of memory."""
    with path.open("rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            size = len(data)
            start = 0 if data[:5] == b"From " else data.find(b"\nFrom ") + 1
            if start == 0 and data[:5] != b"From ":
                return  # no From_ line: no message
            released = 0
            while True:
                nxt = data.find(b"\nFrom ", start)
                end = nxt + 1 if nxt >= 0 else size
                body = data.find(b"\n", start, end)
                body = end - 1 if body < 0 else body  # a From_ line and nothing else: empty
                stop = end - 1 if end - start >= 2 and data[end - 2 : end] == b"\n\n" else end
                yield data[body + 1 : max(stop, body + 1)]
                if end - released >= _RELEASE_EVERY:
                    upto = end - end % mmap.PAGESIZE
                    data.madvise(mmap.MADV_DONTNEED, released, upto - released)
                    released = upto
                if nxt < 0:
                    return
                start = end


def _messages(args: argparse.Namespace, limit: int) -> Iterator[bytes | None]:
    """The messages of an mbox or maildir; None for one over the size limit (counted, skipped)."""
    if args.mbox:
        for raw in mbox_messages(Path(args.file)):
            yield raw if len(raw) <= limit else None
    else:
        md = mailbox.Maildir(args.file, factory=None, create=False)
        for key in sorted(md.iterkeys()):
            raw = md.get_bytes(key)
            yield raw if len(raw) <= limit else None


def _work_size(args: argparse.Namespace) -> tuple[int, str]:
    """How much an mbox or maildir holds, for the progress bar: (bytes, "B") of an mbox, whose
    messages are only counted by reading it, or (messages, "msg") of a maildir."""
    if args.mbox:
        return Path(args.file).stat().st_size, "B"
    return sum(1 for _ in mailbox.Maildir(args.file, factory=None, create=False).iterkeys()), "msg"


def _process(args: argparse.Namespace, db: Database, runner: Runner) -> int:
    """`runner.run_until_idle()`, with a bar of the messages processed when a person watches: a
    thread counts the rows still to do (a read, which on SQLite takes no lock from the runner)."""
    from mailgate.cli.progress import progress, wanted

    if not wanted(args):
        return runner.run_until_idle()
    import threading

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


def _read_one(args: argparse.Namespace, limit: int) -> bytes:
    """The one message from stdin or a file, read no further than the size limit."""
    if args.file in (None, "-"):
        raw = sys.stdin.buffer.read(limit + 1)
        if len(raw) > limit:
            raise TooBig(f"over {limit} bytes")
        return raw
    path = Path(args.file)
    if path.stat().st_size > limit:
        raise TooBig(f"{path.stat().st_size} bytes, over {limit}")
    return path.read_bytes()


def _hand_to_daemon(config: Config, raw: bytes, mail_from: str, rcpts: tuple[str, ...]) -> int | None:
    """Deliver one message to the running daemon by SMTP (or LMTP); the exit code for the MTA, or
    None when no daemon answers or it refuses what SMTP forbids (then the caller stores it)."""
    import smtplib

    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.smtp.host, config.smtp.host)
    conn = (smtplib.LMTP if config.smtp.lmtp else smtplib.SMTP)(timeout=60)
    try:
        _, banner = conn.connect(host, config.smtp.port)
    except (OSError, smtplib.SMTPException):
        return None  # nobody listening: no daemon, or not on this address
    # An MTA pipes mail with LF line ends; SMTP wants CRLF, and smtplib sends bytes as they are.
    wire = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    try:
        if b"mailgate" not in banner:
            # Something else holds the port (the MTA itself?): giving it the mail could loop it.
            return None
        refused = conn.sendmail(mail_from, list(rcpts), wire)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        codes = (
            [c for c, _ in exc.recipients.values()]
            if isinstance(exc, smtplib.SMTPRecipientsRefused)
            else [exc.smtp_code]
        )
        if any(400 <= c < 500 for c in codes):  # shutting down, or its store failed: later
            print(f"mailgate ingest: the daemon cannot take it now: {exc}; try again later", file=sys.stderr)
            return EX_TEMPFAIL
        # Refused for what SMTP forbids and a pipe allows (a line over 1000 bytes, RFC 5321
        # 4.5.3.1.6): the MTA already accepted it, so store it here rather than bounce it.
        log.info("the daemon refused the message (%s): storing it here", exc)
        return None
    except (OSError, smtplib.SMTPException) as exc:
        # Cut off before the answer: it may or may not be stored. The MTA tries again later; if
        # it was stored, the second copy is recognised by its Message-ID and dropped.
        print(f"mailgate ingest: the daemon did not answer: {exc}; try again later", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            conn.quit()
    if refused:
        print(f"mailgate ingest: the daemon refused {', '.join(refused)}", file=sys.stderr)
    return 0


def _ingest(args: argparse.Namespace) -> int:
    if args.file not in (None, "-") and not Path(args.file).exists():
        print(f"mailgate ingest: no such file: {args.file}", file=sys.stderr)
        return EX_NOINPUT
    config = config_of(args)
    source = "mbox" if args.mbox else "maildir" if args.maildir else "pipe"
    mail_from = (args.sender or "").lower()
    rcpts = tuple(r.lower() for r in args.recipient or ())
    unknown = [r for r in rcpts if not config.desk_for(r)]
    if unknown:
        print(f"mailgate ingest: no desk for {', '.join(unknown)}", file=sys.stderr)
        return EX_NOUSER
    limit = config.smtp.max_message_size
    if source != "pipe":
        from mailgate.cli.progress import progress

        total, unit = _work_size(args)
        with progress(args, total=total, desc=f"storing {source}", unit=unit, unit_scale=unit == "B") as bar:

            def counted() -> Iterator[bytes | None]:
                shown = 0
                for raw in _messages(args, limit):
                    yield raw
                    step = 1 if unit == "msg" else len(raw) if raw is not None else 0
                    bar.update(step)
                    shown += step
                bar.update(max(total - shown, 0))  # an mbox's From_ lines and skipped messages
                bar.close()  # stored: the processing bar takes its place

            return _store(args, config, source, mail_from, rcpts, counted())
    try:
        raw = _read_one(args, limit)
    except TooBig as exc:
        print(f"mailgate ingest: message too big ({exc}; smtp.max_message_size): not stored", file=sys.stderr)
        return EX_DATAERR
    except OSError as exc:
        print(f"mailgate ingest: cannot read input: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    if rcpts and raw.strip() and not args.direct and not args.no_process:
        code = _hand_to_daemon(config, raw, mail_from, rcpts)
        if code is not None:
            return code
    return _store(args, config, source, mail_from, rcpts, iter([raw]))


def _store(
    args: argparse.Namespace,
    config: Config,
    source: str,
    mail_from: str,
    rcpts: tuple[str, ...],
    messages: Iterator[bytes | None],
) -> int:
    """Store the messages here and now (then process them unless --no-process)."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from mailgate.intake.accept import Acceptor, Envelope
    from mailgate.pipeline.runner import Runner
    from mailgate.store.db import Database

    envelope = Envelope(mail_from=mail_from, rcpt_tos=rcpts, source=source)
    stored = duplicates = no_desk = too_big = 0
    runner: Runner | None = None
    try:
        db = Database(config.database_url)
        if not args.no_process:
            # Bulk work: group commit (one fsync per quarter second of work, not per message),
            # and for a migration, parsing ahead in a second process on the other core, started
            # now so that its start-up overlaps the storing.
            try:
                runner = Runner(db, config, batch_size=200, group_ms=250, parse_ahead=source != "pipe")
                runner.start_helper()
                # What is loaded now lives as long as the process: the collector's full passes
                # need not walk it again for every batch (gc.freeze, as servers do after start).
                gc.freeze()
            except Exception as exc:  # noqa: BLE001 - storing goes on: the daemon processes later
                log.error("cannot process here (the daemon processes what is stored): %s", exc)
        acceptor = Acceptor(db, config)
        batch: list[tuple[bytes, Envelope]] = []

        def flush() -> None:
            nonlocal stored, duplicates, no_desk
            for res in acceptor.accept_many(batch):
                stored += len(res.stored)
                duplicates += len(res.duplicates)
                no_desk += 0 if res.desks else 1
            batch.clear()

        for raw in messages:
            if raw is None:
                too_big += 1
                continue
            if not raw.strip():
                if source == "pipe":
                    print("mailgate ingest: empty message", file=sys.stderr)
                    return _closed(runner, EX_DATAERR)
                continue
            batch.append((raw, envelope))
            if len(batch) >= BATCH:
                flush()
        flush()
    except (OperationalError, DBAPIError) as exc:
        print(f"mailgate ingest: database unavailable, try again later: {exc}", file=sys.stderr)
        return _closed(runner, EX_TEMPFAIL)
    except OSError as exc:
        print(f"mailgate ingest: cannot read input: {exc}", file=sys.stderr)
        return _closed(runner, EX_TEMPFAIL if source == "pipe" else EX_NOINPUT)
    if source == "pipe" and stored == 0 and duplicates == 0 and no_desk:
        print("mailgate ingest: no desk takes this message (no matching recipient)", file=sys.stderr)
        return _closed(runner, EX_NOUSER)
    processed = 0
    if runner is not None:
        try:
            processed = _process(args, db, runner)
        except Exception as exc:  # noqa: BLE001 - stored is stored: the daemon will pick it up
            log.error("processing after ingest failed (the messages are stored): %s", exc)
        finally:
            runner.close()
    if args.verbose or source != "pipe":
        print(
            f"stored {stored}, duplicates {duplicates}, without desk {no_desk}, processed {processed}"
            + (f", over the size limit (not stored) {too_big}" if too_big else "")
        )
    return 0


def _closed(runner: Runner | None, code: int) -> int:
    """`code`, after stopping the runner's parse helper if one was started."""
    if runner is not None:
        runner.close()
    return code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="take mail from stdin, a file, an mbox or a maildir")
    p.add_argument("file", nargs="?", help="message file, mbox or maildir; - or nothing for stdin")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--mbox", action="store_true", help="FILE is an mbox")
    kind.add_argument("--maildir", action="store_true", help="FILE is a maildir")
    p.add_argument("--recipient", "-r", action="append", help="envelope recipient (the MTA's ${recipient})")
    p.add_argument("--sender", "-f", help="envelope sender (the MTA's ${sender})")
    p.add_argument("--no-process", action="store_true", help="only store; the daemon processes later")
    p.add_argument(
        "--direct",
        action="store_true",
        help="store and process here even when a daemon listens (default: hand a piped message to it)",
    )
    p.add_argument("--verbose", "-v", action="store_true")
    p.set_defaults(func=_ingest)
