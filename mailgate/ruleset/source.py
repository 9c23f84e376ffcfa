"""The rules in force, and the one watcher that swaps in an admin's edit.

`RulesSource` loads the snapshot at start (invalid rules are an error there: the daemon does not
start on rules it cannot trust) and holds it in `current`. `poll()` looks at the files and, when
they changed, loads a new snapshot and swaps it in with one assignment — readers on any thread
see the old snapshot or the new one, never a mixture. A bad edit is refused as a whole: the
errors are logged once per edit (and returned once, for the admin mail) and the last good
snapshot stays in force.

What a poll costs: the rules files' stat signature (four stat calls, and a look at the
directories under rules/ for desks' own routing.toml) at every poll, so a routing
edit applies to the very next mail; the templates' (a stat per template file) at most once per
TEMPLATES_CHECK_SECONDS, so a template edit shows within about a second without a stat per
rendered mail. Files are read only when a stat changed, and a snapshot is built only when their
bytes differ from the one in force.

A file written twice within one tick of the file system's clock keeps its stat; as git does with
"racily clean" entries, a look that read files modified moments before reads them once more
RACY_SECONDS later.

Poll from one thread (the pipeline's, between batches); read `current` from anywhere. No thread,
no timer of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailgate.domain.rulesfile import RulesError, RulesInvalid, being_written
from mailgate.ruleset.files import (
    RULES_FILES,
    Unreadable,
    desk_routing_files,
    newest_mtime_ns,
    read_sources,
    rules_signature,
    templates_signature,
)
from mailgate.ruleset.snapshot import DeskLike, Snapshot, build, display, load

log = logging.getLogger(__name__)

TEMPLATES_CHECK_SECONDS = 1.0
RACY_SECONDS = 2.0


@dataclass(frozen=True)
class Refused:
    """A rules edit that was refused: every error, each `FILE:LINE: reason`."""

    errors: tuple[RulesError, ...]
    version: str  # the fingerprint of the refused files

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]


class RulesSource:
    """Holds the snapshot in force; `poll()` picks up edits."""

    def __init__(self, rules_dir: Path, templates_dir: Path, desks: Iterable[DeskLike] = ()) -> None:
        self.rules_dir = Path(rules_dir)
        self.templates_dir = Path(templates_dir)
        self.desks = tuple(desks)
        self._rules_sig = rules_signature(self.rules_dir)
        self._templates_sig = templates_signature(self.templates_dir)
        self._templates_at = time.monotonic()
        self.current: Snapshot = load(self.rules_dir, self.templates_dir, self.desks)
        self.refused: Refused | None = None  # the edit on disk now, if it was refused
        self._recheck_at = self._racy(self._templates_at)
        self._lock = threading.Lock()

    def _racy(self, now: float) -> float | None:
        """When to read the files again although no stat changes: RACY_SECONDS from now if any
        was modified so recently that a second write in the same clock tick would go unseen."""
        newest = newest_mtime_ns(self._rules_sig, self._templates_sig)
        return now + RACY_SECONDS if newest > time.time_ns() - int(RACY_SECONDS * 1e9) else None

    def poll(self) -> Refused | None:
        """Look at the files once. Returns a refused edit the first time it is seen, else None."""
        if not self._lock.acquire(blocking=False):
            return None  # another thread is looking right now; it swaps in what it finds
        try:
            return self._poll()
        finally:
            self._lock.release()

    def _poll(self) -> Refused | None:
        now = time.monotonic()
        rules_sig = rules_signature(self.rules_dir)
        templates_sig = self._templates_sig
        if now - self._templates_at >= TEMPLATES_CHECK_SECONDS:
            templates_sig = templates_signature(self.templates_dir)
            self._templates_at = now
        racy = self._recheck_at is not None and now >= self._recheck_at
        if rules_sig == self._rules_sig and templates_sig == self._templates_sig and not racy:
            return None
        if being_written(
            *(self.rules_dir / name for name in RULES_FILES), *desk_routing_files(self.rules_dir)
        ):
            return None  # truncated by an editor mid-save: look again at the next poll
        self._rules_sig, self._templates_sig = rules_sig, templates_sig
        self._recheck_at = self._racy(now)
        try:
            sources = read_sources(self.rules_dir, self.templates_dir)
        except Unreadable as exc:
            error = RulesError(display(exc.path), 1, f"cannot read: {exc.strerror}")
            return self._refuse(RulesInvalid([error]), f"unreadable:{exc.path}")
        if sources.fingerprint == self.current.version:
            self.refused = None  # back to the rules in force (an edit undone)
            return None
        if self.refused is not None and sources.fingerprint == self.refused.version:
            return None  # the same refused files: told once already
        try:
            snapshot = build(sources, self.desks)
        except RulesInvalid as exc:
            return self._refuse(exc, sources.fingerprint)
        self.current = snapshot  # the swap: one assignment
        self.refused = None
        log.info("rules reloaded (version %s)", snapshot.version)
        return None

    def _refuse(self, exc: RulesInvalid, version: str) -> Refused | None:
        if self.refused is not None and self.refused.version == version:
            return None
        self.refused = Refused(exc.errors, version)
        for e in exc.errors:
            log.error(
                "rules edit refused, the previous rules (version %s) stay in force: %s",
                self.current.version,
                e,
            )
        return self.refused
