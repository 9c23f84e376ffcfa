"""Agent commands: `#` lines at the top of a reply, read and checked as one all-or-nothing plan.

    #status wip          #resolve / #close / #pending / #defer / #reopen (any status word)
    #assign tech1        #assign group IT     #assign me     #unassign
    #priority 1          #type incident       #category network
    #set plan=enterprise #unset plan
    #tag stalled blocked #untag stalled
    #cc add a@b.c        #cc remove a@b.c
    #link SUP-12         #merge SUP-12
    #internal            #help

Parsing stops at the first line that is not a command (blank lines before it are skipped).
`plan` checks every command against the workflow, the team and the ticket, and returns either a
Plan to apply whole or the list of errors, each naming its line and what would be valid.
Pure: no database, no mail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mailgate.domain.team import Agent, Team
from mailgate.domain.workflow import Status, Workflow

COMMAND_LINE = re.compile(r"^\s*#([A-Za-z][\w-]*)\s*(.*?)\s*$")
KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,15}-\d+$")
ADDR_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$|^[^@\s<>,;]+@localhost$")
FIELD_RE = re.compile(r"^([A-Za-z][\w.-]{0,63})\s*[=:]\s*(.*)$")

HELP = """\
Commands go on the first lines of your reply, one per line:
  #status <status>     or just #<status>, e.g. #resolve #pending #close #reopen
  #assign <agent|me>   #assign group <group>   #unassign
  #priority <p>   #type <t>   #category <c>
  #set <field>=<value>   #unset <field>
  #tag <tag> [<tag> ...]   #untag <tag>
  #cc add <address>   #cc remove <address>
  #link <KEY-N>   #merge <KEY-N>
  #internal            (this reply is a note for agents only)
The rest of your reply goes to the requester and watchers (unless #internal)."""

KNOWN = (
    "status", "assign", "unassign", "priority", "type", "category", "set", "unset", "tag", "untag",
    "cc", "link", "merge", "internal", "help", "reopen",
)  # fmt: skip


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
    internal: bool = False
    help: bool = False

    @property
    def empty(self) -> bool:
        return self == Plan()


def split_commands(text: str) -> tuple[list[RawCommand], str]:
    """The command lines at the top of `text`, and the rest (the message itself)."""
    lines = text.splitlines()
    cmds: list[RawCommand] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        m = COMMAND_LINE.match(line)
        if not m:
            break
        cmds.append(RawCommand(i + 1, line.strip(), m.group(1).lower(), m.group(2)))
        i += 1
    return cmds, "\n".join(lines[i:]).strip() if cmds else text.strip()


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
) -> tuple[Plan, list[CommandError]]:
    """Check every command; the Plan is to be applied only when the error list is empty."""
    p = Plan()
    errors: list[CommandError] = []
    status_from = ticket.status

    def err(c: RawCommand, reason: str, valid: str = "") -> None:
        errors.append(CommandError(c.line_no, c.line, reason, valid))

    def set_status(c: RawCommand, st: Status) -> None:
        nonlocal status_from
        if p.status is not None:
            err(c, "a second status change in one reply", "one #status per reply")
            return
        if st.id == ticket.status:
            err(c, f"{ticket.key} is already {st.label}")
            return
        if not workflow.can(status_from, st.id):
            here = workflow.status(status_from).label if status_from in workflow.statuses else status_from
            targets = ", ".join(
                f"{t.label} (#{t.aliases[0] if t.aliases else t.id})" for t in workflow.targets(status_from)
            )
            err(c, f"cannot go from {here} to {st.label}", targets or "none: this status is final")
            return
        p.status = st

    for c in commands:
        args = c.args.strip()
        name = c.name
        if name not in KNOWN:
            st = workflow.find(name) or (workflow.find(f"{name} {args}") if args else None)
            if st is not None:
                set_status(c, st)
                continue
            err(
                c,
                f"unknown command #{name}",
                "#status #assign #priority #type #set #tag #cc #link #merge #internal, "
                "or a status: " + " ".join(f"#{w}" for w in workflow.words() if " " not in w),
            )
            continue
        if name == "help":
            p.help = True
        elif name == "internal":
            p.internal = True
        elif name == "reopen":
            target = workflow.reopen or workflow.initial
            set_status(c, workflow.status(target))
        elif name == "status":
            st = workflow.find(args) if args else None
            if st is None:
                err(
                    c,
                    f"unknown status '{args}'" if args else "#status needs a status",
                    ", ".join(
                        f"{t.label} (#{t.aliases[0] if t.aliases else t.id})"
                        for t in workflow.targets(status_from)
                    ),
                )
            else:
                set_status(c, st)
        elif name == "assign":
            words = args.split(None, 1)
            if not words:
                err(
                    c,
                    "#assign needs an agent or a group",
                    "#assign <agent>, #assign me, #assign group <group>",
                )
            elif words[0].lower() == "group" and len(words) == 2:
                g = _group(team, words[1])
                if g is None:
                    err(c, f"unknown group '{words[1]}'", ", ".join(team.groups))
                else:
                    p.group = g
            elif args.lower() == "me":
                p.assignee = author
            else:
                agent = team.agent(args) or _agent_by_name(team, args)
                g = _group(team, args) if agent is None else None
                if agent is not None:
                    p.assignee = agent.address
                elif g is not None:
                    p.group = g
                else:
                    err(
                        c,
                        f"no agent or group '{args}'",
                        "agents: "
                        + ", ".join(a.handle for a in team.agents.values())
                        + "; groups: "
                        + ", ".join(team.groups),
                    )
        elif name == "unassign":
            p.unassign = True
        elif name == "priority":
            value = workflow.match_priority(args) if args else None
            if value is None:
                err(c, f"unknown priority '{args}'", ", ".join(workflow.priorities))
            else:
                p.priority = value
        elif name == "type":
            value = workflow.match_type(args) if args else None
            if value is None:
                err(c, f"unknown type '{args}'", ", ".join(workflow.types))
            else:
                p.type = value
        elif name == "category":
            if not args:
                err(c, "#category needs a value")
            else:
                p.category = args
        elif name == "set":
            m = FIELD_RE.match(args)
            if not m or not m.group(2).strip():
                err(c, "#set needs field=value", "#set plan=enterprise")
            else:
                p.set_fields[m.group(1).lower()] = m.group(2).strip()
        elif name == "unset":
            if not args:
                err(c, "#unset needs a field name", ", ".join(ticket.fields) or "no fields are set")
            else:
                p.unset_fields.append(args.lower())
        elif name in ("tag", "untag"):
            tags = [t.strip(",").lower() for t in args.split() if t.strip(",")]
            if not tags:
                err(c, f"#{name} needs at least one tag")
            (p.tags_add if name == "tag" else p.tags_remove).extend(tags)
        elif name == "cc":
            words = args.split()
            op = words[0].lower() if words else ""
            addrs = (
                [w.strip("<>,;").lower() for w in words[1:]]
                if op in ("add", "remove", "rm", "del")
                else [w.strip("<>,;").lower() for w in words]
            )
            bad = [a for a in addrs if not ADDR_RE.match(a)]
            if not addrs or bad:
                err(
                    c,
                    f"not an address: {', '.join(bad)}" if bad else "#cc needs an address",
                    "#cc add someone@example.com, #cc remove someone@example.com",
                )
            elif op in ("remove", "rm", "del"):
                p.cc_remove.extend(addrs)
            else:
                p.cc_add.extend(addrs)
        elif name in ("link", "merge"):
            key = args.strip("[]()").upper()
            if not KEY_RE.match(key):
                err(c, f"#{name} needs a ticket key", f"#{name} {ticket.key.rsplit('-', 1)[0]}-12")
            elif key == ticket.key:
                err(c, f"cannot {name} {ticket.key} with itself")
            elif not ticket_exists(key):
                err(c, f"no ticket {key}")
            elif name == "link":
                p.links.append(key)
            else:
                p.merge_into = key
    return p, errors


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
