"""All the rules in one immutable, validated snapshot: team, routing, workflows, SLA, templates.

`load(rules_dir, templates_dir, desks)` reads the files once (files.read_sources), validates every
file against the others — routing against the team and the template names, workflows against the
template names and the presets the desks name, every admin template's jinja syntax — and returns
a `Snapshot` whose `version` is the fingerprint of exactly the bytes it was built from. On any
problem it raises `RulesInvalid` carrying ALL errors of ALL files as `FILE:LINE: reason`, so an
admin fixes them in one go, and nothing of a bad edit is ever used: the unit of acceptance is the
whole snapshot, never one file.

It must not touch the database or send mail, and it must not import the pipeline: the pipeline,
the CLI and `status` all stand on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Protocol
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError

from jinja2 import Environment, TemplateSyntaxError

from mailgate.domain.fields import Fields, parse_fields
from mailgate.domain.routing import Routing, parse_routing
from mailgate.domain.rulesfile import RulesError, RulesInvalid, TomlFile
from mailgate.domain.sla import SlaRules
from mailgate.domain.sla import parse_sla as _parse_sla_text
from mailgate.domain.team import Team, check_team
from mailgate.domain.workflow import Workflow, parse_workflows
from mailgate.ruleset.files import (
    CANNED_DIR,
    FIELDS_FILE,
    ROUTING_FILE,
    SLA_FILE,
    TEAM_FILE,
    WORKFLOW_FILE,
    Sources,
    TemplateFile,
    Unreadable,
    read_sources,
)

CANNED_PREFIX = f"{CANNED_DIR}/"


class DeskLike(Protocol):
    """What the loader needs of a configured desk: its key and the workflow preset it names."""

    @property
    def key(self) -> str: ...

    @property
    def workflow(self) -> str: ...


@dataclass(frozen=True)
class Templates:
    """The templates of one snapshot. A name is looked up in the desk's own directory
    (templates/<KEY>/), then templates/, then the shipped set, so admins override only what
    they change and a desk only what differs for it."""

    shared: Mapping[str, TemplateFile]
    desks: Mapping[str, Mapping[str, TemplateFile]]
    shipped: Mapping[str, TemplateFile]
    # templates/canned/<name>.txt, by file name: what `#canned <name>` sends
    canned: Mapping[str, TemplateFile] = field(default_factory=lambda: MappingProxyType({}))

    def find(self, desk_key: str, filename: str) -> TemplateFile | None:
        """The file `filename` (e.g. "acknowledgement.txt", "canned/printer.txt") as desk
        `desk_key` sees it."""
        if filename.startswith(CANNED_PREFIX):
            return self.canned.get(filename.removeprefix(CANNED_PREFIX))
        own = self.desks.get(desk_key)
        if own is not None and filename in own:
            return own[filename]
        return self.shared.get(filename) or self.shipped.get(filename)

    def names(self) -> frozenset[str]:
        """Event names a rule or workflow may use: `<name>.txt` anywhere but a desk directory
        (a desk's file only overrides), partials (`_x.txt`) excepted."""
        return frozenset(
            n[:-4] for n in (*self.shared, *self.shipped) if n.endswith(".txt") and not n.startswith("_")
        )

    def canned_names(self) -> tuple[str, ...]:
        """What an agent may name in `#canned`: templates/canned/<name>.txt, and the knowledge-base
        answers (`kb_*`) routing rules send as auto-replies."""
        kb = (n for n in self.names() if n.startswith("kb_"))
        return tuple(sorted({*(n[:-4] for n in self.canned), *kb}))

    def canned_file(self, name: str) -> str:
        """The template file `find` takes for the canned reply `name` (one of `canned_names`)."""
        return f"{CANNED_PREFIX}{name}.txt" if f"{name}.txt" in self.canned else f"{name}.txt"


@dataclass(frozen=True)
class Snapshot:
    """One consistent version of every rules file and template, as the pipeline uses it."""

    team: Team
    routing: Routing
    workflows: Mapping[str, Workflow]
    sla: SlaRules | None  # None: no rules/sla.toml, so no SLA and no periodic jobs
    templates: Templates
    version: str  # the fingerprint of the files' bytes; recorded on every routed ticket
    files: tuple[Path, ...]
    loaded_at: datetime = field(compare=False)
    # A desk's own rules/<KEY>/routing.toml, by desk key: it replaces rules/routing.toml for that
    # desk, with the triage person it names (else team.toml's).
    desk_routing: Mapping[str, Routing] = field(default_factory=lambda: MappingProxyType({}))
    # rules/fields.toml: the ticket fields with their allowed values, defaults, required ones
    fields: Fields = field(default_factory=Fields)

    @property
    def zone(self) -> str:
        """The desk's time zone (IANA name): see `desk_zone`."""
        return desk_zone(self.sla)

    def workflow(self, desk: DeskLike) -> Workflow:
        """The preset the desk names (checked at load, so it exists)."""
        return self.workflows[desk.workflow]

    def routing_for(self, desk_key: str) -> Routing:
        """The routing rules of one desk: its own file, else the shared rules/routing.toml."""
        return self.desk_routing.get(desk_key, self.routing)

    def triage_for(self, desk_key: str) -> str:
        """Who gets the desk's tickets that no rule placed."""
        return self.routing_for(desk_key).team.triage


def desk_zone(sla: SlaRules | None) -> str:
    """The one zone of a desk: that of the `[timers]` calendar in sla.toml (UTC without one).

    Business hours, the digest and report days are counted there; routing's time conditions read
    it too unless routing.toml names its own `timezone`. One source, so `rules test`, `report` and
    the pages never disagree about what time it is at the desk."""
    return sla.timers.calendar.tz if sla is not None else "UTC"


def zone_warnings(snapshot: Snapshot) -> list[RulesError]:
    """A routing.toml (shared or a desk's own) that still names a `timezone` other than the
    desk's zone (`desk_zone`), as `FILE:LINE: warning: …`. Valid, and honoured — its time and
    weekday conditions read that zone — but rarely meant: desks made by an older `mailgate init`
    carry `timezone = "Europe/London"` from before routing read the desk's zone, while their
    business hours, digests and reports count in sla.toml's calendar zone. `rules check` and
    `config check` print these; the rules load all the same."""
    zone = snapshot.zone
    sla = snapshot.sla
    where = (
        f"the zone of sla.toml's [timers] calendar {sla.timers.calendar.name!r}"
        if sla is not None
        else "UTC: there is no sla.toml"
    )
    out: list[RulesError] = []
    for path in snapshot.files:
        if path.name != ROUTING_FILE:
            continue
        try:
            file = TomlFile.read(path, display(path))
        except RulesInvalid:  # gone or broken since the snapshot was made: the next load says so
            continue
        named = file.data.get("timezone")
        if isinstance(named, str) and not same_zone(named, zone):
            out.append(
                RulesError(
                    file.name,
                    file.line_of(("timezone",)),
                    f'warning: timezone = "{named}" is not the desk\'s zone {zone} ({where}): the'
                    f" time and weekday conditions of this file read {named}, while business hours,"
                    f" digests and reports count in {zone}",
                    "delete the line to route by the desk's zone; a desk in another zone sets the"
                    " calendar's tz in sla.toml",
                )
            )
    return out


def same_zone(a: str, b: str) -> bool:
    """Whether two IANA names name one zone: the same name, or a link and its zone (`Etc/UTC` and
    `UTC`, `Europe/Kiev` and `Europe/Kyiv`, `US/Eastern` and `America/New_York`), which tell the
    same time all year. A link is the zone's compiled data under another name: the same bytes."""
    if a == b:
        return True
    data = _tzif(a)
    return data is not None and data == _tzif(b)


def _tzif(name: str) -> bytes | None:
    """The compiled data `ZoneInfo(name)` reads, from where it reads it (zoneinfo.TZPATH, then the
    tzdata package); None for a name that is no zone."""
    try:
        ZoneInfo(name)  # refuses what is no zone key, an absolute path or "..", before a file is read
    except (ValueError, ZoneInfoNotFoundError):
        return None
    for root in TZPATH:
        path = Path(root, name)
        if path.is_file():
            return path.read_bytes()
    try:
        return resources.files("tzdata").joinpath("zoneinfo", *name.split("/")).read_bytes()
    except (ModuleNotFoundError, OSError):
        return None


def display(path: Path) -> str:
    """Paths in errors as the admin would type them: relative to the working directory if below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _toml(path: Path, data: bytes, errors: list[RulesError]) -> TomlFile | None:
    name = display(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        errors.append(RulesError(name, 1, f"not UTF-8 text ({exc.reason})"))
        return None
    try:
        return TomlFile.parse(text, name)
    except RulesInvalid as exc:
        errors.extend(exc.errors)
        return None


def _templates(sources: Sources, errors: list[RulesError]) -> Templates:
    """Decode every template and check the admin's for jinja syntax (the shipped ones are the
    package's own and tested with it)."""
    env = Environment()  # syntax only; rendering settings do not change what parses

    def files(raw: Mapping[str, tuple[Path, bytes]], check: bool) -> Mapping[str, TemplateFile]:
        out: dict[str, TemplateFile] = {}
        for name, (path, data) in raw.items():
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.append(RulesError(display(path), 1, f"template is not UTF-8 text ({exc.reason})"))
                continue
            if check:
                try:
                    env.parse(text, name, str(path))
                except TemplateSyntaxError as exc:  # still a name rules may use: one error, not two
                    errors.append(
                        RulesError(display(path), exc.lineno or 1, f"template syntax: {exc.message}")
                    )
            out[name] = TemplateFile(text, path)
        return MappingProxyType(out)

    return Templates(
        shared=files(sources.shared, True),
        desks=MappingProxyType({key: files(raw, True) for key, raw in sources.desks.items()}),
        shipped=files(sources.shipped, False),
        canned=files(sources.canned, True),
    )


def build(sources: Sources, desks: Iterable[DeskLike] = ()) -> Snapshot:
    """Validate what `read_sources` read and compile it. Raises RulesInvalid with every error.

    team.toml is required; routing.toml is optional (no file: every ticket goes to triage);
    workflow.toml falls back to the shipped presets; sla.toml is optional (no SLA)."""
    desks = tuple(desks)
    errors: list[RulesError] = []
    templates = _templates(sources, errors)
    names = templates.names()

    team: Team | None = None
    team_entry = sources.rules.get(TEAM_FILE)
    if team_entry is None:
        errors.append(RulesError(display(sources.rules_dir / TEAM_FILE), 1, "file is missing"))
    else:
        team_file = _toml(*team_entry, errors)
        if team_file is not None:
            team, team_errors = check_team(team_file)
            if team_errors:
                errors.extend(team_errors)

    # First: its [timers] calendar is the desk's zone, which routing's time conditions read.
    sla: SlaRules | None = None
    sla_entry = sources.rules.get(SLA_FILE)
    if sla_entry is not None:
        path, data = sla_entry
        try:
            sla = _parse_sla_text(data.decode("utf-8"), display(path))
        except UnicodeDecodeError as exc:
            errors.append(RulesError(display(path), 1, f"not UTF-8 text ({exc.reason})"))
        except RulesInvalid as exc:
            errors.extend(exc.errors)

    zone = ZoneInfo(desk_zone(sla))

    routing: Routing | None = None
    routing_entry = sources.rules.get(ROUTING_FILE)
    if routing_entry is None:
        routing = Routing(rules=(), team=team, timezone=zone) if team is not None else None
    else:
        routing_file = _toml(*routing_entry, errors)
        if routing_file is not None:
            # Checked against the team as far as it is valid, so one pass reports everything;
            # with no team at all, references to groups and agents cannot be judged.
            against = team or Team(agents={}, groups={}, triage="")
            try:
                routing = parse_routing(routing_file, against, names, zone)
            except RulesInvalid as exc:
                errors.extend(
                    e
                    for e in exc.errors
                    if team is not None or not e.reason.startswith(("unknown group", "unknown agent"))
                )

    desk_routing: dict[str, Routing] = {}
    keys = {desk.key for desk in desks}
    for key, (path, data) in sources.desk_routing.items():
        if keys and key not in keys:
            errors.append(
                RulesError(
                    display(path),
                    1,
                    f"no desk has the key {key}: a desk's own routing.toml lives in rules/<KEY>/",
                    f"desks: {', '.join(sorted(keys))}",
                )
            )
            continue
        desk_file = _toml(path, data, errors)
        if desk_file is None:
            continue
        try:
            desk_routing[key] = parse_routing(
                desk_file, team or Team(agents={}, groups={}, triage=""), names, zone
            )
        except RulesInvalid as exc:
            errors.extend(
                e
                for e in exc.errors
                if team is not None or not e.reason.startswith(("unknown group", "unknown agent"))
            )

    workflows: dict[str, Workflow] = {}
    wf_path, wf_bytes = sources.rules[WORKFLOW_FILE]
    wf_file = _toml(wf_path, wf_bytes, errors)
    if wf_file is not None:
        try:
            workflows = parse_workflows(wf_file, names)
        except RulesInvalid as exc:
            errors.extend(exc.errors)
        else:
            for desk in desks:
                if desk.workflow not in workflows:
                    errors.append(
                        RulesError(
                            wf_file.name,
                            1,
                            f"desk {desk.key} uses workflow '{desk.workflow}', which is not defined",
                            f"defined: {', '.join(workflows)}",
                        )
                    )

    fields = Fields()
    fields_entry = sources.rules.get(FIELDS_FILE)
    if fields_entry is not None:
        fields_file = _toml(*fields_entry, errors)
        if fields_file is not None:
            try:
                fields = parse_fields(fields_file)
            except RulesInvalid as exc:
                errors.extend(exc.errors)
    routings = [(sources.rules.get(ROUTING_FILE), routing)]
    routings += [(sources.desk_routing[key], r) for key, r in desk_routing.items()]
    for entry, compiled in routings:
        if entry is not None and compiled is not None:
            errors.extend(_routed_fields(display(entry[0]), compiled, fields))

    if errors or team is None or routing is None:
        raise RulesInvalid(errors)
    return Snapshot(
        team=team,
        routing=routing,
        workflows=MappingProxyType(workflows),
        sla=sla,
        templates=templates,
        version=sources.fingerprint,
        files=(
            *(path for path, _ in sources.rules.values()),
            *(path for path, _ in sources.desk_routing.values()),
        ),
        loaded_at=datetime.now(UTC),
        desk_routing=MappingProxyType(desk_routing),
        fields=fields,
    )


def _routed_fields(name: str, routing: Routing, fields: Fields) -> list[RulesError]:
    """A routing rule's `fields` must give a defined field one of its values."""
    errors: list[RulesError] = []
    for rule in routing.rules:
        for key, value in rule.actions.fields.items():
            d = fields.get(key)
            if d is not None and d.values and str(value) not in d.values:
                errors.append(
                    RulesError(
                        name,
                        rule.line or 1,
                        f"rule '{rule.name}' sets {key} to '{value}', which rules/fields.toml does not allow",
                        ", ".join(d.values),
                    )
                )
    return errors


def load(rules_dir: Path, templates_dir: Path, desks: Iterable[DeskLike] = ()) -> Snapshot:
    """Read and validate everything: the one loader of the daemon, `rules check`, `config check`
    and `status`. Raises RulesInvalid with every error found."""
    try:
        sources = read_sources(Path(rules_dir), Path(templates_dir))
    except Unreadable as exc:
        raise RulesInvalid([RulesError(display(exc.path), 1, f"cannot read: {exc.strerror}")]) from None
    return build(sources, desks)
