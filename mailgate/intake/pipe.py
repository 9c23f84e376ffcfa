"""The pipe intake: one message from stdin or a file (an MTA's pipe transport, like rt-mailgate),
or every message of an mbox or a maildir (a migration). Bytes in, `accept` out.

A piped message is handed to the running daemon's listener when one answers on the configured
`[smtp]` address, as rt-mailgate hands mail to a running RT: the daemon's 250 comes after its
commit, so success means the same as storing it here, and the piping process never loads the
database layer. Otherwise the caller stores the messages here with `store`, through an
`Acceptor` it built (this module imports nothing of the database, for that same reason).

This module reads and stores; it never processes (intake never imports the pipeline) and never
ends the process: the CLI turns what it returns into an exit code.
"""

from __future__ import annotations

import contextlib
import logging
import mailbox
import mmap
import os
import smtplib
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailgate.config import Config

if TYPE_CHECKING:
    from mailgate.intake.accept import Acceptor, Envelope

log = logging.getLogger(__name__)
BATCH = 200  # messages stored per transaction by `store`
_RELEASE_EVERY = 16 * 1024 * 1024  # bytes of a mapped mbox read before its pages are let go


class TooBig(Exception):
    """A single message over smtp.max_message_size: refused like SMTP's 552, never read whole."""


def mbox_messages(path: Path) -> Iterator[bytes]:
    """The messages of an mbox, as the stdlib's `mailbox.mbox` reads them (every line starting
    "From " begins a message; the blank line before it is the separator), without its per-line
    Python loop (bench/README.md has the figures). The file is mapped and walked once; pages
    behind the reader are let go, so a mailbox of any size costs about one message of memory."""
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


def mailbox_messages(path: Path, *, mbox: bool, limit: int) -> Iterator[bytes | None]:
    """The messages of an mbox (or else a maildir, oldest name first); None for one over the
    size limit (counted by `store`, never stored)."""
    if mbox:
        for raw in mbox_messages(path):
            yield raw if len(raw) <= limit else None
    else:
        md = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(md.iterkeys()):
            raw = md.get_bytes(key)
            yield raw if len(raw) <= limit else None


def read_one(file: str | None, limit: int) -> bytes:
    """The one message from stdin (None or "-") or a file, read no further than the size limit."""
    if file in (None, "-"):
        raw = sys.stdin.buffer.read(limit + 1)
        if len(raw) > limit:
            raise TooBig(f"over {limit} bytes")
        return raw
    path = Path(file)
    if path.stat().st_size > limit:
        raise TooBig(f"{path.stat().st_size} bytes, over {limit}")
    return path.read_bytes()


def hand_to_daemon(config: Config, raw: bytes, mail_from: str, rcpts: tuple[str, ...]) -> int | None:
    """Deliver one message to the running daemon by SMTP (or LMTP). Returns the exit code for the
    MTA (sysexits), or None when no daemon answers or it refuses what SMTP forbids and a pipe
    allows: then the caller stores the message itself."""
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
            return os.EX_TEMPFAIL
        # Refused for what SMTP forbids and a pipe allows (a line over 1000 bytes, RFC 5321
        # 4.5.3.1.6): the MTA already accepted it, so store it here rather than bounce it.
        log.info("the daemon refused the message (%s): storing it here", exc)
        return None
    except (OSError, smtplib.SMTPException) as exc:
        # Cut off before the answer: it may or may not be stored. The MTA tries again later; if
        # it was stored, the second copy is recognised by its Message-ID and dropped.
        print(f"mailgate ingest: the daemon did not answer: {exc}; try again later", file=sys.stderr)
        return os.EX_TEMPFAIL
    finally:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            conn.quit()
    if refused:
        print(f"mailgate ingest: the daemon refused {', '.join(refused)}", file=sys.stderr)
    return os.EX_OK


@dataclass
class Stored:
    """What `store` did with the messages it was given."""

    stored: int = 0  # inbox rows made (one per desk)
    duplicates: int = 0  # already there for a desk
    without_desk: int = 0  # no desk takes the recipient
    too_big: int = 0  # over smtp.max_message_size: not stored
    empty: int = 0  # nothing but blank lines: not stored
    ids: list[int] = field(default_factory=list)  # the new inbox rows, in order
    duplicate_desks: list[str] = field(default_factory=list)  # desk keys that already had it


def store(acceptor: Acceptor, messages: Iterable[bytes | None], envelope: Envelope) -> Stored:
    """Store the messages through `accept`, `BATCH` to a transaction; returns only after the last
    commit. Database and read errors propagate: the caller decides what the MTA is told."""
    result = Stored()
    batch: list[tuple[bytes, Envelope]] = []

    def flush() -> None:
        for res in acceptor.accept_many(batch):
            result.stored += len(res.stored)
            result.duplicates += len(res.duplicates)
            result.ids += res.stored
            result.duplicate_desks += res.duplicates
            result.without_desk += 0 if res.desks else 1
        batch.clear()

    for raw in messages:
        if raw is None:
            result.too_big += 1
        elif not raw.strip():
            result.empty += 1
        else:
            batch.append((raw, envelope))
            if len(batch) >= BATCH:
                flush()
    if batch:
        flush()
    return result
