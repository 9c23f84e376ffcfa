"""Parsing ahead: a helper process parses a batch's messages while the worker applies the earlier
ones.

Parsing needs no database and is about a third of a message's work, so on a second core it is
nearly free, but only if neither side waits for the other:
- A batch goes to the helper in one queue put, not a job per message. Jobs through an executor
  each needed its management thread, and so the busy worker's interpreter lock, twice; the helper
  sat idle between them and the worker ended up parsing a third of the messages itself.
- The worker reads results itself, in order, when it needs the next message, from a plain pipe
  (made 1 MB where the system allows, so the helper rarely waits to write): a multiprocessing
  Queue's non-blocking get built a selector per call, 40 us, twice a message.
- A message the helper has not reached yet is parsed in place, and the helper is told to skip it
  (a shared counter). A message the helper is parsing right now is waited for.
- The helper stays a bounded distance ahead (messages and bytes), so a batch of large messages
  never piles up parsed in memory.
A helper that dies (the OOM killer, a kill by hand) costs only speed: its messages are parsed in
place and a new helper starts with the next batch.

The helper also tokenises the subject and body for routing (`conditions.words_of`) of mail that
is not a reply, and puts the attachments the worker will keep (within the size and count limits)
into the blob store, each fsynced before its parse is handed over, and hands over only their
digests. The fsyncs were the worker's slowest step on mail with attachments, and the bytes no
longer cross the pipe. The store is by content hash, so this is idempotent: a message that is
then held or quarantined leaves its attachments stored, where a retry of it finds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import multiprocessing
import os
import pickle
import queue
import select
import signal
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mailgate.domain.conditions import words_of
from mailgate.mail.attachments import apply_limits
from mailgate.mail.model import ParsedMail
from mailgate.mail.parse import parse_message
from mailgate.proc import die_with_parent
from mailgate.store.blobs import BlobStore

log = logging.getLogger(__name__)
AHEAD_MESSAGES = 64  # parsed and not yet taken, at most
AHEAD_BYTES = 32 * 1024 * 1024  # ... and at most this much raw mail behind them
RESULT_PIPE_BYTES = 1024 * 1024  # room for the parses ahead (about 12 KB each), if allowed


def _store_attachments(parsed: ParsedMail, blobs: BlobStore, limits: tuple[int, int]) -> None:
    """Put the attachments the worker will keep into the store; keep a digest for each instead of
    its bytes. One that cannot be written (a full disk) keeps its bytes: the worker tries again."""
    kept, _ = apply_limits(parsed.attachments, *limits)
    keep = {id(a) for a in kept}
    stored = []
    for att in parsed.attachments:
        if id(att) in keep:
            try:
                att = att.stored(blobs.put(att.content))
            except OSError as exc:
                log.warning("parse helper could not store an attachment (the worker will): %s", exc)
        stored.append(att)
    parsed.attachments = stored


def _serve(
    jobs: Any,
    results: Any,
    taken: Any,
    current: Any,
    wanted: Any,
    own: tuple[str, ...],
    parent: int,
    blob_root: Path | None = None,
    limits: tuple[int, int] = (0, 0),
) -> None:
    """The helper: parse each (seq, raw) of each batch, unless the worker took it already."""
    die_with_parent()
    blobs = BlobStore(blob_root) if blob_root is not None else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the parent's to handle
    ahead: deque[tuple[int, int]] = deque()  # (seq, size) handed over, maybe not yet taken
    while os.getppid() == parent:
        try:
            batch = jobs.get(timeout=1.0)
        except queue.Empty:
            continue
        if batch is None:
            return
        for seq, raw in batch:
            while ahead and ahead[0][0] <= wanted.value:
                ahead.popleft()
            while len(ahead) >= AHEAD_MESSAGES or (
                ahead and sum(s for _, s in ahead) + len(raw) > AHEAD_BYTES
            ):
                time.sleep(0.0005)
                if os.getppid() != parent:
                    return
                while ahead and ahead[0][0] <= wanted.value:
                    ahead.popleft()
            if seq <= taken.value:
                continue
            current.value = seq
            try:
                parsed: ParsedMail | None = parse_message(raw, own_addresses=own)
                if parsed is not None and not (parsed.in_reply_to or parsed.references):
                    # For routing. A reply is threaded, not routed; one that is not threaded
                    # after all is tokenised by routing in the worker.
                    parsed.words = words_of(parsed)
                if parsed is not None and blobs is not None and parsed.attachments:
                    _store_attachments(parsed, blobs, limits)
            except Exception:  # noqa: BLE001 - the worker parses it again and reports it properly
                parsed = None
            try:
                results.send_bytes(pickle.dumps((seq, parsed), pickle.HIGHEST_PROTOCOL))
            except OSError:  # the worker closed its end (it is done, or gone)
                return
            ahead.append((seq, len(raw)))


class ParseAhead:
    """The worker's side: `submit` a batch, then `take` each message's parse in order."""

    def __init__(
        self, own_addresses: Sequence[str], *, blobs: Path | None = None, limits: tuple[int, int] = (0, 0)
    ) -> None:
        """`blobs`: the blob store's root, to store kept attachments there (see the top);
        `limits`: (max_attachment_size, max_attachments), which decide what is kept."""
        self._own = tuple(own_addresses)
        self._blobs = blobs
        self._limits = limits
        self._ctx = multiprocessing.get_context("spawn")  # nothing of the worker is inherited
        self._proc: Any = None
        self._seq = 0
        self._seqs: dict[int, int] = {}  # caller's key -> seq
        self._done: dict[int, ParsedMail | None] = {}

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the helper now, if there is none, rather than with the first batch: it takes a
        few hundred ms to import what it needs, which can overlap the caller's other work (the
        ingest command stores the messages meanwhile)."""
        if self._proc is None:
            self._start()

    def _start(self) -> bool:
        try:
            self._jobs = self._ctx.Queue()
            self._results, writer = self._ctx.Pipe(duplex=False)
            with contextlib.suppress(AttributeError, OSError):  # Linux; else the default 64 KB
                fcntl.fcntl(writer.fileno(), fcntl.F_SETPIPE_SZ, RESULT_PIPE_BYTES)
            self._ready = select.poll()
            self._ready.register(self._results.fileno(), select.POLLIN)
            self._taken, self._current, self._wanted = (self._ctx.RawValue("q", 0) for _ in range(3))
            self._proc = self._ctx.Process(
                target=_serve,
                args=(
                    self._jobs,
                    writer,
                    self._taken,
                    self._current,
                    self._wanted,
                    self._own,
                    os.getpid(),
                    self._blobs,
                    self._limits,
                ),
                name="mailgate-parse",
                daemon=True,
            )
            self._proc.start()
            writer.close()  # the helper's copy is the only one: its end is the pipe's end
            return True
        except (OSError, NotImplementedError) as exc:
            log.warning("no parse helper process (%s): parsing in the worker", exc)
            self._proc = None
            return False

    def submit(self, items: Sequence[tuple[int, bytes]], *, behind: bool = False) -> None:
        """Hand these (key, raw) to the helper, starting one if there is none (or it died).
        `behind`: they come after those still to be taken (the next batch, handed over before
        this one is done); otherwise they replace them."""
        if self._proc is not None and not self._proc.is_alive():
            self._lost()
        if self._proc is None and not self._start():
            return
        if not behind:  # a new batch: whatever of the last one was not taken never will be
            self._seqs.clear()
            self._taken.value = self._seq
        batch = []
        for key, raw in items:
            self._seq += 1
            self._seqs[key] = self._seq
            batch.append((self._seq, raw))
        self._jobs.put(batch)

    def take(self, key: int) -> ParsedMail | None:
        """The parse of message `key`, or None: then the caller parses it (the helper had not got
        to it, failed on it, or is gone)."""
        seq = self._seqs.pop(key, None)
        if seq is None or self._proc is None:
            return None
        self._wanted.value = seq
        self._drain(seq, block=False)
        for old in [s for s in self._done if s < seq]:  # parsed, then never asked for
            del self._done[old]
        if seq in self._done:
            return self._done.pop(seq)
        if self._current.value < seq:
            self._taken.value = seq  # not reached: parse it here, the helper skips it
            return None
        while seq not in self._done:  # being parsed right now: a few ms at most
            if not self._drain(seq, block=True):
                self._lost()
                return None
        return self._done.pop(seq)

    def _drain(self, seq: int, *, block: bool) -> bool:
        """Move arrived results into `_done` (dropping any before `seq`); False if the helper died."""
        while True:
            if not self._ready.poll(500 if block else 0):
                return not block or self._proc.is_alive()
            try:
                got, parsed = pickle.loads(self._results.recv_bytes())
            except Exception:  # noqa: BLE001 - gone, or its parse unreadable: parse here instead
                return False
            if got >= seq:
                self._done[got] = parsed
            if block:
                return True

    def _lost(self) -> None:
        log.warning(
            "parse helper process %s is gone: parsing in the worker, a new one with the next batch", self.pid
        )
        self.close(wait=False)

    def close(self, *, wait: bool = True) -> None:
        proc, self._proc = self._proc, None
        self._seqs.clear()
        self._done.clear()
        if proc is None:
            return
        self._results.close()  # a helper waiting to hand over a parse stops at once
        if proc.is_alive():
            with contextlib.suppress(OSError, ValueError):
                self._jobs.put(None)
            proc.join(timeout=5 if wait else 0.1)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self._jobs.cancel_join_thread()  # never block on a queue whose reader is gone
        self._jobs.close()
