"""`accept`: the one door every intake goes through. Bytes and envelope in, durable rows out.

It reads only what it needs to file the message (Message-ID, and recipients when the envelope has
none), decides which desks it is for, and commits one inbox row per desk. Nothing is acknowledged
to a sender before `accept` returns. `GroupCommitter` batches concurrent accepts from the SMTP
listener into one transaction (one fsync for many messages) without ever answering early.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from mailgate.config import Config, Desk
from mailgate.mail.decode import reverse_path
from mailgate.mail.msgid import parse_msgids
from mailgate.store.db import Database
from mailgate.store.inbox import NewItem, content_digest, insert_items

log = logging.getLogger(__name__)
_header_parser = BytesHeaderParser(policy=compat32)
RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To", "Cc")


@dataclass(frozen=True)
class Envelope:
    """What the transport said about a message. `mail_from` is normalised here, for every intake
    alike (mail/decode.reverse_path): the pipeline reads the null reverse path from it."""

    mail_from: str = ""
    rcpt_tos: tuple[str, ...] = ()
    source: str = "pipe"
    source_key: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mail_from", reverse_path(self.mail_from))


@dataclass
class AcceptResult:
    stored: list[int] = field(default_factory=list)  # new inbox row ids
    duplicates: list[str] = field(default_factory=list)  # desk keys for which it was already there
    desks: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.desks)


_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MSGID_FIELD = re.compile(rb"^message-id[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
HEADER_LIMIT = 262144


def header_block(raw: bytes) -> bytes:
    """The header section (RFC 5322 2.1: up to the first empty line), at most 256 KB of it."""
    m = _HEADER_END.search(raw, 0, HEADER_LIMIT)
    return raw[: m.start()] if m else raw[:HEADER_LIMIT]


def message_id_of(raw: bytes) -> str | None:
    """The bare Message-ID, found with one regex over the header section: this runs for every
    message received, before the 250, so no MIME parsing here."""
    m = _MSGID_FIELD.search(header_block(raw))
    if not m:
        return None
    ids = parse_msgids(m.group(1).decode("latin-1"))
    return ids[0][:900] if ids else None


def desks_for(config: Config, rcpt_tos: Sequence[str], raw: bytes) -> list[Desk]:
    """Desks from envelope recipients; without an envelope, from the recipient headers."""
    found: list[Desk] = []
    for rcpt in rcpt_tos:
        desk = config.desk_for(rcpt)
        if desk and desk not in found:
            found.append(desk)
    if found or rcpt_tos:
        return found
    if len(config.desks) > 1:
        try:
            headers = _header_parser.parsebytes(header_block(raw))
        except Exception:  # noqa: BLE001 - broken headers are the pipeline's problem, not intake's
            headers = None
        if headers is not None:
            for name in RECIPIENT_HEADERS:
                values = [str(v) for v in headers.get_all(name, [])]
                for _, addr in getaddresses(values):
                    desk = config.desk_for(addr)
                    if desk and desk not in found:
                        found.append(desk)
                if found:
                    return found
    if len(config.desks) == 1:
        return [config.desks[0]]
    return []


class Acceptor:
    def __init__(self, db: Database, config: Config) -> None:
        self.db = db
        self.config = config

    def prepare(self, raw: bytes, envelope: Envelope) -> tuple[list[NewItem], list[str]]:
        message_id = message_id_of(raw)
        digest = content_digest(raw)
        desks = desks_for(self.config, envelope.rcpt_tos, raw)
        items = [
            NewItem(
                desk=d.key,
                raw=raw,
                source=envelope.source,
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(r for r in envelope.rcpt_tos if self.config.desk_for(r) == d),
                message_id=message_id,
                source_key=envelope.source_key,
                digest=digest,
            )
            for d in desks
        ]
        return items, [d.key for d in desks]

    def accept(self, raw: bytes, envelope: Envelope) -> AcceptResult:
        return self.accept_many([(raw, envelope)])[0]

    def accept_many(self, batch: Sequence[tuple[bytes, Envelope]]) -> list[AcceptResult]:
        """Store a batch in ONE transaction; returns only after the commit."""
        prepared = [self.prepare(raw, env) for raw, env in batch]
        flat = [item for items, _ in prepared for item in items]
        with self.db.session() as session:
            ids = insert_items(session, flat)
        results: list[AcceptResult] = []
        pos = 0
        for items, desks in prepared:
            res = AcceptResult(desks=desks)
            for item in items:
                row_id = ids[pos]
                pos += 1
                if row_id is None:
                    res.duplicates.append(item.desk)
                else:
                    res.stored.append(row_id)
            results.append(res)
        return results


class GroupCommitter:
    """A writer thread that commits whatever accepts are waiting, together.

    Callers get a Future that resolves after the commit. Under load, N waiting messages cost one
    transaction; idle, a message costs one transaction as before. Durability is unchanged.
    """

    def __init__(self, acceptor: Acceptor, max_batch: int = 200, on_commit: object = None) -> None:
        self.acceptor = acceptor
        self.max_batch = max_batch
        self.on_commit = on_commit  # callable run after each commit (wakes the pipeline)
        self._queue: queue.Queue[tuple[bytes, Envelope, Future[AcceptResult]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="accept-writer", daemon=True)
        self._thread.start()

    def submit(self, raw: bytes, envelope: Envelope) -> Future[AcceptResult]:
        fut: Future[AcceptResult] = Future()
        self._queue.put((raw, envelope, fut))
        return fut

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while self._commit_next():
            pass

    def _commit_next(self) -> bool:
        """Wait for a message, commit it with whatever else is waiting, answer their waiters;
        False once close() was called. One call per batch, so the batch's messages (up to
        `max_message_size` each) are let go when it returns, not kept by a loop variable while
        the writer waits for the next message."""
        first = self._queue.get()
        if first is None:
            return False
        batch = [first]
        go_on = True
        while len(batch) < self.max_batch:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            if nxt is None:
                go_on = False
                break
            batch.append(nxt)
        try:
            results = self.acceptor.accept_many([(raw, env) for raw, env, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiting sender gets a temporary failure
            log.error("storing %d received message(s) failed: %s", len(batch), exc)
            for _, _, fut in batch:
                fut.set_exception(exc)
            return go_on
        for (_, _, fut), res in zip(batch, results, strict=True):
            fut.set_result(res)
        if callable(self.on_commit):
            self.on_commit()
        return go_on
