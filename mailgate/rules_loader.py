"""Load everything under `rules/` into one immutable, validated snapshot, and notice edits.

`load_rules(rules_dir, templates_dir)` reads team.toml and routing.toml, validates them against
each other and against the template names in `templates/`, and returns a `RulesSet`; on any
problem it raises `RulesInvalid` carrying ALL errors of ALL files (an admin fixes them in one go).

`RulesWatcher.poll()` is for the daemon: it re-reads the files when their content changed, and
either swaps in the new snapshot or keeps the last good one and hands back the errors, so a bad
edit never takes routing down (DESIGN.md "Routing rules"). It has no thread and no timer: the
caller polls it (e.g. from the scheduler, every few seconds) and decides whom to tell.

Later rules files (workflow.toml, sla.toml) join here: parse them in `load_rules`, add a field to
`RulesSet`, and they share the fingerprint and the hot reload. This module must not touch the
database or send mail.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mailgate.domain.routing import Routing, parse_routing
from mailgate.domain.rulesfile import RulesError, RulesInvalid, TomlFile, being_written
from mailgate.domain.team import Team, check_team

TEAM_FILE = "team.toml"
ROUTING_FILE = "routing.toml"


@dataclass(frozen=True)
class RulesSet:
    """One consistent version of the rules. `version` is a short hash of the files' content."""

    team: Team
    routing: Routing
    version: str
    files: tuple[Path, ...]
    loaded_at: datetime = field(compare=False)


SHIPPED_TEMPLATES = Path(__file__).resolve().parent / "defaults" / "templates"


def template_names(templates_dir: Path) -> frozenset[str]:
    """Names a rule or workflow may use: `templates/<name>.txt`, or a shipped template of that name
    (the renderer falls back to the shipped ones, so admins override only what they change)."""
    names: set[str] = set()
    for directory in (templates_dir, SHIPPED_TEMPLATES):
        try:
            names.update(
                p.name[:-4]
                for p in directory.iterdir()
                if p.name.endswith(".txt") and not p.name.startswith("_") and p.is_file()  # _x: partials
            )
        except FileNotFoundError:
            continue
    return frozenset(names)


def _fingerprint(rules_dir: Path, templates_dir: Path) -> str:
    """Content hash of every rules file plus the list of template names (both decide validity)."""
    h = hashlib.sha256()
    for path in sorted(rules_dir.glob("*.toml")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        h.update(path.name.encode() + b"\0" + data + b"\0")
    h.update("\0".join(sorted(template_names(templates_dir))).encode())
    return h.hexdigest()[:12]


FULL_CHECK_SECONDS = 2.0


def _stat_signature(rules_dir: Path, templates_dir: Path) -> tuple[object, ...]:
    """What a few stat calls tell of the rules files and the template directories (a template
    added or removed changes its directory's mtime)."""
    parts: list[object] = []
    for path in sorted(rules_dir.glob("*.toml")):
        try:
            st = path.stat()
        except OSError:
            continue
        parts.append((path.name, st.st_mtime_ns, st.st_size, st.st_ino))
    for directory in (templates_dir, SHIPPED_TEMPLATES):
        try:
            parts.append(directory.stat().st_mtime_ns)
        except OSError:
            parts.append(None)
    return tuple(parts)


def _display(path: Path) -> str:
    """Paths in errors as the admin would type them: relative to the working directory if below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def load_rules(rules_dir: Path, templates_dir: Path) -> RulesSet:
    """Load and validate all rules files. Raises RulesInvalid with every error found.

    routing.toml is optional (no file: every ticket goes to triage); team.toml is required.
    """
    rules_dir, templates_dir = Path(rules_dir), Path(templates_dir)
    version = _fingerprint(rules_dir, templates_dir)
    errors: list[RulesError] = []

    team: Team | None = None
    team_ok = False
    team_path = rules_dir / TEAM_FILE
    try:
        team, team_errors = check_team(TomlFile.read(team_path, _display(team_path)))
        errors.extend(team_errors)
        team_ok = not team_errors
    except RulesInvalid as exc:  # missing or not TOML: nothing to check the other files against
        errors.extend(exc.errors)

    routing_path = rules_dir / ROUTING_FILE
    files = [team_path]
    routing_file: TomlFile | None = None
    if routing_path.exists():
        files.append(routing_path)
        try:
            routing_file = TomlFile.read(routing_path, _display(routing_path))
        except RulesInvalid as exc:
            errors.extend(exc.errors)

    routing: Routing | None = None
    if routing_file is not None:
        # Checked against the team as far as it is valid, so one pass reports everything; with no
        # team at all, references to groups and agents cannot be judged and are not reported.
        against = team or Team(agents={}, groups={}, triage="")
        try:
            routing = parse_routing(routing_file, against, template_names(templates_dir))
        except RulesInvalid as exc:
            errors.extend(
                e
                for e in exc.errors
                if team is not None or not e.reason.startswith(("unknown group", "unknown agent"))
            )
    elif team is not None:
        routing = Routing(rules=(), team=team)

    if errors or not team_ok or team is None or routing is None:
        raise RulesInvalid(errors)
    return RulesSet(team, routing, version, tuple(files), datetime.now(UTC))


@dataclass(frozen=True)
class ReloadResult:
    """What one poll found. `status` is "unchanged", "reloaded" or "rejected"."""

    status: str
    rules: RulesSet | None
    errors: tuple[RulesError, ...] = ()

    @property
    def changed(self) -> bool:
        return self.status != "unchanged"


class RulesWatcher:
    """Keeps the last good RulesSet and reloads when the files change. No threads: call `poll()`.

    A rejected version is remembered by its fingerprint, so the errors are returned once per
    edit, not once per poll (the caller mails the admin on "rejected").
    """

    def __init__(self, rules_dir: Path, templates_dir: Path, current: RulesSet | None = None) -> None:
        self.rules_dir = Path(rules_dir)
        self.templates_dir = Path(templates_dir)
        self.current = current
        self.last_errors: tuple[RulesError, ...] = ()
        self._seen = current.version if current else None
        self._stats: tuple[object, ...] | None = None
        self._hashed_at = float("-inf")

    def poll(self) -> ReloadResult:
        """Look at the files once. The pipeline polls before every batch, so the usual answer
        comes from a few stat calls (about 0.05 ms); the content hash (about 0.8 ms: every rules
        file read, every template listed) runs when a stat changed, and at least every
        FULL_CHECK_SECONDS, which catches an edit that kept size and mtime tick."""
        stats = _stat_signature(self.rules_dir, self.templates_dir)
        now = time.monotonic()
        if stats == self._stats and now - self._hashed_at < FULL_CHECK_SECONDS:
            return ReloadResult("unchanged", self.current)
        if being_written(*self.rules_dir.glob("*.toml")):
            return ReloadResult("unchanged", self.current)
        self._stats, self._hashed_at = stats, now
        version = _fingerprint(self.rules_dir, self.templates_dir)
        if version == self._seen:
            return ReloadResult("unchanged", self.current)
        self._seen = version
        try:
            new = load_rules(self.rules_dir, self.templates_dir)
        except RulesInvalid as exc:
            self.last_errors = exc.errors
            return ReloadResult("rejected", self.current, exc.errors)
        # The files may have changed between fingerprint and load; keep the loaded one's version.
        self._seen = new.version
        self.current = new
        self.last_errors = ()
        return ReloadResult("reloaded", new)
