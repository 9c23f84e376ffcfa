"""Routing rules: `rules/routing.toml` compiled into an ordered list of rules, and `evaluate`.

A new ticket's message goes through the rules in file order. A rule that hits applies its actions
(`then`); the first hit stops unless the rule says `continue = true`. Scalar actions (group,
assignee, priority, type, ...) of a later hit override an earlier one; tags and watchers add up;
custom fields merge. Nothing hit with a group or assignee: the triage person gets the ticket.
Every rule tested leaves a trace line, so "why did this go to Billing?" always has an answer
(STYLE.md habit 7: Mailman's rule hits and misses).

It must not read files, the database or the clock: the caller passes the compiled rules, the
message, `now`, and the state assignment needs (open counts, last assignee per group).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from mailgate.domain.conditions import AllCond, ConditionCompiler, Facts, explain_miss, prefilter
from mailgate.domain.rulesfile import Checker, RulesInvalid, TomlFile, suggest, type_name
from mailgate.domain.team import ADDRESS_RE, AssignmentPlan, Team, choose_assignee
from mailgate.mail.model import ParsedMail

ROUTING_KEYS = ("timezone", "priorities", "defaults", "priority_matrix", "triage", "rules")
RULE_KEYS = ("name", "description", "when", "then", "continue", "enabled")
ACTION_KEYS = (
    "group",
    "assignee",
    "priority",
    "impact",
    "urgency",
    "type",
    "category",
    "status",
    "tags",
    "fields",
    "watchers",
    "auto_reply",
)
DEFAULT_KEYS = ("priority", "type", "category", "status")
MATRIX_KEYS = ("impact", "urgency", "priority", "default_impact", "default_urgency")
FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
TAG_RE = re.compile(r"^[\w.:/-]{1,64}$")


@dataclass(frozen=True)
class Actions:
    """What a rule does when it hits. None / empty means "leave as is"."""

    group: str | None = None
    assignee: str | None = None
    priority: str | None = None
    impact: str | None = None
    urgency: str | None = None
    type: str | None = None
    category: str | None = None
    status: str | None = None
    auto_reply: str | None = None
    tags: tuple[str, ...] = ()
    watchers: tuple[str, ...] = ()
    fields: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    name: str
    cond: AllCond
    actions: Actions
    cont: bool = False
    line: int = 0
    # Words of which one must be in the subject or body for the rule to hit (None: always test).
    pre: frozenset[str] | None = None


@dataclass(frozen=True)
class PriorityMatrix:
    """ITIL-style priority: impact (rows) × urgency (columns) → priority (seed 004)."""

    impacts: tuple[str, ...]
    urgencies: tuple[str, ...]
    grid: Mapping[tuple[str, str], str]
    default_impact: str
    default_urgency: str

    def priority(self, impact: str | None, urgency: str | None) -> str:
        return self.grid[(impact or self.default_impact, urgency or self.default_urgency)]


@dataclass(frozen=True)
class Routing:
    """A compiled routing.toml together with the team it refers to."""

    rules: tuple[Rule, ...]
    team: Team
    defaults: Actions = Actions()
    matrix: PriorityMatrix | None = None
    priorities: tuple[str, ...] = ()
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    # Filled by parse_routing (build_word_index): lets evaluate skip rules that cannot hit.
    word_index: Mapping[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    unfiltered: tuple[int, ...] = field(default=(), repr=False)


# --- the decision -------------------------------------------------------------------------------


# Trace lines are built only when read: writing out 1,000 miss reasons per message would cost more
# than the matching. Per-rule lines come from the hits and the rules tested; the notes after them
# ("stopped at ...", "assign: ...", "priority: ...") are kept as (label, text, None). A raw entry
# is (rule name or label, hit detail or None, the rule's condition or None for a note).
_Raw = tuple[str, str | None, AllCond | None]


def _trace_line(raw: _Raw, facts: Facts) -> str:
    name, detail, cond = raw
    if cond is None:
        return f"{name}: {detail}" if name else str(detail)
    if detail is not None:
        return f"rule '{name}': hit ({detail})"
    return f"rule '{name}': miss ({explain_miss(cond, facts)})"


@dataclass(frozen=True)
class RoutingDecision:
    """What the rules decided for one new ticket, and why (`trace`)."""

    group: str | None
    assignee: str
    assignment: AssignmentPlan
    assignment_reason: str
    priority: str | None
    priority_reason: str  # "'P1' from matrix: impact wide × urgency now", "" when no priority
    impact: str | None
    urgency: str | None
    type: str | None
    category: str | None
    status: str | None
    auto_reply: str | None
    tags: tuple[str, ...]
    fields: Mapping[str, str | int | float | bool]
    watchers: tuple[str, ...]
    matched: tuple[str, ...]
    triaged: bool
    group_members: tuple[str, ...]
    triage: str
    _raw_trace: tuple[_Raw, ...] = field(repr=False, default=())
    _facts: Facts | None = field(repr=False, default=None, compare=False)
    _rules: tuple[Rule, ...] = field(repr=False, default=(), compare=False)
    _hits: Mapping[int, str] = field(repr=False, default_factory=dict, compare=False)
    _tested: int = field(repr=False, default=0, compare=False)

    @cached_property
    def trace(self) -> tuple[str, ...]:
        """Per-rule lines ("rule 'vpn': hit (subject has word 'vpn')"), then assignment and priority.

        Miss reasons are written out only when someone reads the trace.
        """
        assert self._facts is not None
        lines = [
            _trace_line((r.name, self._hits.get(i), r.cond), self._facts)
            for i, r in enumerate(self._rules[: self._tested])
        ]
        return (*lines, *(_trace_line(raw, self._facts) for raw in self._raw_trace))

    @cached_property
    def trace_hits(self) -> tuple[str, ...]:
        """The short trace for an audit event: only the rules that hit, a count of the misses,
        then assignment and priority. Cheap at any number of rules (misses are not explained)."""
        assert self._facts is not None
        lines = [f"rule '{self._rules[i].name}': hit ({d})" for i, d in self._hits.items()]
        missed = self._tested - len(self._hits)
        if missed:
            lines.append(f"{missed} rule(s) missed")
        return (*lines, *(_trace_line(raw, self._facts) for raw in self._raw_trace))

    @property
    def notify(self) -> tuple[str, ...]:
        """Who hears about the new ticket: the assignee, then the watchers, without repeats."""
        out: list[str] = []
        for a in (self.assignee, *self.watchers):
            if a and a not in out:
                out.append(a)
        return tuple(out)

    def to_dict(self, *, full_trace: bool = True) -> dict[str, Any]:
        """Plain data for JSON output and the audit event.

        `full_trace=False` stores `trace_hits` (hits, a miss count and the notes) instead of a line
        per rule: the right size for an audit event when the rules number in the hundreds.
        """
        return {
            "group": self.group,
            "assignee": self.assignee,
            "assignment": {
                "strategy": self.assignment.strategy,
                "candidates": list(self.assignment.candidates),
                "away": list(self.assignment.away),
                "reason": self.assignment_reason,
            },
            "priority": self.priority,
            "priority_reason": self.priority_reason,
            "impact": self.impact,
            "urgency": self.urgency,
            "type": self.type,
            "category": self.category,
            "status": self.status,
            "auto_reply": self.auto_reply,
            "tags": list(self.tags),
            "fields": dict(self.fields),
            "watchers": list(self.watchers),
            "matched": list(self.matched),
            "triaged": self.triaged,
            "group_members": list(self.group_members),
            "triage": self.triage,
            "notify": list(self.notify),
            "trace": list(self.trace if full_trace else self.trace_hits),
        }


_SCALARS = ("group", "assignee", "priority", "impact", "urgency", "type", "category", "status", "auto_reply")


def _candidates(routing: Routing, facts: Facts) -> Iterable[int]:
    """Indexes of the rules that could hit, in order: the rules without a word prefilter, plus
    those sharing a word with the message. The others cannot hit and are never tested; their
    miss lines are written only if the trace is read."""
    if not routing.word_index:
        return range(len(routing.rules))
    words = facts.tokens("text", facts.text["text"])
    index = routing.word_index
    found = set(routing.unfiltered)
    if len(words) <= len(index):
        for w in words:
            got = index.get(w)
            if got:
                found.update(got)
    else:
        for w, got in index.items():
            if w in words:
                found.update(got)
    return sorted(found)


def build_word_index(rules: tuple[Rule, ...]) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    """word -> indexes of the rules whose prefilter holds it; and the rules with no prefilter."""
    index: dict[str, list[int]] = {}
    unfiltered: list[int] = []
    for i, rule in enumerate(rules):
        if rule.pre is None:
            unfiltered.append(i)
        else:
            for w in rule.pre:
                index.setdefault(w, []).append(i)
    return {w: tuple(v) for w, v in index.items()}, tuple(unfiltered)


def evaluate(
    rules: Any,
    mail: ParsedMail,
    *,
    desk_address: str,
    now: datetime,
    open_counts: Callable[[str], int] | None = None,
    last_assigned: Callable[[str], str | None] | None = None,
) -> RoutingDecision:
    """Route one new ticket's first message.

    `rules` is a `Routing` or anything with a `.routing` attribute (the rules `Snapshot`).
    `now` should be timezone-aware (naive means UTC); time conditions convert it to their zone.
    `open_counts(address)` serves least-open groups; `last_assigned(group)` round-robin groups.
    """
    routing: Routing = rules if isinstance(rules, Routing) else rules.routing
    facts = Facts.of(mail, desk_address=desk_address, now=now)
    matched: list[str] = []
    scalars: dict[str, str] = {}
    tags: list[str] = []
    watchers: list[str] = []
    fields: dict[str, str | int | float | bool] = {}
    hits: dict[int, str] = {}
    all_rules = routing.rules
    tested = len(all_rules)  # rules considered, in order (up to and including the stopping one)
    for i in _candidates(routing, facts):
        rule = all_rules[i]
        detail = rule.cond.test(facts)
        if detail is None:
            continue
        hits[i] = detail
        matched.append(rule.name)
        a = rule.actions
        for key in _SCALARS:
            value = getattr(a, key)
            if value is not None:
                scalars[key] = value
        tags.extend(t for t in a.tags if t not in tags)
        watchers.extend(w for w in a.watchers if w not in watchers)
        fields.update(a.fields)
        if not rule.cont:
            tested = i + 1
            break
    trace: list[_Raw] = []
    if tested < len(all_rules):
        trace.append(("", f"stopped at rule '{all_rules[tested - 1].name}' (first match wins)", None))

    team = routing.team
    group = scalars.get("group")
    plan, assignee, why = choose_assignee(
        team, group, scalars.get("assignee"), last_assigned=last_assigned, open_counts=open_counts
    )
    triaged = plan.strategy == "triage" or not plan.candidates
    trace.append(("assign", f"{assignee} ({why})", None))
    if triaged and team.is_away(team.triage):
        trace.append(("assign", f"note: triage person {team.triage} is marked away", None))

    impact, urgency = scalars.get("impact"), scalars.get("urgency")
    priority = scalars.get("priority")
    priority_why = ""  # its own name: `why` is the assignment's reason, kept in the history
    if priority is not None:
        priority_why = f"'{priority}' set by rule"
    elif routing.matrix is not None and (impact or urgency):
        m = routing.matrix
        priority = m.priority(impact, urgency)
        priority_why = f"'{priority}' from matrix: impact {impact or m.default_impact} × urgency {urgency or m.default_urgency}"
    elif routing.defaults.priority is not None:
        priority = routing.defaults.priority
        priority_why = f"'{priority}' by default"
    if priority_why:
        trace.append(("priority", priority_why, None))

    d = routing.defaults
    g = team.groups.get(group) if group else None
    return RoutingDecision(
        group=group,
        assignee=assignee,
        assignment=plan,
        assignment_reason=why,
        priority=priority,
        priority_reason=priority_why,
        impact=impact,
        urgency=urgency,
        type=scalars.get("type", d.type),
        category=scalars.get("category", d.category),
        status=scalars.get("status", d.status),
        auto_reply=scalars.get("auto_reply"),
        tags=tuple(tags),
        fields=fields,
        watchers=tuple(w for w in watchers if w != assignee),
        matched=tuple(matched),
        triaged=triaged,
        group_members=g.members if g else (),
        triage=team.triage,
        _raw_trace=tuple(trace),
        _facts=facts,
        _rules=all_rules,
        _hits=hits,
        _tested=tested,
    )


# --- compiling routing.toml ---------------------------------------------------------------------


def parse_routing(
    file: TomlFile, team: Team, templates: frozenset[str], zone: tzinfo | None = None
) -> Routing:
    """Validate and compile routing.toml against the team and the template names available.

    `zone` is the desk's zone (the `[timers]` calendar of sla.toml): time and weekday conditions
    read the clock there unless the file names its own `timezone`, so a desk has one zone for its
    routing, SLA, digest and reports. Raises RulesInvalid carrying every error of the file.
    """
    check = Checker(file)
    data = file.data
    check.unknown_keys((), data, ROUTING_KEYS, "routing.toml key")
    if "triage" in data:
        # Who gets what no rule placed, for the desks that use this file (a desk's own
        # rules/<KEY>/routing.toml): it replaces team.toml's triage person for them.
        ref = check.string(("triage",), data["triage"], "triage")
        agent = team.agent(ref) if ref else None
        if ref is not None and agent is None:
            check.add(("triage",), f"unknown agent '{ref}' as triage", suggest(ref.lower(), team.agents))
        elif agent is not None:
            team = replace(team, triage=agent.address)

    tz: tzinfo = zone or ZoneInfo("UTC")
    compiler = ConditionCompiler(check, tz)
    if "timezone" in data:
        tz = compiler.timezone(("timezone",), data["timezone"]) or tz
        compiler.default_tz = tz

    priorities: tuple[str, ...] = ()
    if "priorities" in data:
        priorities = tuple(
            check.strings(("priorities",), data["priorities"], "priorities", single_ok=False) or ()
        )

    matrix = _matrix(check, data.get("priority_matrix"), priorities) if "priority_matrix" in data else None
    ctx = _ActionContext(check, team, templates, priorities, matrix)

    defaults = Actions()
    if "defaults" in data:
        table = check.table(("defaults",), data["defaults"], "[defaults]")
        if table is not None:
            check.unknown_keys(("defaults",), table, DEFAULT_KEYS, "default")
            defaults = ctx.actions(("defaults",), {k: v for k, v in table.items() if k in DEFAULT_KEYS})

    rules: list[Rule] = []
    names: dict[str, int] = {}
    for path, raw in check.entries(data, "rules"):
        check.unknown_keys(path, raw, RULE_KEYS, "rule key")
        name = check.string((*path, "name"), raw.get("name"), "rule name")
        if name is not None:
            if name in names:
                check.add(
                    (*path, "name"), f"duplicate rule name '{name}'", f"first defined on line {names[name]}"
                )
            else:
                names[name] = file.line_of((*path, "name"))
        when = raw.get("when", {})
        when_table = check.table((*path, "when"), when, "when")
        cond = compiler.compile((*path, "when"), when_table or {})
        then = check.table((*path, "then"), raw.get("then", {}), "then") or {}
        actions = ctx.actions((*path, "then"), then)
        cont = check.boolean((*path, "continue"), raw.get("continue", False), "continue")
        enabled = check.boolean((*path, "enabled"), raw.get("enabled", True), "enabled")
        if enabled and name is not None:
            rules.append(Rule(name, cond, actions, bool(cont), file.line_of(path), prefilter(cond)))

    if check.errors:
        raise RulesInvalid(check.errors)
    compiled = tuple(rules)
    word_index, unfiltered = build_word_index(compiled)
    return Routing(compiled, team, defaults, matrix, priorities, tz, word_index, unfiltered)


def _matrix(check: Checker, raw: object, priorities: tuple[str, ...]) -> PriorityMatrix | None:
    path = ("priority_matrix",)
    table = check.table(path, raw, "[priority_matrix]")
    if table is None:
        return None
    check.unknown_keys(path, table, MATRIX_KEYS, "priority_matrix key")
    impacts = check.strings((*path, "impact"), table.get("impact"), "impact levels", single_ok=False)
    urgencies = check.strings((*path, "urgency"), table.get("urgency"), "urgency levels", single_ok=False)
    grid_raw = table.get("priority")
    if impacts is None or urgencies is None:
        return None
    shape = f"{len(impacts)} rows (one per impact) of {len(urgencies)} priorities (one per urgency)"
    if (
        not isinstance(grid_raw, list)
        or len(grid_raw) != len(impacts)
        or not all(isinstance(r, list) and len(r) == len(urgencies) for r in grid_raw)
    ):
        check.add((*path, "priority"), "priority must be a grid of " + shape)
        return None
    grid: dict[tuple[str, str], str] = {}
    for imp, row in zip(impacts, grid_raw, strict=True):
        for urg, p in zip(urgencies, row, strict=True):
            if not isinstance(p, str) or (priorities and p not in priorities):
                check.add(
                    (*path, "priority"),
                    f"unknown priority {p!r} in the matrix",
                    suggest(str(p), priorities),
                    needle=str(p),
                )
                return None
            grid[(imp, urg)] = p
    defaults = []
    for key, levels in (("default_impact", impacts), ("default_urgency", urgencies)):
        value = table.get(key, levels[len(levels) // 2])
        if value not in levels:
            check.add((*path, key), f"{key} {value!r} is not one of the levels", suggest(str(value), levels))
            value = levels[0]
        defaults.append(value)
    return PriorityMatrix(tuple(impacts), tuple(urgencies), grid, defaults[0], defaults[1])


@dataclass
class _ActionContext:
    check: Checker
    team: Team
    templates: frozenset[str]
    priorities: tuple[str, ...]
    matrix: PriorityMatrix | None

    def actions(self, path: tuple[str | int, ...], table: dict[str, Any]) -> Actions:
        check = self.check
        check.unknown_keys(path, table, ACTION_KEYS, "action")
        out: dict[str, Any] = {}
        for key in ("type", "category", "status"):
            if key in table:
                out[key] = check.string((*path, key), table[key], key)
        if "group" in table:
            name = check.string((*path, "group"), table["group"], "group")
            if name is not None and name not in self.team.groups:
                check.add((*path, "group"), f"unknown group '{name}'", suggest(name, self.team.groups))
            else:
                out["group"] = name
        if "assignee" in table:
            ref = check.string((*path, "assignee"), table["assignee"], "assignee")
            agent = self.team.agent(ref) if ref else None
            if ref is not None and agent is None:
                check.add(
                    (*path, "assignee"), f"unknown agent '{ref}'", suggest(ref.lower(), self.team.agents)
                )
            out["assignee"] = agent.address if agent else None
        if "priority" in table:
            p = check.string((*path, "priority"), table["priority"], "priority")
            if p is not None and self.priorities and p not in self.priorities:
                check.add((*path, "priority"), f"unknown priority '{p}'", suggest(p, self.priorities))
            out["priority"] = p
        for key in ("impact", "urgency"):
            if key not in table:
                continue
            level = check.string((*path, key), table[key], key)
            if level is None:
                continue
            if self.matrix is None:
                check.add((*path, key), f"{key} needs a [priority_matrix] table", "or set priority directly")
                continue
            levels = self.matrix.impacts if key == "impact" else self.matrix.urgencies
            if level not in levels:
                check.add((*path, key), f"unknown {key} '{level}'", suggest(level, levels))
                continue
            out[key] = level
        if "auto_reply" in table:
            name = check.string((*path, "auto_reply"), table["auto_reply"], "auto_reply")
            if name is not None and name not in self.templates:
                check.add(
                    (*path, "auto_reply"),
                    f"unknown template '{name}' (no templates/{name}.txt)",
                    suggest(name, self.templates),
                )
            out["auto_reply"] = name
        if "tags" in table:
            tags = check.strings((*path, "tags"), table["tags"], "tags") or []
            for t in tags:
                if not TAG_RE.match(t):
                    check.add(
                        (*path, "tags"), f"tag '{t}' must be one word (letters, digits, - _ . : /)", needle=t
                    )
            out["tags"] = tuple(dict.fromkeys(t.lower() for t in tags))
        if "watchers" in table:
            watchers = []
            for ref in check.strings((*path, "watchers"), table["watchers"], "watchers") or []:
                agent = self.team.agent(ref)
                address = agent.address if agent else ref.strip().lower()
                if not ADDRESS_RE.match(address):
                    check.add(
                        (*path, "watchers"),
                        f"watcher '{ref}' is neither an agent nor a mail address",
                        needle=ref,
                    )
                    continue
                watchers.append(address)
            out["watchers"] = tuple(dict.fromkeys(watchers))
        if "fields" in table:
            fields = check.table((*path, "fields"), table["fields"], "fields") or {}
            good: dict[str, str | int | float | bool] = {}
            for key, value in fields.items():
                if not FIELD_NAME_RE.match(key):
                    check.add(
                        (*path, "fields", key), f"field name '{key}' must be lowercase letters, digits and _"
                    )
                elif not isinstance(value, str | int | float | bool):
                    check.add(
                        (*path, "fields", key),
                        f"field '{key}' must be a string, number or boolean, got {type_name(value)}",
                    )
                else:
                    good[key] = value
            out["fields"] = good
        return Actions(**{k: v for k, v in out.items() if v is not None})
