"""`mailgate rules check` and `mailgate rules test MESSAGE.eml`: the admin's view of the rules.

check: validates every file under rules/ against each other and templates/ (and the templates'
syntax) with the daemon's own loader (mailgate/ruleset); prints each error as
`FILE:LINE: reason (hint)`. Exit 0 when valid, 65 (EX_DATAERR) when not. What is valid but
probably not meant (a routing `timezone` that is not the desk's zone) is printed as
`FILE:LINE: warning: …`, with exit 0.
test: a dry run of routing for one message: which rules hit or missed and why, the ticket fields
that would result, who would be assigned and notified. Exit 0, 65 on invalid rules, 66 when the
message cannot be read.

Both only read: no database, no mail sent, no file written (not even state/secret.key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from os import EX_DATAERR, EX_NOINPUT, EX_OK
from pathlib import Path
from typing import Any

from mailgate.config import Config, load_config
from mailgate.domain.routing import RoutingDecision, evaluate
from mailgate.domain.rulesfile import RulesInvalid
from mailgate.mail.parse import parse_message
from mailgate.mail.portal import relayed_by_portal
from mailgate.ruleset import Snapshot, load, zone_warnings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rules", help="check the rules files, or dry-run routing for a message")
    rsub = p.add_subparsers(dest="rules_command", metavar="ACTION")
    rsub.required = True

    check = rsub.add_parser("check", help="validate rules/*.toml; errors as FILE:LINE: reason")
    _dirs(check)
    check.set_defaults(func=run_check)

    test = rsub.add_parser("test", help="dry run: how would this message be routed, and why")
    test.add_argument("message", metavar="MESSAGE.eml", help="a raw RFC 5322 message; - reads stdin")
    test.add_argument("--json", action="store_true", help="print one JSON object")
    test.add_argument(
        "--desk",
        metavar="KEY|ADDRESS",
        help="the desk it arrived at, by key (CARE) or address; its own rules/<KEY>/routing.toml "
        "applies (default: the first desk)",
    )
    test.add_argument(
        "--at",
        metavar="ISO-TIME",
        help="when it arrives, e.g. 2024-05-04T21:00+01:00 (default: its Date header, else now)",
    )
    _dirs(test)
    test.set_defaults(func=run_test)


def _dirs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules-dir", metavar="DIR", type=Path, help="default: rules_dir of the config")
    p.add_argument("--templates-dir", metavar="DIR", type=Path, help="default: templates_dir of the config")


def _config(args: argparse.Namespace) -> Config:
    # A placeholder secret keeps load_config from creating state/secret.key: these commands
    # promise to write nothing, and they never sign tokens.
    env = dict(os.environ)
    env.setdefault("MAILGATE_SECRET", "unused-by-rules-commands")
    return load_config(getattr(args, "config", None), env=env)


def _load(args: argparse.Namespace, cfg: Config) -> Snapshot | None:
    """Every rules file and template through the daemon's own loader (mailgate/ruleset)."""
    rules_dir = args.rules_dir or cfg.rules_dir
    templates_dir = args.templates_dir or cfg.templates_dir
    try:
        return load(rules_dir, templates_dir, cfg.desks)
    except RulesInvalid as exc:
        for error in exc.errors:
            print(error)
        print(f"{len(exc.errors)} error(s) in {rules_dir}; the rules were not loaded", file=sys.stderr)
        return None


def run_check(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rules = _load(args, cfg)
    if rules is None:
        return EX_DATAERR
    team = rules.team
    sla = f"sla: {len(rules.sla.policies)} policies" if rules.sla is not None else "no sla.toml"
    print(
        f"ok: {len(rules.routing.rules)} rules, {len(team.groups)} groups, {len(team.agents)} agents, "
        f"triage {team.triage} (version {rules.version}); workflows: {', '.join(rules.workflows)}; {sla}"
    )
    if len(cfg.desks) > 1 or rules.desk_routing:
        for d in cfg.desks:  # each desk's routing: its own file, or the shared one
            own = d.key in rules.desk_routing
            where = f"rules/{d.key}/routing.toml" if own else "rules/routing.toml"
            print(
                f"desk {d.key} <{d.address}>: {where}, {len(rules.routing_for(d.key).rules)} rules, "
                f"triage {rules.triage_for(d.key)}"
            )
    for warning in zone_warnings(rules):  # valid, but probably not meant: still exit 0
        print(warning)
    return EX_OK


def run_test(args: argparse.Namespace) -> int:
    cfg = _config(args)
    try:
        raw = sys.stdin.buffer.read() if args.message == "-" else Path(args.message).read_bytes()
    except OSError as exc:
        print(f"mailgate: cannot read {args.message}: {exc.strerror}", file=sys.stderr)
        return EX_NOINPUT
    rules = _load(args, cfg)
    if rules is None:
        return EX_DATAERR
    mail = parse_message(raw, own_addresses=cfg.own_addresses)
    configured = cfg.desk_by_key(args.desk) if args.desk else cfg.desks[0]
    desk = configured.address if configured is not None else args.desk.lower()
    configured = configured or cfg.desk_for(desk)
    key = configured.key if configured is not None else cfg.desks[0].key
    relayed = relayed_by_portal(mail, configured.portals, cfg.own_addresses) if configured else None
    if relayed is not None and relayed.person:  # as the pipeline reads a portal's mail
        mail.from_addr, mail.from_name = relayed.person, relayed.name
    if args.at:
        try:
            now = datetime.fromisoformat(args.at)
        except ValueError:
            print(f"mailgate: --at: not an ISO date and time: {args.at}", file=sys.stderr)
            return 64
        when = "--at"
    elif mail.date is not None:
        now, when = mail.date, "the Date header"
    else:
        now, when = datetime.now(UTC), "now"
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    # A dry run has no database: round-robin starts at the first member in turn and least-open
    # has no counts; the daemon passes both from the tickets it has.
    routing = rules.routing_for(key)
    decision = evaluate(routing, mail, desk_address=desk, now=now)
    if args.json:
        out = decision.to_dict()
        out["rules_version"] = rules.version
        out["desk"] = desk
        out["desk_key"] = key
        out["time"] = now.isoformat()
        out["message"] = {"subject": mail.subject, "from": mail.from_addr}
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return EX_OK
    tz = routing.timezone
    known = f" ({key})" if configured else "  (not a configured desk)"
    source = f"rules/{key}/routing.toml" if key in rules.desk_routing else "rules/routing.toml"
    print(f"message   {mail.subject!r} from {mail.from_addr or '(no sender)'}")
    print(f"desk      {desk}{known}")
    own = f", routing.toml's own zone; the desk's is {rules.zone}" if str(tz) != rules.zone else ""
    print(f"time      {now.astimezone(tz):%a %Y-%m-%d %H:%M} {tz} (from {when}{own})")
    print(f"rules     version {rules.version}, {len(routing.rules)} rules of {source}")
    print()
    print("Rules, in order:")
    for line in decision.trace:
        print(f"  {line}")
    print()
    _print_ticket(decision)
    return EX_OK


def _print_ticket(d: RoutingDecision) -> None:
    def show(value: Any) -> str:
        if value is None or value == () or value == {}:
            return "-"
        if isinstance(value, tuple | list):
            return ", ".join(str(v) for v in value)
        if isinstance(value, dict):
            return ", ".join(f"{k}={v}" for k, v in value.items())
        return str(value)

    print("Ticket fields:")
    rows = [
        ("group", d.group or "- (triage)"),
        ("assignee", f"{d.assignee} ({d.assignment_reason})"),
        ("priority", show(d.priority)),
        ("impact", show(d.impact)),
        ("urgency", show(d.urgency)),
        ("type", show(d.type)),
        ("category", show(d.category)),
        ("status", d.status or "- (the workflow's initial status)"),
        ("tags", show(d.tags)),
        ("fields", show(dict(d.fields))),
        ("auto-reply", f"templates/{d.auto_reply}.txt" if d.auto_reply else "- (the usual acknowledgement)"),
    ]
    for name, value in rows:
        print(f"  {name:<10} {value}")
    print()
    print("Who is told:")
    print(f"  {'assignee':<10} {d.assignee}")
    print(f"  {'watchers':<10} {show(d.watchers)}")
    print(f"  {'group':<10} {show(d.group_members)}")
    triage_note = " (gets this ticket)" if d.triaged else " (not involved: a rule placed the ticket)"
    print(f"  {'triage':<10} {d.triage}{triage_note}")
    if d.assignment.strategy in ("round-robin", "least-open"):
        print()
        print(f"note: group '{d.group}' assigns {d.assignment.strategy}; a dry run has no ticket history,")
        print("      so the daemon may choose another member: " + ", ".join(d.assignment.candidates))
