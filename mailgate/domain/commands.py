"""Agent commands: `#` lines at the top of a reply, read and checked as one all-or-nothing plan.

    #status wip          #resolve / #close / #pending / #defer / #reopen (any status word)
    #assign tech1        #assign group IT     #assign me     #unassign
    #priority 1          #type incident       #category network
    #set plan=enterprise #unset plan
    #tag stalled blocked #untag stalled
    #cc add a@b.c        #cc remove a@b.c
    #link SUP-12         #merge SUP-12
    #requester a@b.c     (an agent opened it for a customer: the ticket is theirs)
    #canned printer_jam  #time 1h15m
    #parent SUP-12       #unparent      #broadcast     #resolve all
    #internal            #help

Parsing stops at the first line that is not a command (blank lines before it are skipped); one
greeting line may stand above the commands ("Hi Carl,"). A command word further down is not run
and not sent to the requester either: `stray_commands` finds it, and the reply is refused whole
with the line named, as any other command that cannot be done.
`plan` checks every command against the workflow, the team and the ticket, and returns either a
Plan to apply whole or the list of errors, each naming its line and what would be valid.
Pure: no database, no mail.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from mailgate.domain.fields import Fields
from mailgate.domain.team import Agent, Team
from mailgate.domain.workflow import Status, Workflow
from mailgate.mail.thanks import is_greeting

# "#status pending", also "#Status: pending" as people write a label and its value.
COMMAND_LINE = re.compile(r"^\s*#([A-Za-z][\w-]*)\s*:?\s*(.*?)\s*$")
KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,15}-\d+$")
ADDR_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$|^[^@\s<>,;]+@localhost$")
FIELD_RE = re.compile(r"^([A-Za-z][\w.-]{0,63})\s*[=:]\s*(.*)$")
# What a mail client makes of an address typed into a reply: Outlook's text part writes a link
# as "text<mailto:target>", an HTML-only reply reaches us as "[text](mailto:target)", and a
# person may write the address as "Name <address>" (RFC 5322 name-addr).
_MAILTO_RE = re.compile(
    r"\[([^\]\n]{1,320})\]\(mailto:([^)?\s]*)[^)\s]*\)|(\S*?)<mailto:([^>?\s]*)[^>\s]*>", re.I
)
_NAME_ADDR_RE = re.compile(r'(?:"[^"]*"|[^<>,;"@]*?)\s*<([^<>\s]+@[^<>\s]+)>')
# A value in quotes, as Outlook's and Apple's AutoCorrect curl them: the quotes are not the value.
_QUOTED_VALUE_RE = re.compile(r'^(?:"(.*)"|\'(.*)\'|“(.*)”|„(.*)“|«\s*(.*?)\s*»|‘(.*)’)$')


def command_addresses(args: str) -> list[str]:
    """The addresses a command names, lower-cased, as clients leave them in the reply: each
    Outlook or HTML mailto link read as the address it shows (else the one it points to), each
    "Name <address>" as its address; the rest split on spaces, commas and semicolons. A word
    that is no address stays in the list, for the command to refuse by name."""

    def link(m: re.Match[str]) -> str:
        shown, target = (m[1], m[2]) if m[1] is not None else (m[3], m[4])
        return f" {shown if '@' in shown else target} "

    text = _NAME_ADDR_RE.sub(lambda m: f" {m[1]} ", _MAILTO_RE.sub(link, args))
    return [w.strip("<>,;").lower() for w in re.split(r"[\s,;]+", text) if w.strip("<>,;")]


HELP = """\
Commands go on the first lines of your reply, one per line:
  #status <status>     or just #<status>, e.g. #resolve #pending #close #reopen
  #assign <agent|me>   #assign group <group>   #unassign
  #priority <p>   #type <t>   #category <c>
  #set <field>=<value>   #unset <field>
  #tag <tag> [<tag> ...]   #untag <tag>
  #cc add <address>   #cc remove <address>
  #link <KEY-N>   #merge <KEY-N>
  #requester <address> (the ticket is this customer's: they get the acknowledgement)
  #canned <name>       (a prepared answer, sent before what you write; #canned alone lists them)
  #time <30m|1h15m>    (time you spent on this ticket)
  #parent <KEY-N>   #unparent   (one incident, many reports of it)
  #broadcast           (on a parent: your reply goes to the people of every open child too)
  #resolve all         (on a parent: resolve it and every open child)
  #internal            (this reply is a note for agents only)
The rest of your reply goes to the requester and watchers (unless #internal)."""


@dataclass(frozen=True)
class RawCommand:
    line_no: int  # 1-based line in the reply
    line: str
    name: str
    args: str


@dataclass(frozen=True)
class CommandError:
    line_no: int
    line: str
    reason: str
    valid: str = ""

    def __str__(self) -> str:
        tail = f"\n    valid: {self.valid}" if self.valid else ""
        return f"line {self.line_no}: {self.line}\n    {self.reason}{tail}"


@dataclass
class Plan:
    status: Status | None = None
    assignee: str | None = None
    unassign: bool = False
    group: str | None = None
    priority: str | None = None
    type: str | None = None
    category: str | None = None
    set_fields: dict[str, str] = field(default_factory=dict)
    unset_fields: list[str] = field(default_factory=list)
    tags_add: list[str] = field(default_factory=list)
    tags_remove: list[str] = field(default_factory=list)
    cc_add: list[str] = field(default_factory=list)
    cc_remove: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    merge_into: str | None = None
    requester: str | None = None
    internal: bool = False
    help: bool = False
    canned: str | None = None  # the canned reply that goes before the agent's own words
    minutes: int = 0  # time spent, `#time 1h15m`
    parent: str | None = None  # `#parent SUP-12`
    unparent: bool = False
    broadcast: bool = False  # the comment goes to the people of every open child as well
    resolve_children: Status | None = None  # `#resolve all`: every open child moves there too

    @property
    def empty(self) -> bool:
        return self == Plan()


def _command(line: str) -> re.Match[str] | None:
    """The line read as a command, in its NFKC form: a Japanese or Chinese input method types
    the full-width "＃" (U+FF03) and full-width letters, and HTML mail turns spaces into
    no-break spaces; NFKC makes each the ASCII character the agent meant."""
    return COMMAND_LINE.match(unicodedata.normalize("NFKC", line))


def _top(lines: list[str]) -> tuple[list[RawCommand], int, int]:
    """The command lines at the top of `lines`, where they start (after a greeting line, if
    any) and the index of the first line after them."""
    start = _after_greeting(lines)
    cmds: list[RawCommand] = []
    i = start
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        m = _command(line)
        if not m:
            break
        cmds.append(RawCommand(i + 1, m.group(0).strip(), m.group(1).lower(), m.group(2)))
        i += 1
    return cmds, (start if cmds else 0), (i if cmds else 0)


def _after_greeting(lines: list[str]) -> int:
    """Where commands may start: after one greeting line that a command line follows, else 0."""
    filled = [i for i, line in enumerate(lines) if line.strip()][:2]
    if len(filled) == 2 and is_greeting(lines[filled[0]]) and _command(lines[filled[1]]):
        return filled[1]
    return 0


def split_commands(text: str) -> tuple[list[RawCommand], str]:
    """The command lines at the top of `text`, and the rest (the message itself).

    A greeting line may stand above the commands ("Hi team,", "Hello John,"), as people start a
    mail: the commands under it still run, and the greeting stays the first line of the message.
    """
    lines = text.splitlines()
    cmds, start, i = _top(lines)
    if not cmds:
        return cmds, text.strip()
    greeting = "\n".join(lines[:start]).strip()
    rest = "\n".join(lines[i:]).strip()
    return cmds, f"{greeting}\n\n{rest}".strip() if greeting else rest


def is_command_word(name: str, args: str, workflow: Workflow) -> bool:
    """Whether `#name args` names something an agent can do: a command, or a status of the
    desk's workflow by one of its words (`#resolve`, `#waiting for customer`)."""
    name = name.lower()
    return (
        name in _STEPS
        or workflow.find(name) is not None
        or (bool(args) and workflow.find(f"{name} {args}") is not None)
    )


def stray_commands(text: str, workflow: Workflow) -> list[CommandError]:
    """Command lines below the agent's text ("Thanks,\n\n#resolve" at the end): not read as
    commands, since only the lines at the top are (under one greeting line at most), yet plainly
    meant as one. Sent on as the comment they would show the requester "#resolve" and leave the
    ticket where it was, so the reply is refused with each such line named. Only a word of the
    command vocabulary typed at the start of a line counts: "#include <stdio.h>", "#1 priority"
    or a hashtag in a signature are the agent's text, and an indented "#status <status>" is the
    command list of a notification quoted without '>'."""
    lines = text.splitlines()
    _, _, i = _top(lines)
    found: list[CommandError] = []
    for n in range(i, len(lines)):
        m = _command(lines[n])
        if m and m.group(0).startswith("#") and is_command_word(m.group(1), m.group(2), workflow):
            found.append(
                CommandError(
                    n + 1,
                    m.group(0).strip(),
                    "commands are read only on the first lines of a reply: this one stands below your text",
                    "move it to the top (one greeting line may stand above the commands)",
                )
            )
    return found


@dataclass(frozen=True)
class TicketView:
    """What commands are checked against."""

    key: str
    status: str
    tags: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()


def plan(
    commands: list[RawCommand],
    *,
    ticket: TicketView,
    workflow: Workflow,
    team: Team,
    author: str,
    ticket_exists: Callable[[str], bool],
    canned: tuple[str, ...] = (),
    fields: Fields | None = None,
) -> tuple[Plan, list[CommandError]]:
    """Check every command; the Plan is to be applied only when the error list is empty.
    `canned` names the canned replies there are (templates/canned/, kb_* answers); `fields` is
    rules/fields.toml (allowed values, and what must be set before a ticket is resolved)."""
    planner = _Planner(
        ticket, workflow, team, author, ticket_exists, canned=canned, fields=fields or Fields()
    )
    for c in commands:
        planner.check(c)
    planner.required_fields()
    return planner.plan, planner.errors


@dataclass
class _Planner:
    """Checks one command at a time into `plan`, or notes in `errors` why it cannot be done.

    One small step per command word (`_STEPS`); a word that is no command may be a status
    (`#resolve`, `#waiting for customer`)."""

    ticket: TicketView
    workflow: Workflow
    team: Team
    author: str
    ticket_exists: Callable[[str], bool]
    plan: Plan = field(default_factory=Plan)
    errors: list[CommandError] = field(default_factory=list)
    canned: tuple[str, ...] = ()
    fields: Fields = field(default_factory=Fields)
    status_line: RawCommand | None = None  # the command that moves the ticket, for its errors
    broadcast_line: RawCommand | None = None

    def check(self, c: RawCommand) -> None:
        step = _STEPS.get(c.name)
        if step is None:
            self.status_word(c, c.args.strip())
            return
        step(self, c, c.args.strip())

    def err(self, c: RawCommand, reason: str, valid: str = "") -> None:
        self.errors.append(CommandError(c.line_no, c.line, reason, valid))

    def targets(self) -> str:
        """The statuses the ticket may move to, with the word that moves it there."""
        return ", ".join(
            f"{t.label} (#{t.aliases[0] if t.aliases else t.id})"
            for t in self.workflow.targets(self.ticket.status)
        )

    def set_status(self, c: RawCommand, st: Status) -> None:
        wf, here = self.workflow, self.ticket.status
        if self.plan.status is not None:
            self.err(c, "a second status change in one reply", "one #status per reply")
            return
        if st.id == here:
            self.err(c, f"{self.ticket.key} is already {st.label}")
            return
        if not wf.can(here, st.id):
            label = wf.status(here).label if here in wf.statuses else here
            self.err(
                c, f"cannot go from {label} to {st.label}", self.targets() or "none: this status is final"
            )
            return
        self.plan.status = st
        self.status_line = c

    def required_fields(self) -> None:
        """Once every command is read: a move to a resolved status needs the fields
        rules/fields.toml requires, set on the ticket or by a `#set` in the same reply."""
        if self.broadcast_line is not None and self.plan.internal:
            self.err(self.broadcast_line, "a broadcast goes to requesters: it cannot be #internal")
        st, c = self.plan.status, self.status_line
        if st is None or c is None or not st.resolved:
            return
        present = (set(self.ticket.fields) - set(self.plan.unset_fields)) | set(self.plan.set_fields)
        for d in self.fields.required():
            if d.name not in present:
                valid = f"#set {d.name}=" + ("|".join(d.values) if d.values else "<text>")
                self.err(c, f"{d.label} must be set before {self.ticket.key} is resolved", valid)

    # -- one step per command word ---------------------------------------------------------------
    def status_word(self, c: RawCommand, args: str) -> None:
        """`#resolve`, `#pending`, `#waiting for customer`: a status by one of its words."""
        wf = self.workflow
        st = wf.find(c.name) or (wf.find(f"{c.name} {args}") if args else None)
        if st is not None and st.resolved and args.lower() == "all":
            # `#resolve all` on a parent: its open children too; on a parent resolved already,
            # only they move (the offer that came with the first #resolve says to write this).
            self.plan.resolve_children = st
            if st.id == self.ticket.status:
                self.status_line = c
                return
        if st is not None:
            self.set_status(c, st)
            return
        self.err(
            c,
            f"unknown command #{c.name}",
            " ".join(f"#{name}" for name in _STEPS)  # every command, as the table below has them
            + ", or a status: "
            + " ".join(f"#{w}" for w in wf.words() if " " not in w),
        )

    def want_help(self, c: RawCommand, args: str) -> None:
        self.plan.help = True

    def internal(self, c: RawCommand, args: str) -> None:
        self.plan.internal = True

    def reopen(self, c: RawCommand, args: str) -> None:
        self.set_status(c, self.workflow.status(self.workflow.reopen or self.workflow.initial))

    def status(self, c: RawCommand, args: str) -> None:
        st = self.workflow.find(args) if args else None
        if st is None:
            self.err(c, f"unknown status '{args}'" if args else "#status needs a status", self.targets())
            return
        self.set_status(c, st)

    def assign(self, c: RawCommand, args: str) -> None:
        words = args.split(None, 1)
        if not words:
            self.err(
                c, "#assign needs an agent or a group", "#assign <agent>, #assign me, #assign group <group>"
            )
            return
        if words[0].lower() == "group" and len(words) == 2:
            self.assign_group(c, words[1])
            return
        if args.lower() == "me":
            self.plan.assignee = self.author
            return
        agent = self.team.agent(args) or _agent_by_name(self.team, args)
        if agent is not None:
            self.plan.assignee = agent.address
            return
        group = _group(self.team, args)
        if group is not None:
            self.plan.group = group
            return
        self.err(
            c,
            f"no agent or group '{args}'",
            "agents: "
            + ", ".join(a.handle for a in self.team.agents.values())
            + "; groups: "
            + ", ".join(self.team.groups),
        )

    def assign_group(self, c: RawCommand, name: str) -> None:
        group = _group(self.team, name)
        if group is None:
            self.err(c, f"unknown group '{name}'", ", ".join(self.team.groups))
            return
        self.plan.group = group

    def unassign(self, c: RawCommand, args: str) -> None:
        self.plan.unassign = True

    def priority(self, c: RawCommand, args: str) -> None:
        value = self.workflow.match_priority(args) if args else None
        if value is None:
            self.err(c, f"unknown priority '{args}'", ", ".join(self.workflow.priorities))
            return
        self.plan.priority = value

    def set_type(self, c: RawCommand, args: str) -> None:
        value = self.workflow.match_type(args) if args else None
        if value is None:
            self.err(c, f"unknown type '{args}'", ", ".join(self.workflow.types))
            return
        self.plan.type = value

    def category(self, c: RawCommand, args: str) -> None:
        if not args:
            self.err(c, "#category needs a value")
            return
        self.plan.category = args

    def set_field(self, c: RawCommand, args: str) -> None:
        m = FIELD_RE.match(args)
        if not m or not m.group(2).strip():
            self.err(c, "#set needs field=value", "#set plan=enterprise")
            return
        name, value = m.group(1).lower(), m.group(2).strip()
        if quoted := _QUOTED_VALUE_RE.match(value):
            value = next(v for v in quoted.groups() if v is not None).strip() or value
        if name == "parent":  # checked like a link: the ticket must exist
            self.err(c, "the parent is set with #parent", f"#parent {self.ticket.key.rsplit('-', 1)[0]}-12")
            return
        defined = self.fields.get(name)
        if defined is not None:
            allowed = defined.match(value)
            if allowed is None:
                self.err(c, f"'{value}' is not a {defined.label.lower()}", ", ".join(defined.values))
                return
            value = allowed
        self.plan.set_fields[name] = value

    def unset_field(self, c: RawCommand, args: str) -> None:
        if not args:
            self.err(c, "#unset needs a field name", ", ".join(self.ticket.fields) or "no fields are set")
            return
        self.plan.unset_fields.append(args.lower())

    def tag(self, c: RawCommand, args: str) -> None:
        tags = [t.strip(",").lower() for t in args.split() if t.strip(",")]
        if not tags:
            self.err(c, f"#{c.name} needs at least one tag")
        (self.plan.tags_add if c.name == "tag" else self.plan.tags_remove).extend(tags)

    def cc(self, c: RawCommand, args: str) -> None:
        words = args.split(None, 1)
        op = words[0].lower() if words else ""
        removing = op in ("remove", "rm", "del")
        named = (words[1] if len(words) > 1 else "") if removing or op == "add" else args
        addrs = command_addresses(named)
        bad = [a for a in addrs if not ADDR_RE.match(a)]
        if not addrs or bad:
            self.err(
                c,
                f"not an address: {', '.join(bad)}" if bad else "#cc needs an address",
                "#cc add someone@example.com, #cc remove someone@example.com",
            )
            return
        (self.plan.cc_remove if removing else self.plan.cc_add).extend(addrs)

    def requester(self, c: RawCommand, args: str) -> None:
        """`#requester ADDRESS`: one customer's address (an agent gets agent mail, not theirs)."""
        named = command_addresses(args)
        addr = named[0] if len(named) == 1 else ""
        if not ADDR_RE.match(addr):
            self.err(c, "#requester needs one address", "#requester customer@example.com")
        elif addr in self.team.agents:
            self.err(c, f"{addr} is an agent of this desk, not a customer", "#cc add, #assign")
        elif self.plan.requester not in (None, addr):
            self.err(c, "a second #requester in one reply", "one #requester per reply")
        else:
            self.plan.requester = addr

    def other_ticket(self, c: RawCommand, args: str) -> None:
        """`#link KEY` and `#merge KEY`: another ticket of this desk that exists."""
        key = args.strip("[]()").upper()
        if not KEY_RE.match(key):
            self.err(c, f"#{c.name} needs a ticket key", f"#{c.name} {self.ticket.key.rsplit('-', 1)[0]}-12")
        elif key == self.ticket.key:
            self.err(c, f"cannot {c.name} {self.ticket.key} with itself")
        elif not self.ticket_exists(key):
            self.err(c, f"no ticket {key}")
        elif c.name == "link":
            self.plan.links.append(key)
        elif c.name == "parent":
            self.plan.parent = key
        else:
            self.plan.merge_into = key

    def unparent(self, c: RawCommand, args: str) -> None:
        if "parent" not in self.ticket.fields:
            self.err(c, f"{self.ticket.key} has no parent")
            return
        self.plan.unparent = True

    def broadcast(self, c: RawCommand, args: str) -> None:
        self.plan.broadcast = True
        self.broadcast_line = c

    def canned_reply(self, c: RawCommand, args: str) -> None:
        """`#canned <name>`: one of the desk's prepared answers; alone or unknown, the error
        lists them all (that is how an agent finds their names)."""
        name = args.strip().lower()
        available = ", ".join(self.canned) or "none: add templates/canned/<name>.txt"
        if self.plan.canned is not None:
            self.err(c, "a second #canned in one reply", "one #canned per reply")
        elif not name:
            self.err(c, "#canned needs the name of a canned reply", available)
        elif name not in self.canned:
            self.err(c, f"no canned reply '{name}'", available)
        else:
            self.plan.canned = name

    def time_spent(self, c: RawCommand, args: str) -> None:
        """`#time 30m`, `#time 1h15m`, `#time 2h`: added up per agent and ticket."""
        minutes = parse_duration(args)
        if minutes is None:
            self.err(
                c, f"not a duration: '{args}'" if args else "#time needs a duration", "#time 30m, #time 1h15m"
            )
            return
        self.plan.minutes += minutes


DURATION_RE = re.compile(r"^(?:(\d{1,3})\s*h)?\s*(?:(\d{1,4})\s*m(?:in)?)?$", re.I)


def parse_duration(text: str) -> int | None:
    """Minutes in "30m", "1h15m", "2h", "1h 15m"; None for anything else or for zero."""
    m = DURATION_RE.match(text.strip())
    if not m or not (m.group(1) or m.group(2)):
        return None
    minutes = int(m.group(1) or 0) * 60 + int(m.group(2) or 0)
    return minutes or None


def format_minutes(minutes: int) -> str:
    """75 → "1h15m", 30 → "30m", 120 → "2h": how `#time` is written."""
    hours, rest = divmod(minutes, 60)
    return (f"{hours}h" if hours else "") + (f"{rest}m" if rest or not hours else "")


# The command words and the step that checks each; any other word may name a status.
_STEPS: dict[str, Callable[[_Planner, RawCommand, str], None]] = {
    "status": _Planner.status,
    "assign": _Planner.assign,
    "unassign": _Planner.unassign,
    "priority": _Planner.priority,
    "type": _Planner.set_type,
    "category": _Planner.category,
    "set": _Planner.set_field,
    "unset": _Planner.unset_field,
    "tag": _Planner.tag,
    "untag": _Planner.tag,
    "cc": _Planner.cc,
    "link": _Planner.other_ticket,
    "merge": _Planner.other_ticket,
    "requester": _Planner.requester,
    "internal": _Planner.internal,
    "help": _Planner.want_help,
    "reopen": _Planner.reopen,
    "canned": _Planner.canned_reply,
    "time": _Planner.time_spent,
    "parent": _Planner.other_ticket,
    "unparent": _Planner.unparent,
    "broadcast": _Planner.broadcast,
}
KNOWN = tuple(_STEPS)


def _group(team: Team, name: str) -> str | None:
    for g in team.groups:
        if g.lower() == name.strip().lower():
            return g
    return None


def _agent_by_name(team: Team, name: str) -> Agent | None:
    low = name.strip().lower()
    for agent in team.agents.values():
        if agent.name.lower() == low or agent.name.split()[0].lower() == low:
            return agent
    return None
