"""Ticket workflow as data: statuses (open / waiting / closed), allowed transitions, the words
agents may type for them, and what each status means for the desk (resolved → survey and
auto-close; deferred → periodic review; waiting → a requester's reply brings it back).

Read from `rules/workflow.toml`, one table per preset; each desk names its preset in
config.toml. Pure: no database, no mail. Errors name file, line and what would be valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailgate.domain.rulesfile import Checker, RulesInvalid, TomlFile, suggest

CATEGORIES = ("open", "waiting", "closed")
STATUS_KEYS = ("id", "label", "category", "aliases", "resolved", "final", "deferred", "template")
WORKFLOW_KEYS = (
    "label",
    "initial",
    "first_response",
    "customer_reply",
    "reopen",
    "close",
    "priorities",
    "types",
    "statuses",
    "transitions",
)


def norm(word: str) -> str:
    """How status words compare: case, spaces, dashes and underscores do not matter."""
    return re.sub(r"[\s_\-]+", "", word.strip().lower())


@dataclass(frozen=True)
class Status:
    id: str
    label: str
    category: str  # open | waiting | closed
    aliases: tuple[str, ...] = ()
    resolved: bool = False  # entering it sends the survey; auto-close timer runs
    final: bool = False  # the end: auto-close moves resolved tickets here
    deferred: bool = False  # periodic review timer runs
    template: str = "status_changed"  # the mail requester and watchers get on entering it


@dataclass(frozen=True)
class Workflow:
    name: str
    label: str
    statuses: dict[str, Status]
    transitions: frozenset[tuple[str, str]]
    initial: str
    first_response: str | None = None  # status the first public agent reply moves an initial ticket to
    customer_reply: str | None = None  # status a requester's reply moves a waiting ticket to
    reopen: str | None = None  # status a real reply to a resolved/closed ticket moves to
    close: str | None = None  # final status auto-close moves resolved tickets to
    priorities: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    _words: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        words: dict[str, str] = {}
        for st in self.statuses.values():
            for w in (st.id, st.label, *st.aliases):
                words.setdefault(norm(w), st.id)
        object.__setattr__(self, "_words", words)

    def status(self, status_id: str) -> Status:
        return self.statuses[status_id]

    def find(self, word: str) -> Status | None:
        """The status an agent means by `word`: its id, label or an alias, any case."""
        sid = self._words.get(norm(word))
        return self.statuses[sid] if sid else None

    def can(self, src: str, dst: str) -> bool:
        return (src, dst) in self.transitions

    def targets(self, src: str) -> list[Status]:
        return [self.statuses[d] for (s, d) in sorted(self.transitions) if s == src]

    def words(self) -> list[str]:
        """Every word that names a status, for help texts."""
        return sorted({w for st in self.statuses.values() for w in (st.id, *st.aliases)})

    def category(self, status_id: str) -> str:
        st = self.statuses.get(status_id)
        return st.category if st else "open"

    def match_priority(self, word: str) -> str | None:
        """A priority by name, or by position: "1" is the most urgent (as agents often say P1)."""
        for p in self.priorities:
            if norm(p) == norm(word):
                return p
        digits = word.strip().lower().lstrip("p")
        if digits.isdigit() and 1 <= int(digits) <= len(self.priorities):
            return self.priorities[int(digits) - 1]
        return None if self.priorities else word.strip()

    def match_type(self, word: str) -> str | None:
        for t in self.types:
            if norm(t) == norm(word):
                return t
        return None if self.types else word.strip()


def _status(check: Checker, path: tuple[str | int, ...], raw: Mapping[str, Any]) -> Status | None:
    check.unknown_keys(path, raw, STATUS_KEYS, "status key")
    sid = check.string((*path, "id"), raw.get("id"), "status id")
    if sid is None:
        return None
    category = raw.get("category", "open")
    if category not in CATEGORIES:
        check.add((*path, "category"), f"unknown category '{category}'", f"valid: {', '.join(CATEGORIES)}")
        return None
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
        check.add((*path, "aliases"), "aliases must be a list of words")
        aliases = []
    flags = {}
    for key in ("resolved", "final", "deferred"):
        value = raw.get(key, False)
        if not isinstance(value, bool):
            check.add((*path, key), f"{key} must be true or false")
            value = False
        flags[key] = value
    return Status(
        id=sid,
        label=str(raw.get("label", sid.replace("_", " ").capitalize())),
        category=category,
        aliases=tuple(aliases),
        template=str(raw.get("template", "status_changed")),
        **flags,
    )


def _workflow(
    check: Checker, name: str, raw: Mapping[str, Any], templates: frozenset[str] | None
) -> Workflow | None:
    base: tuple[str | int, ...] = ("workflows", name)
    check.unknown_keys(base, raw, WORKFLOW_KEYS, "workflow key")
    statuses: dict[str, Status] = {}
    raw_statuses = raw.get("statuses")
    if not isinstance(raw_statuses, list) or not raw_statuses:
        check.add(base, f"workflow '{name}' has no [[workflows.{name}.statuses]]")
        return None
    words: dict[str, str] = {}
    for i, st_raw in enumerate(raw_statuses):
        path = (*base, "statuses", i)
        if not isinstance(st_raw, dict):
            check.add(path, "a status must be a table")
            continue
        st = _status(check, path, st_raw)
        if st is None:
            continue
        if st.id in statuses:
            check.add((*path, "id"), f"duplicate status id '{st.id}'")
            continue
        clashes: set[str] = set()
        for w in (st.id, st.label, *st.aliases):
            other = words.get(norm(w))
            if other and other != st.id and other not in clashes:
                clashes.add(other)
                key = "aliases" if w in st.aliases else "id"
                check.add(
                    (*path, key),
                    f"the word '{w}' already names status '{other}'",
                    "each word may name one status",
                )
            words.setdefault(norm(w), st.id)
        if templates is not None and st.template not in templates:
            check.add(
                (*path, "template"), f"unknown template '{st.template}'", suggest(st.template, templates)
            )
        statuses[st.id] = st
    ids = list(statuses)

    def ref(key: str, required: bool = False) -> str | None:
        value = raw.get(key)
        if value in (None, ""):
            if required:
                check.add((*base, key), f"workflow '{name}' needs '{key}'", f"one of: {', '.join(ids)}")
            return None
        if value not in statuses:
            check.add(
                (*base, key),
                f"unknown status '{value}'",
                suggest(str(value), ids) or f"valid: {', '.join(ids)}",
            )
            return None
        return str(value)

    initial = ref("initial", required=True)
    transitions: set[tuple[str, str]] = set()
    for i, tr in enumerate(raw.get("transitions", [])):
        path = (*base, "transitions", i)
        if not isinstance(tr, dict):
            check.add(path, "a transition must be a table with from and to")
            continue
        check.unknown_keys(path, tr, ("from", "to", "name"), "transition key")
        srcs = tr.get("from", [])
        dsts = tr.get("to", [])
        srcs = ids if srcs == "*" else ([srcs] if isinstance(srcs, str) else srcs)
        dsts = [dsts] if isinstance(dsts, str) else dsts
        for key, values in (("from", srcs), ("to", dsts)):
            for v in values:
                if v not in statuses:
                    check.add(
                        (*path, key),
                        f"unknown status '{v}'",
                        suggest(str(v), ids) or f"valid: {', '.join(ids)}",
                    )
        transitions.update((s, d) for s in srcs for d in dsts if s in statuses and d in statuses and s != d)
    close = ref("close")
    if close is None:
        close = next((s.id for s in statuses.values() if s.final), None)
    if initial is None:
        return None
    return Workflow(
        name=name,
        label=str(raw.get("label", name)),
        statuses=statuses,
        transitions=frozenset(transitions),
        initial=initial,
        first_response=ref("first_response"),
        customer_reply=ref("customer_reply"),
        reopen=ref("reopen"),
        close=close,
        priorities=tuple(str(p) for p in raw.get("priorities", [])),
        types=tuple(str(t) for t in raw.get("types", [])),
    )


def parse_workflows(file: TomlFile, templates: Iterable[str] | None = None) -> dict[str, Workflow]:
    """All presets of one workflow.toml. Raises RulesInvalid with every error found."""
    check = Checker(file)
    tmpl = frozenset(templates) if templates is not None else None
    check.unknown_keys((), file.data, ("workflows",), "top-level key")
    raw = file.data.get("workflows")
    if not isinstance(raw, dict) or not raw:
        check.add((), "no [workflows.<name>] tables", "see docs/workflow.md")
        raise RulesInvalid(check.errors)
    out: dict[str, Workflow] = {}
    for name, wf_raw in raw.items():
        if not isinstance(wf_raw, dict):
            check.add(("workflows", name), "a workflow must be a table")
            continue
        wf = _workflow(check, name, wf_raw, tmpl)
        if wf is not None:
            out[name] = wf
    if check.errors:
        raise RulesInvalid(check.errors)
    return out


def load_workflows(
    path: Path, templates: Iterable[str] | None = None, name: str | None = None
) -> dict[str, Workflow]:
    return parse_workflows(TomlFile.read(path, name), templates)
