"""Reading what admins edit — rules/*.toml and templates/ — as bytes, and what `stat` says of it.

`read_sources` reads every file that decides the rules once, so the fingerprint and the
validation that follows see the same bytes (a file saved between the two cannot make a version
whose number names other text). `rules_signature` and `templates_signature` are the cheap part
of watching: a few `stat` calls that change when a file is written, added or removed.

It must not interpret any file (snapshot.py validates); it never writes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

TEAM_FILE = "team.toml"
ROUTING_FILE = "routing.toml"
WORKFLOW_FILE = "workflow.toml"
SLA_FILE = "sla.toml"
FIELDS_FILE = "fields.toml"
RULES_FILES = (TEAM_FILE, ROUTING_FILE, WORKFLOW_FILE, SLA_FILE, FIELDS_FILE)
TEMPLATE_SUFFIXES = (".txt", ".html")
# templates/canned/<name>.txt: an agent's `#canned <name>` (not a desk's directory of overrides)
CANNED_DIR = "canned"

DEFAULTS = Path(__file__).resolve().parent.parent / "defaults"
SHIPPED_TEMPLATES = DEFAULTS / "templates"
SHIPPED_WORKFLOW = DEFAULTS / "rules" / WORKFLOW_FILE


@dataclass(frozen=True)
class TemplateFile:
    """One template's text and the file it came from (for error messages and jinja tracebacks)."""

    source: str
    path: Path


@dataclass(frozen=True)
class Sources:
    """The bytes of one look at the files, and their fingerprint.

    `rules` maps a rules file name to (path, bytes) for the files present; workflow.toml falls
    back to the shipped presets. `desk_routing` maps a directory name under rules/ (a desk key,
    e.g. CARE) to its own routing.toml, which replaces rules/routing.toml for that desk.
    Templates: `shared` is templates/*, `desks` templates/<KEY>/*, `shipped` the package's own
    set; each maps a file name to its text (None: not UTF-8)."""

    rules_dir: Path
    rules: Mapping[str, tuple[Path, bytes]]
    desk_routing: Mapping[str, tuple[Path, bytes]]
    shared: Mapping[str, tuple[Path, bytes]]
    desks: Mapping[str, Mapping[str, tuple[Path, bytes]]]
    shipped: Mapping[str, tuple[Path, bytes]]
    fingerprint: str
    canned: Mapping[str, tuple[Path, bytes]] = field(default_factory=lambda: MappingProxyType({}))


def _templates_in(directory: Path) -> dict[str, tuple[Path, bytes]]:
    out: dict[str, tuple[Path, bytes]] = {}
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return out
    for entry in entries:
        if entry.name.endswith(TEMPLATE_SUFFIXES) and entry.is_file():
            try:
                out[entry.name] = (Path(entry.path), Path(entry.path).read_bytes())
            except OSError:
                continue  # removed while we looked: the next look sees the directory without it
    return out


def read_sources(rules_dir: Path, templates_dir: Path) -> Sources:
    """Read every rules file and template. Missing files are simply absent (validation decides
    whether that is allowed)."""
    rules: dict[str, tuple[Path, bytes]] = {}
    for name in RULES_FILES:
        path = rules_dir / name
        try:
            rules[name] = (path, path.read_bytes())
        except FileNotFoundError:
            if name == WORKFLOW_FILE:  # a desk that only routes needs no workflow file of its own
                rules[name] = (SHIPPED_WORKFLOW, SHIPPED_WORKFLOW.read_bytes())
        except OSError as exc:  # unreadable: validation reports it with the file's name
            raise Unreadable(path, exc) from exc
    desk_routing: dict[str, tuple[Path, bytes]] = {}
    for path in desk_routing_files(rules_dir):
        try:
            desk_routing[path.parent.name] = (path, path.read_bytes())
        except FileNotFoundError:
            continue  # removed while we looked: the next look sees the directory without it
        except OSError as exc:
            raise Unreadable(path, exc) from exc
    shared = _templates_in(templates_dir)
    desks: dict[str, dict[str, tuple[Path, bytes]]] = {}
    try:
        subdirs = sorted(e.name for e in os.scandir(templates_dir) if e.is_dir() and e.name != CANNED_DIR)
    except (FileNotFoundError, NotADirectoryError):
        subdirs = []
    for key in subdirs:
        desks[key] = _templates_in(templates_dir / key)
    shipped = _templates_in(SHIPPED_TEMPLATES)
    canned = {n: e for n, e in _templates_in(templates_dir / CANNED_DIR).items() if n.endswith(".txt")}

    h = hashlib.sha256()
    groups = (("rules", rules), ("shared", shared), ("shipped", shipped), *desks.items())
    if desk_routing:  # (only then: the fingerprint of a desk without per-desk rules is unchanged)
        groups += (("desk rules", {f"{key}/{ROUTING_FILE}": e for key, e in desk_routing.items()}),)
    if canned:  # (likewise: a desk without canned replies keeps its fingerprint)
        groups += (("canned", canned),)
    for group, files in groups:
        h.update(f"[{group}]\0".encode())
        for name, (path, data) in sorted(files.items()):
            h.update(f"{name}\0{path == SHIPPED_WORKFLOW}\0".encode() + data + b"\0")
    return Sources(
        rules_dir, rules, desk_routing, shared, desks, shipped, h.hexdigest()[:12], MappingProxyType(canned)
    )


def desk_routing_files(rules_dir: Path) -> list[Path]:
    """rules/<KEY>/routing.toml for every directory under rules/ that has one, sorted."""
    try:
        subdirs = sorted(e.name for e in os.scandir(rules_dir) if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [rules_dir / d / ROUTING_FILE for d in subdirs if (rules_dir / d / ROUTING_FILE).is_file()]


class Unreadable(Exception):
    """A rules file exists but cannot be read (permissions): snapshot.py words it as a RulesError."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"{path}: {exc.strerror}")
        self.path = path
        self.strerror = exc.strerror or str(exc)


Stat = tuple[str, int, int, int] | tuple[str, None]


def _stat(path: Path, name: str | None = None) -> Stat:
    name = name or path.name
    try:
        st = path.stat()
    except OSError:
        return (name, None)
    return (name, st.st_mtime_ns, st.st_size, st.st_ino)


def rules_signature(rules_dir: Path) -> tuple[Stat, ...]:
    """Four stat calls and a look at rules/'s directories: what changes when a rules file (or a
    desk's own routing.toml) is written, replaced, added or removed."""
    return (
        *(_stat(rules_dir / name) for name in RULES_FILES),
        *(_stat(path, f"{path.parent.name}/{path.name}") for path in desk_routing_files(rules_dir)),
    )


def templates_signature(templates_dir: Path) -> tuple[object, ...]:
    """A stat of every template file and directory under templates/ (the shipped set changes only
    with the package, and a restart picks that up)."""
    parts: list[object] = [_stat(templates_dir)]
    try:
        entries = list(os.scandir(templates_dir))
    except (FileNotFoundError, NotADirectoryError):
        return tuple(parts)
    for entry in entries:
        if entry.is_dir():
            parts.append(_stat(Path(entry.path)))
            try:
                inner = list(os.scandir(entry.path))
            except OSError:
                continue
            parts.extend(_stat(Path(e.path)) for e in inner if e.name.endswith(TEMPLATE_SUFFIXES))
        elif entry.name.endswith(TEMPLATE_SUFFIXES):
            parts.append(_stat(Path(entry.path)))
    return tuple(parts)


def newest_mtime_ns(*signatures: tuple[object, ...]) -> int:
    """The latest modification time in the signatures (0 when there is none)."""
    return max(
        (p[1] for sig in signatures for p in sig if isinstance(p, tuple) and isinstance(p[1], int)),
        default=0,
    )
