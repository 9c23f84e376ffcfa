"""The team: agents, groups and the triage person, read from `rules/team.toml`.

Also the pure assignment policy: given a group (or an explicit assignee) and who is away, who
gets a new ticket. State that outlives one message — who was assigned last in a group for
round-robin, how many open tickets each agent has for least-open — is passed in by the caller
(the pipeline reads it from the database), so this module stays pure and testable.

It must not read the database, the clock or the network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from mailgate.domain.rulesfile import Checker, PathKey, RulesError, RulesInvalid, TomlFile, suggest

ADDRESS_RE = re.compile(r"^[^@\s<>\"]+@[^@\s<>\"]+$")
STRATEGIES = ("lead", "round-robin", "least-open")
# Other words for a strategy, as other desks name them (`assign = "least-loaded"`).
STRATEGY_ALIASES = {"least-loaded": "least-open"}
TEAM_KEYS = ("triage", "admins", "agents", "groups", "notify_new")
# Who hears of a new ticket of a group: its assignee (the lead, or whom the strategy picked), or
# every member ("members": seed 000, the request "gets into the inbox of all members of the team").
NOTIFY_NEW = ("lead", "members")
AGENT_KEYS = ("address", "name", "handle", "away", "role")


class TeamRole(StrEnum):
    """An agent's role in team.toml (`role = "lead"`): the value is the word the file uses.

    What an agent may do (docs/security.md "Roles"): light agents write internal notes only; an
    agent (the default) changes the tickets of their groups and those assigned to them; a lead
    also those assigned to the members of the groups they lead; an admin, every ticket. An agent
    whose address team.toml's `admins` lists is an admin too, whatever its role (`Team.is_admin`)."""

    AGENT = "agent"
    LEAD = "lead"
    ADMIN = "admin"
    LIGHT = "light"


ROLES = tuple(TeamRole)
GROUP_KEYS = ("name", "members", "lead", "assignment", "assign", "description", "notify_new")


@dataclass(frozen=True)
class Agent:
    """A person who works tickets. `handle` is the short name used in `#assign tech1`."""

    address: str
    name: str
    handle: str
    away: bool = False
    role: TeamRole = TeamRole.AGENT


@dataclass(frozen=True)
class Group:
    """A team that takes a kind of ticket. Members are in file order, which round-robin follows."""

    name: str
    members: tuple[str, ...]
    lead: str
    assignment: str = "lead"
    description: str = ""
    notify_new: str = ""  # "lead" | "members"; "" = the team's `notify_new`


@dataclass(frozen=True)
class Team:
    agents: Mapping[str, Agent]  # by address
    groups: Mapping[str, Group]  # by name, as written
    triage: str
    admins: tuple[str, ...] = ()
    _handles: Mapping[str, str] = field(default_factory=dict, repr=False)
    notify_new: str = "lead"  # the default of every group (NOTIFY_NEW)

    def told_of_new(self, group: str | None) -> tuple[str, ...]:
        """Who of `group` hears of each new ticket besides its assignee: every member when the
        group (or the team, by default) says `notify_new = "members"`, else nobody."""
        g = self.groups.get(group) if group else None
        if g is None or (g.notify_new or self.notify_new) != "members":
            return ()
        return g.members

    def agent(self, ref: str) -> Agent | None:
        """An agent by address or handle (case-insensitive)."""
        ref = ref.strip().lower()
        address = ref if ref in self.agents else self._handles.get(ref)
        return self.agents.get(address) if address else None

    def is_away(self, address: str) -> bool:
        agent = self.agents.get(address)
        return bool(agent and agent.away)

    def is_admin(self, address: str) -> bool:
        """Whether `address` is a desk admin — the one rule (docs/security.md "Admins"): listed
        in team.toml's `admins`, or an agent with `role = "admin"`; either way the same admin.
        An admin hears what needs an admin; one who is also an agent (to sign in, to prove a
        mail) changes and sees every ticket, by mail and on the web, and every group's figures."""
        address = _norm(address)
        agent = self.agents.get(address)
        return address in self.admins or (agent is not None and agent.role == TeamRole.ADMIN)

    @property
    def every_admin(self) -> tuple[str, ...]:
        """Every desk admin: `admins` in file order, then the agents with `role = "admin"`."""
        roles = (a.address for a in self.agents.values() if a.role == TeamRole.ADMIN)
        return tuple(dict.fromkeys((*self.admins, *roles)))


def _norm(address: str) -> str:
    return address.strip().lower()


def parse_team(file: TomlFile) -> Team:
    """Validate and build the team; raises RulesInvalid carrying every error of the file."""
    team, errors = check_team(file)
    if errors:
        raise RulesInvalid(errors)
    return team


def check_team(file: TomlFile) -> tuple[Team, list[RulesError]]:
    """The team as far as it is valid, and the errors. The partial team lets the other files be
    checked against the agents and groups that are fine, so one pass reports everything."""
    check = Checker(file)
    data = file.data
    check.unknown_keys((), data, TEAM_KEYS, "team.toml key")

    agents: dict[str, Agent] = {}
    handles: dict[str, str] = {}
    raw_agents = data.get("agents", [])
    if not isinstance(raw_agents, list) or not raw_agents:
        check.add(("agents",), "at least one [[agents]] table is needed", "e.g. address = 'tech1@localhost'")
        raw_agents = []
    for i, raw in enumerate(raw_agents):
        path: PathKey = ("agents", i)
        if check.table(path, raw, "an [[agents]] entry") is None:
            continue
        check.unknown_keys(path, raw, AGENT_KEYS, "agent key")
        address = check.string((*path, "address"), raw.get("address"), "address")
        if address is None:
            continue
        address = _norm(address)
        if not ADDRESS_RE.match(address):
            check.add((*path, "address"), f"'{address}' is not a mail address", "e.g. tech1@localhost")
            continue
        if address in agents:
            check.add((*path, "address"), f"agent {address} is listed twice")
            continue
        name = raw.get("name", address.split("@")[0])
        name = check.string((*path, "name"), name, "name") or address
        handle = raw.get("handle", address.split("@")[0])
        handle = (check.string((*path, "handle"), handle, "handle") or address).lower()
        if handle in handles:
            check.add((*path, "handle"), f"handle '{handle}' is already used by {handles[handle]}")
        handles.setdefault(handle, address)
        away = check.boolean((*path, "away"), raw.get("away", False), "away")
        word = raw.get("role", "agent")
        role = TeamRole(word) if word in ROLES else TeamRole.AGENT
        if word not in ROLES:
            check.add((*path, "role"), f"unknown role '{word}'", suggest(str(word), ROLES))
        agents[address] = Agent(address=address, name=name, handle=handle, away=bool(away), role=role)

    def agent_ref(path: tuple[str | int, ...], ref: str, what: str) -> str | None:
        low = _norm(ref)
        if low in agents:
            return low
        if low in handles:
            return handles[low]
        check.add(path, f"{what} '{ref}' is not an agent", suggest(low, agents), needle=ref)
        return None

    groups: dict[str, Group] = {}
    for path, raw in check.entries(data, "groups"):
        check.unknown_keys(path, raw, GROUP_KEYS, "group key")
        name = check.string((*path, "name"), raw.get("name"), "group name")
        if name is None:
            continue
        if name in groups:
            check.add((*path, "name"), f"group '{name}' is defined twice")
            continue
        members: list[str] = []
        for ref in check.strings((*path, "members"), raw.get("members"), "members", single_ok=False) or []:
            address = agent_ref((*path, "members"), ref, "member")
            if address and address not in members:
                members.append(address)
        lead_raw = raw.get("lead", members[0] if members else None)
        lead = None
        if lead_raw is not None and check.string((*path, "lead"), lead_raw, "lead"):
            lead = agent_ref((*path, "lead"), lead_raw, "lead")
            if lead and members and lead not in members:
                check.add(
                    (*path, "lead"),
                    f"lead {lead} is not a member of group '{name}'",
                    "valid: " + ", ".join(members),
                )
                lead = None
        key = "assign" if "assign" in raw else "assignment"  # `assign` is the short spelling
        assignment = raw.get(key, "lead")
        assignment = (
            STRATEGY_ALIASES.get(assignment, assignment) if isinstance(assignment, str) else assignment
        )
        if assignment not in STRATEGIES:
            check.add(
                (*path, key),
                f"unknown assignment '{assignment}'",
                suggest(str(assignment), STRATEGIES),
            )
            assignment = "lead"
        description = raw.get("description", "")
        if not isinstance(description, str):
            check.add((*path, "description"), "description must be a string")
            description = ""
        notify_new = _notify_new(check, (*path, "notify_new"), raw.get("notify_new", ""))
        if members and lead:
            groups[name] = Group(name, tuple(members), lead, assignment, description)
        elif members:  # lead was invalid and reported; keep the group so rules naming it still check
            groups[name] = Group(name, tuple(members), members[0], assignment, description)
        else:  # members missing or all invalid: reported above; keep the name known for rules
            groups[name] = Group(name, (), "", assignment, description)
        if notify_new:
            groups[name] = replace(groups[name], notify_new=notify_new)

    triage = ""
    raw_triage = data.get("triage")
    if raw_triage is None:
        check.add(
            (), "triage is missing: who gets tickets that no rule matched?", "e.g. triage = 'angel@localhost'"
        )
    elif check.string(("triage",), raw_triage, "triage"):
        triage = agent_ref(("triage",), raw_triage, "triage") or ""

    admins: list[str] = []
    if "admins" in data:
        for ref in check.strings(("admins",), data["admins"], "admins") or []:
            if not ADDRESS_RE.match(_norm(ref)):
                check.add(("admins",), f"'{ref}' is not a mail address", needle=ref)
            else:
                admins.append(_norm(ref))

    team = Team(
        agents=agents,
        groups=groups,
        triage=triage,
        admins=tuple(admins),
        _handles=handles,
        notify_new=_notify_new(check, ("notify_new",), data.get("notify_new", "")) or "lead",
    )
    return team, check.errors


def _notify_new(check: Checker, path: PathKey, value: object) -> str:
    """A `notify_new` value, or "" when absent or wrong (reported)."""
    if value in ("", *NOTIFY_NEW):
        return str(value)
    check.add(path, f"unknown notify_new '{value}'", suggest(str(value), NOTIFY_NEW))
    return ""


# --- access -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """Whether an agent may change a ticket (commands, public replies), and the rule that decided:
    the rule is what a refused agent is told."""

    allowed: bool
    rule: str


def may_change(team: Team, address: str, ticket_key: str, group: str | None, assignee: str | None) -> Access:
    """May `address` change this ticket? Internal notes need no permission; everything else does.

    A desk with at most one group needs no membership lists: every agent works every ticket, as a
    one-group desk always did. A ticket no group owns (triage) may be taken by any agent.
    """
    agent = team.agents.get(address)
    if agent is None:
        return Access(False, f"{address} is not an agent in team.toml")
    if team.is_admin(address):
        return Access(True, "an admin may change every ticket")
    if agent.role == TeamRole.LIGHT:
        return Access(
            False,
            f'{address} is a light agent (team.toml role = "light"): light agents write internal '
            "notes only; start the reply with #internal",
        )
    if assignee == address:
        return Access(True, f"{ticket_key} is assigned to {address}")
    if len(team.groups) <= 1:
        return Access(True, "a desk with one group: every agent may change every ticket")
    if not group:
        return Access(True, f"no group owns {ticket_key}: any agent may take it")
    mine = [g.name for g in team.groups.values() if address in g.members or g.lead == address]
    if group in mine:
        return Access(True, f"{ticket_key} belongs to {address}'s group '{group}'")
    if agent.role == TeamRole.LEAD and assignee:
        led = [g for g in team.groups.values() if g.lead == address and assignee in g.members]
        if led:
            return Access(
                True, f"{ticket_key} is assigned to {assignee}, a member of {address}'s group '{led[0].name}'"
            )
    reach = (
        "tickets of their groups, tickets assigned to them and to the members of groups they lead"
        if agent.role == TeamRole.LEAD
        else "tickets of their groups and tickets assigned to them"
    )
    return Access(
        False,
        f"{ticket_key} belongs to group '{group}'"
        + (f" and is assigned to {assignee}" if assignee else "")
        + f"; {address} (role {agent.role}, groups: {', '.join(mine) or 'none'}) may change {reach}",
    )


def may_see(team: Team, address: str, ticket_key: str, group: str | None, assignee: str | None) -> bool:
    """May `address` be shown this ticket (its key and subject in a similar-tickets list, a
    search result)? What they may change, except that a light agent, who changes nothing, sees
    what an agent of the same groups would."""
    agent = team.agents.get(address)
    if agent is not None and agent.role == TeamRole.LIGHT and not team.is_admin(address):
        team = replace(team, agents={**team.agents, address: replace(agent, role=TeamRole.AGENT)})
    return may_change(team, address, ticket_key, group, assignee).allowed


# --- assignment ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignmentPlan:
    """Who may take a ticket, before any state is consulted.

    `strategy` is "explicit" (a rule named the assignee), "lead", "round-robin", "least-open", or
    "triage" (nothing matched or no group). `candidates` are the group's available members in the
    order the strategy prefers; agents marked away are already left out and listed in `away`.
    """

    group: str | None
    strategy: str
    candidates: tuple[str, ...]
    members: tuple[str, ...]
    triage: str
    explicit: str | None = None
    away: tuple[str, ...] = ()
    lead: str | None = None


def plan_assignment(team: Team, group: str | None, explicit: str | None) -> AssignmentPlan:
    """What the rules ask for; `pick_assignee` then chooses with the caller's state."""
    away: list[str] = []
    if explicit:
        if not team.is_away(explicit):
            return AssignmentPlan(group, "explicit", (explicit,), (explicit,), team.triage, explicit)
        away.append(explicit)
    g = team.groups.get(group) if group else None
    if g is None or not g.members:
        return AssignmentPlan(group, "triage", (), (), team.triage, explicit, tuple(away))
    members = g.members
    # "lead": the lead first, then the others in file order, so when the lead is away the next one takes it.
    ordered = (g.lead, *[m for m in members if m != g.lead]) if g.assignment == "lead" else members
    available = tuple(m for m in ordered if not team.is_away(m))
    away.extend(m for m in ordered if team.is_away(m))
    return AssignmentPlan(group, g.assignment, available, members, team.triage, explicit, tuple(away), g.lead)


def pick_assignee(
    plan: AssignmentPlan,
    *,
    last_assigned: str | None = None,
    open_counts: Callable[[str], int] | None = None,
) -> tuple[str, str]:
    """Choose the assignee: (address, why). Pure: the same inputs always give the same answer.

    round-robin: the next available member after `last_assigned` in member order (the caller
    keeps `last_assigned` per group, e.g. the assignee of the group's newest ticket).
    least-open: the available member with the fewest open tickets per `open_counts`; ties go to
    member order. Without counts it behaves like "lead" and says so.
    """
    away_note = f"; away: {', '.join(plan.away)}" if plan.away else ""
    if plan.strategy == "explicit":
        return plan.candidates[0], "assignee set by rule"
    if plan.strategy == "triage" or not plan.candidates:
        if plan.group and plan.strategy != "triage":
            why = f"every member of group '{plan.group}' is away; triage person"
        elif plan.group:
            why = f"group '{plan.group}' has no members; triage person"
        elif plan.explicit:
            why = f"assignee {plan.explicit} is away and no group is set; triage person"
        else:
            why = "no rule chose a group; triage person"
        return plan.triage, why + (away_note if plan.group else "")
    if plan.strategy == "round-robin":
        if last_assigned in plan.members:
            start = plan.members.index(last_assigned) + 1
            rotation = plan.members[start:] + plan.members[:start]
            for member in rotation:
                if member in plan.candidates:
                    return member, f"round-robin in '{plan.group}' after {last_assigned}{away_note}"
        return plan.candidates[0], f"round-robin in '{plan.group}', first in turn{away_note}"
    if plan.strategy == "least-open":
        if open_counts is None:
            return plan.candidates[0], f"least-open in '{plan.group}' without counts: first member{away_note}"
        counts = {m: open_counts(m) for m in plan.candidates}
        best = min(plan.candidates, key=lambda m: counts[m])  # min keeps the first of equals
        return best, f"least-open in '{plan.group}': {best} has {counts[best]} open{away_note}"
    who = plan.candidates[0]
    role = "lead" if who == plan.lead else f"next member (lead {plan.lead} away)"
    return who, f"{role} of group '{plan.group}'{away_note}"


def choose_assignee(
    team: Team,
    group: str | None,
    explicit: str | None = None,
    *,
    last_assigned: Callable[[str], str | None] | None = None,
    open_counts: Callable[[str], int] | None = None,
) -> tuple[AssignmentPlan, str, str]:
    """Who gets a ticket put in `group` (or given to `explicit`): (plan, address, why).

    The one way a ticket gets its group's assignee, whether a routing rule or an agent's
    `#assign group X` put it there: the group's `assign` strategy in team.toml decides.
    `last_assigned(group)` and `open_counts(address)` are the caller's state (the database)."""
    plan = plan_assignment(team, group, explicit)
    last = last_assigned(group) if (last_assigned and group and plan.strategy == "round-robin") else None
    assignee, why = pick_assignee(plan, last_assigned=last, open_counts=open_counts)
    return plan, assignee, why


def desk_admins(team: Team, admin_address: str = "") -> list[str]:
    """Who hears what needs an admin (quarantine, refused rules, floods, loops, the SLA ladder's
    last step): every desk admin (`Team.every_admin`) and config's `admin_address` (the
    postmaster's mailbox, which is no admin), each once, in that order."""
    return list(dict.fromkeys(a.lower() for a in (*team.every_admin, admin_address) if a))
