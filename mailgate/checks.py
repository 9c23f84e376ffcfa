"""`mailgate config check`: config.toml, the rules and the templates validated together.

Each problem is a `Problem` printed as `FILE:LINE: reason`, the form editors jump to. Three kinds:

- config: config.toml does not parse or a setting is wrong (exit 78, EX_CONFIG);
- rules: team/routing/workflow/sla files do not load, or refer to each other or to the desks
  wrongly (exit 65, EX_DATAERR);
- template: a template does not compile, includes a template that does not exist, or uses a
  variable that the mail it renders is never given (exit 65). The variables each template gets
  are written down once, in `TEMPLATE_VARIABLES` below (docs/operations.md lists them): jinja2's
  `meta.find_undeclared_variables` finds what a template uses, and every template is then
  rendered once with a sample context under StrictUndefined, which also catches a misspelt
  attribute (`ticket.subjct`). A variable guarded by `is defined` is allowed anywhere.

It reads files and never writes, opens no database and sends nothing. It must stay in step
with what `pipeline/handlers/` passes to `Notifier.send`: when a handler passes a new variable,
add it here, or `config check` will refuse templates that use it.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from os import EX_CONFIG, EX_DATAERR, EX_OK
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateSyntaxError, meta, nodes

from mailgate.config import RETIRED, Config, ConfigError, load_config
from mailgate.ruleset import load, zone_warnings

# What Notifier.send gives every template (pipeline/notify.py).
BASE_VARIABLES = frozenset(
    {
        "ticket",
        "desk",
        "recipient",
        "subject",
        "reply_address",
        "unsubscribe_address",
        "survey_links",
        "help",
        "attachments",
    }
    # the web side's signed links for this recipient, empty when it is off (pipeline/links.py)
    | {"view_url", "unsubscribe_url", "rating_links", "agent_url"}
)
# The first answer to a requester: the acknowledgement, or a routing rule's `auto_reply` template.
NEW_TICKET_REQUESTER = frozenset({"message", "requester_name"})
# Mail about an agent's reply: to requester and watchers (incl. each workflow status' template),
# to a new assignee, to the other agents (internal notes), to the agent asking for #help.
AGENT_CHANGE = frozenset(
    {"actor", "actor_address", "comment", "changes", "status", "internal", "help", "survey"}
)
# To agents about a new ticket.
NEW_TICKET_AGENT = frozenset(
    {"decision", "comment", "help", "from", "from_name", "cc_not_added", "similar", "duplicate"}
)

# The periodic jobs' mails (SLA warning/escalation, reminders, auto-close, review, digest).
from mailgate.pipeline.canned import CANNED_VARIABLES  # noqa: E402
from mailgate.pipeline.sla_apply import TEMPLATE_VARIABLES as _SCHEDULER_TEMPLATES  # noqa: E402
from mailgate.pipeline.sla_apply import sample_context as _scheduler_samples  # noqa: E402
from mailgate.ruleset.files import CANNED_DIR  # noqa: E402

TEMPLATE_VARIABLES: dict[str, frozenset[str]] = {
    "acknowledgement": NEW_TICKET_REQUESTER,
    "agent_comment": AGENT_CHANGE,
    "assigned": AGENT_CHANGE | {"request"},
    "group_queue": frozenset({"actor", "actor_address", "comment", "changes", "group", "help"}),
    "internal_note": AGENT_CHANGE,
    "watcher_update": AGENT_CHANGE,
    "command_help": AGENT_CHANGE,
    "command_error": frozenset({"errors", "help", "comment"}),
    "forged_agent": frozenset({"claimed", "why", "had_commands", "subject_seen", "excerpt"}),
    "rating_received": frozenset({"rating", "comment", "from"}),
    "reopened": frozenset({"from", "comment", "help"}),
    "requester_reply": frozenset({"from", "from_name", "comment", "help", "cc_not_added"}),
    "held_message": frozenset({"from", "from_name", "why", "subject_seen", "comment"}),
    "fanout_limited": frozenset({"cap", "mailed", "not_mailed"}),
    "children_open": frozenset({"children", "help"}),  # a parent resolved with open children
    "new_ticket": NEW_TICKET_AGENT,
    "triage_needed": NEW_TICKET_AGENT,
    "attachments_rejected": frozenset({"rejected"}),
    "agent_signin": frozenset({"url", "minutes"}),  # the web side's sign-in mail (mailgate/web)
    "on_behalf_confirm": frozenset({"customer", "source", "why"}),
    "address_bounced": frozenset({"addresses", "dsn_status", "diagnostic", "quiet_days", "quiet_until"}),
    "reply_to_bounced": frozenset({"address", "dsn_status", "diagnostic", "bounced_at"}),
    **_SCHEDULER_TEMPLATES,
}
TEMPLATE_SUFFIXES = (".txt", ".html")


@dataclass(frozen=True)
class Problem:
    kind: str  # config | rules | template
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was looked at, for the summary line
    warnings: list[Problem] = field(default_factory=list)  # valid, but probably not meant: exit 0

    @property
    def exit_code(self) -> int:
        if any(p.kind == "config" for p in self.problems):
            return EX_CONFIG
        return EX_DATAERR if self.problems else EX_OK


# -- config.toml ---------------------------------------------------------------------------------

_WHERE = re.compile(r"^(?P<table>[a-z_]+)(?:\[(?P<index>\d+)\])?(?:\.(?P<key>[a-z_]+))?:")


def _config_line(path: Path, message: str) -> int:
    """The line of config.toml a ConfigError names ("desks[1].key: …"), else 1."""
    from mailgate.domain.rulesfile import RulesInvalid, TomlFile

    m = _WHERE.match(message)
    if not m:
        return 1
    try:
        tf = TomlFile.read(path)
    except RulesInvalid:
        return 1
    key: list[str | int] = [] if m["table"] == "config" else [m["table"]]
    if m["index"] is not None:
        key.append(int(m["index"]))
    if m["key"]:
        key.append(m["key"])
    return tf.line_of(tuple(key)) if key else 1


def config_error_text(exc: ConfigError) -> str:
    """A config file's error as a command that cannot start tells it: `FILE:LINE: key: what it
    takes`, the words `config check` prints; an error naming no key of the file (an environment
    variable, a file that is missing or not TOML, which names itself) as it is."""
    message = str(exc)
    if exc.file is None or not _WHERE.match(message) or message.startswith(str(exc.file)):
        return message
    return f"{exc.file}:{_config_line(exc.file, message)}: {message}"


def check_config(path: Path | None, env: dict[str, str] | None = None) -> tuple[Config | None, list[Problem]]:
    """config.toml, or with `path` None the embedded default (what `mailgate run` uses with no
    config file: a fresh checkout's rules/ and templates/ in the working directory)."""
    from mailgate.domain.rulesfile import RulesInvalid, TomlFile

    shown = str(path) if path is not None else "(embedded default)"
    if path is not None:
        try:
            TomlFile.read(path, shown)  # a syntax error with its line, before load_config says it less well
        except RulesInvalid as exc:
            return None, [Problem("config", e.file, e.line, e.reason) for e in exc.errors]
    try:
        config = load_config(path, env=env, create_state=False)
    except ConfigError as exc:
        line = _config_line(path, str(exc)) if path is not None else 1
        return None, [Problem("config", shown, line, str(exc))]
    problems = []
    for what, d in (("rules_dir", config.rules_dir), ("templates_dir", config.templates_dir)):
        if not d.is_dir():
            line = _config_line(path, f"config.{what}:") if path is not None else 1
            problems.append(Problem("config", shown, line, f"{what}: no directory {d}"))
    return config, problems


def config_warnings(config: Config, path: Path) -> list[Problem]:
    """Settings that load but probably do not do what the admin meant."""
    sec = config.security
    warnings = []
    if sec.trusted_authserv_ids and sec.trust_authentication_results != "relay":
        line = _config_line(path, "security.trusted_authserv_ids:")
        warnings.append(
            Problem(
                "config",
                str(path),
                line,
                "security.trusted_authserv_ids is set but nothing says an MTA is in front of mailgate: "
                "with mailgate's own listener as the MX every Authentication-Results header comes from "
                "the sender, so none is trusted (RFC 8601 section 5). Behind a relay that adds them, "
                'set trust_authentication_results = "relay"',
            )
        )
    for table, retired in RETIRED.items():
        section = config.raw.get(table)
        for key, what in retired.items():
            if isinstance(section, dict) and key in section:
                line = _config_line(path, f"{table}.{key}:")
                warnings.append(
                    Problem("config", str(path), line, f"{table}.{key} is no longer read: {what}")
                )
    return warnings


# -- rules ---------------------------------------------------------------------------------------


@dataclass
class RulesFacts:
    """What the template check needs to know from the rules: which templates play which role."""

    status_templates: set[str] = field(default_factory=set)
    auto_reply_templates: set[str] = field(default_factory=set)
    live: Any = None  # the rules Snapshot that loaded, for sample contexts
    warnings: list[Problem] = field(default_factory=list)  # valid, probably not meant (zone_warnings)


def check_rules(config: Config, config_path: Path | None) -> tuple[RulesFacts, list[Problem]]:
    from mailgate.domain.rulesfile import RulesInvalid

    facts = RulesFacts()
    problems: list[Problem] = []
    try:
        rules = load(config.rules_dir, config.templates_dir, config.desks)
    except RulesInvalid as exc:
        problems.extend(
            Problem("rules", e.file, e.line, f"{e.reason} ({e.hint})" if e.hint else e.reason)
            for e in exc.errors
            # A template's syntax error is reported by check_templates, with the rest of its checks.
            if not e.file.endswith(TEMPLATE_SUFFIXES)
        )
    else:
        facts.live = rules
        facts.warnings = [
            Problem("rules", w.file, w.line, w.reason.removeprefix("warning: ") + f" ({w.hint})")
            for w in zone_warnings(rules)
        ]
        for wf in rules.workflows.values():
            facts.status_templates.update(st.template for st in wf.statuses.values())
        for routing in (rules.routing, *rules.desk_routing.values()):  # desks' own files too
            facts.auto_reply_templates.update(
                r.actions.auto_reply for r in routing.rules if r.actions.auto_reply
            )
            if routing.defaults.auto_reply:
                facts.auto_reply_templates.add(routing.defaults.auto_reply)
    return facts, problems


# -- templates -----------------------------------------------------------------------------------


def _environment(search: list[Path]) -> Environment:
    # The same settings as mailgate/ruleset/templates.py (the Renderer's), so what passes here renders there.
    from jinja2 import ChoiceLoader, select_autoescape

    return Environment(
        loader=ChoiceLoader([FileSystemLoader(str(p)) for p in search]),
        autoescape=select_autoescape(enabled_extensions=("html", "htm"), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _guarded(ast: nodes.Template) -> set[str]:
    """Names tested with `is defined` / `is undefined`: the template copes with their absence."""
    return {
        t.node.name
        for t in ast.find_all(nodes.Test)
        if t.name in ("defined", "undefined") and isinstance(t.node, nodes.Name)
    }


def _first_use(ast: nodes.Template, name: str) -> int:
    lines = [n.lineno for n in ast.find_all(nodes.Name) if n.name == name and n.ctx == "load"]
    return min(lines) if lines else 1


def allowed_variables(name: str, facts: RulesFacts) -> frozenset[str]:
    """The variables the mail rendered from template `name` is given."""
    allowed = set(BASE_VARIABLES) | set(TEMPLATE_VARIABLES.get(name, ()))
    if name in facts.status_templates:
        allowed |= AGENT_CHANGE
    if facts.live is None and name not in TEMPLATE_VARIABLES:
        # The rules did not load, so this template's role is unknown: rather than pile guesses on
        # top of the rules errors, allow what any mail to a requester may be given.
        allowed |= NEW_TICKET_REQUESTER | AGENT_CHANGE
    elif name in facts.auto_reply_templates or (
        name not in TEMPLATE_VARIABLES and name not in facts.status_templates
    ):
        # An admin's own template is a routing rule's auto_reply: it gets the acknowledgement's context.
        allowed |= NEW_TICKET_REQUESTER
    return frozenset(allowed)


def _template_files(templates_dir: Path) -> Iterator[tuple[Path, list[Path]]]:
    """(file, search path) for every template, per-desk overrides (templates/<KEY>/) included."""
    for p in sorted(templates_dir.iterdir()) if templates_dir.is_dir() else []:
        if p.is_file() and p.suffix in TEMPLATE_SUFFIXES:
            yield p, [templates_dir]
        elif p.is_dir():
            for q in sorted(p.iterdir()):
                if q.is_file() and q.suffix in TEMPLATE_SUFFIXES:
                    yield q, [p, templates_dir]


def _includes(
    env: Environment, ast: nodes.Template, seen: set[str]
) -> Iterator[tuple[str, nodes.Template | None]]:
    """Every template included (transitively), with its parsed body (None: it does not exist)."""
    for ref in meta.find_referenced_templates(ast):
        if ref is None or ref in seen:
            continue
        seen.add(ref)
        try:
            source, _, _ = env.loader.get_source(env, ref)  # type: ignore[union-attr]
            sub = env.parse(source)
        except Exception:  # noqa: BLE001 - missing or broken: reported by the caller / its own check
            yield ref, None
            continue
        yield ref, sub
        yield from _includes(env, sub, seen)


def check_templates(config: Config, facts: RulesFacts) -> list[Problem]:
    problems: list[Problem] = []
    sample = SampleContext(config, facts)
    for path, search in _template_files(config.templates_dir):
        shown = str(path)
        env = _environment(search)
        try:
            ast = env.parse(path.read_text(encoding="utf-8"), name=path.name, filename=shown)
        except TemplateSyntaxError as exc:
            problems.append(Problem("template", shown, exc.lineno or 1, f"template syntax: {exc.message}"))
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem("template", shown, 1, f"cannot read: {exc}"))
            continue
        if path.name.startswith("_"):
            continue  # partials are checked inside each template that includes them
        name = path.stem
        # templates/canned/<name>.txt is an agent's `#canned <name>`, rendered for one ticket.
        allowed = CANNED_VARIABLES if path.parent.name == CANNED_DIR else allowed_variables(name, facts)
        unknown = meta.find_undeclared_variables(ast) - allowed - _guarded(ast)
        for var in sorted(unknown, key=lambda v: _first_use(ast, v)):
            problems.append(
                Problem(
                    "template", shown, _first_use(ast, var), f"unknown variable '{var}' ({_valid(allowed)})"
                )
            )
        broken_include = False
        for ref, sub in _includes(env, ast, set()):
            if sub is None:
                broken_include = True
                problems.append(
                    Problem(
                        "template",
                        shown,
                        _include_line(ast, ref),
                        f"includes '{ref}', which does not exist or does not compile",
                    )
                )
                continue
            for var in sorted(meta.find_undeclared_variables(sub) - allowed - _guarded(sub) - _guarded(ast)):
                broken_include = True
                where = _find_file(search, ref)
                problems.append(
                    Problem(
                        "template",
                        where,
                        _first_use(sub, var),
                        f"unknown variable '{var}' when included by {path.name} ({_valid(allowed)})",
                    )
                )
        if unknown or broken_include:
            continue  # rendering would only repeat the same error
        if facts.live is None and "decision" in allowed:
            continue  # no routing decision to render with while the rules do not load
        problems.extend(_render(env, path, shown, sample.for_template(name, allowed)))
    return problems


def _valid(allowed: Iterable[str]) -> str:
    return "valid here: " + ", ".join(sorted(allowed))


def _include_line(ast: nodes.Template, ref: str) -> int:
    for node in ast.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        tmpl = getattr(node, "template", None)
        if isinstance(tmpl, nodes.Const) and tmpl.value == ref:
            return node.lineno
    return 1


def _find_file(search: list[Path], ref: str) -> str:
    for d in search:
        if (d / ref).is_file():
            return str(d / ref)
    return ref


def _render(env: Environment, path: Path, shown: str, context: dict[str, Any]) -> list[Problem]:
    try:
        env.get_template(path.name).render(context)
    except TemplateSyntaxError as exc:
        return [
            Problem("template", exc.filename or shown, exc.lineno or 1, f"template syntax: {exc.message}")
        ]
    except Exception as exc:  # noqa: BLE001 - any render error is the admin's to fix, with its line
        # jinja2 rewrites tracebacks so template frames carry the template's file and line.
        frames = [
            f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(TEMPLATE_SUFFIXES)
        ]
        file, line = (frames[-1].filename, frames[-1].lineno or 1) if frames else (shown, 1)
        if not file.startswith("/") and not Path(file).exists():
            file = shown
        return [
            Problem(
                "template", file, line, f"does not render with a sample mail: {type(exc).__name__}: {exc}"
            )
        ]
    return []


class SampleContext:
    """Realistic values for every documented variable: a real Ticket, Desk, ParsedMail, workflow
    Status and routing decision, so a misspelt attribute fails here, not in a customer's inbox."""

    RAW = (
        b"From: Ann Customer <ann@example.com>\r\nTo: support@example.com\r\nSubject: Printer on fire\r\n"
        b"Message-ID: <sample-1@example.com>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
        b"The printer on floor 3 is on fire.\r\n"
    )

    def __init__(self, config: Config, facts: RulesFacts) -> None:
        from mailgate.mail.parse import parse_message
        from mailgate.store.models import Ticket

        self.config = config
        self.facts = facts
        self.desk = config.desks[0]
        self.mail = parse_message(self.RAW)
        now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
        self.ticket = Ticket(
            key=f"{self.desk.key}-20",
            desk=self.desk.key,
            number=20,
            subject="Printer on fire",
            requester="ann@example.com",
            requester_name="Ann Customer",
            created_at=now,
            updated_at=now,
        )
        for attr, value in (
            ("status", "open"),
            ("group", "IT"),
            ("assignee", "tech1@example.com"),
            ("priority", "P2"),
        ):
            if hasattr(self.ticket, attr):
                setattr(self.ticket, attr, value)
        self.status = self._status()
        self.decision = self._decision(now)

    def _status(self) -> Any:
        live = self.facts.live
        workflows = getattr(live, "workflows", None)
        if workflows:
            wf = workflows.get(self.desk.workflow) or next(iter(workflows.values()))
            return next(iter(wf.statuses.values()))
        from mailgate.domain.workflow import Status

        return Status(id="open", label="Open", category="open")

    def _decision(self, now: datetime) -> Any:
        live = self.facts.live
        if live is None:
            return None
        from mailgate.domain.routing import evaluate

        rules = getattr(live, "rules", live)
        return evaluate(rules, self.mail, desk_address=self.desk.address, now=now)

    def for_template(self, name: str, allowed: frozenset[str]) -> dict[str, Any]:
        reply = self.desk.token_address("sup-20-abc")
        values: dict[str, Any] = {
            "ticket": self.ticket,
            "desk": self.desk,
            "recipient": "ann@example.com",
            "subject": f"[{self.ticket.key}] Printer on fire",
            "reply_address": reply,
            "unsubscribe_address": self.desk.token_address("sup-20-abc-off"),
            "survey_links": {n: f"mailto:{reply}?subject=Rating%20{n}&body={n}" for n in range(1, 6)},
            "view_url": "https://help.example.com/r/abc.def",
            "unsubscribe_url": "https://help.example.com/u/abc.def",
            "rating_links": {n: f"https://help.example.com/rate/abc.def?n={n}" for n in range(1, 6)},
            "agent_url": f"https://help.example.com/agent/t/{self.ticket.key}",
            "url": "https://help.example.com/agent/signin/abc.def",
            "minutes": 15,
            "message": self.mail,
            "requester_name": "Ann Customer",
            "actor": "Tech One",
            "actor_address": "tech1@example.com",
            "comment": "Replaced the fuser unit.\nShould be fine now.",
            "changes": ["changed the status from Open to Resolved", "assigned to tech1@example.com"],
            "status": self.status,
            "internal": False,
            "help": "#status STATUS, #assign WHO, #priority P, #internal, #resolve, #close",
            "survey": True,
            "decision": self.decision,
            "from": "ann@example.com",
            "from_name": "Ann Customer",
            "errors": ["line 1: unknown command #stauts (did you mean #status?)"],
            "claimed": "tech1@example.com",
            "why": "no reply token issued to this agent",
            "had_commands": True,
            "subject_seen": "Re: [SUP-20] Printer on fire",
            "excerpt": "#close\nDone.",
            "rating": 5,
            "rejected": ["report.pdf (31.0 MB) over the 20.0 MB limit"],
            "cc_not_added": ["bob@example.com", "carol@example.com"],
            "cap": 20,
            "mailed": ["ann@example.com"],
            "not_mailed": ["dave@example.com"],
            "attachments": [
                {
                    "name": "photo.jpg",
                    "size": "1.2 MB",
                    "attached": True,
                    "fetch": "mailgate tickets attachment SUP-20 photo.jpg",
                },
                {
                    "name": "dump.bin",
                    "size": "30 MB",
                    "attached": False,
                    "fetch": "mailgate tickets attachment SUP-20 dump.bin",
                },
            ],
            "request": "The printer on floor 3 is on fire.",
            "customer": "ann@example.com",
            "source": "#requester",
            "group": "IT",
            "address": "ann@example.com",
            "addresses": ["ann@example.com"],
            "dsn_status": "5.1.1",
            "diagnostic": "smtp; 550 5.1.1 <ann@example.com>: Recipient address rejected: User unknown",
            "quiet_days": 7,
            "quiet_until": "2026-11-30 10:00 UTC",
            "bounced_at": "2026-11-23 10:00 UTC",
            "fields": {"severity": "high", "component": "printer"},
            "agent": "Tech One",
            "children": ["SUP-21", "SUP-22"],
            "similar": [
                {
                    "key": "SUP-7",
                    "subject": "Printer on floor 3 smokes",
                    "status": "open",
                    "when": "2026-11-23",
                },
                {"key": "SUP-3", "subject": "Printer jams", "status": "resolved", "when": "2026-11-02"},
            ],
            "duplicate": {"key": "SUP-7", "subject": "Printer on floor 3 smokes", "status": "open"},
            **_scheduler_samples(),
        }
        return {k: v for k, v in values.items() if k in allowed}


# -- all together --------------------------------------------------------------------------------


def check_all(config_path: Path | None, env: dict[str, str] | None = None) -> Report:
    """Config, then rules, then templates: each stage only when the one before gave it what it
    needs. `config_path` None checks the embedded default."""
    report = Report()
    config, problems = check_config(config_path, env)
    report.problems.extend(problems)
    report.checked.append(str(config_path) if config_path is not None else "the embedded default")
    if config is None:
        return report
    if config_path is not None:
        report.warnings.extend(config_warnings(config, config_path))
    facts, problems = check_rules(config, config_path)
    report.problems.extend(problems)
    report.warnings.extend(facts.warnings)
    report.checked.append(str(config.rules_dir))
    report.problems.extend(check_templates(config, facts))
    report.checked.append(str(config.templates_dir))
    return report
