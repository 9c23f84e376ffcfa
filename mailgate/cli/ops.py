"""The operator's commands: `mailgate init [DIR]`, `mailgate status [--json]`, `mailgate config check`.

- init writes a new desk directory (config.toml, rules/, templates/, .env.example) that works as
  it is, asks nothing, and never overwrites a file unless told to (--force).
- status prints what monitoring needs and exits 1 when something needs a human (mailgate/status.py).
- config check validates config, rules and templates together (mailgate/checks.py); exit 0, 65
  (EX_DATAERR: rules or templates) or 78 (EX_CONFIG: config.toml).

Nothing here runs the pipeline, sends mail, or prints a secret.
"""

from __future__ import annotations

import argparse
import json
import sys
from os import EX_CONFIG
from pathlib import Path

import mailgate
from mailgate.config import ADDRESS_RE, KEY_RE
from mailgate.mail.decode import plus_parts

# The shipped rules/ and templates/: package data under mailgate/defaults (in a checkout, links to
# the top-level rules/ and templates/ admins edit), so an installed wheel has them too.
SHIPPED = Path(mailgate.__file__).resolve().parent / "defaults"

CONFIG_TEMPLATE = """\
# mailgate configuration for the {name} desk, written by `mailgate init`.
# Every option, with its default and why: config.example.toml in the mailgate sources.
# Secrets never go here: they come from the environment or from .env next to this file.

state_dir = "state"          # SQLite database, attachments, outgoing mail (file transport)
rules_dir = "rules"          # team.toml, routing.toml, workflow.toml, sla.toml: edit these
templates_dir = "templates"  # the mail mailgate sends; `mailgate config check` after editing
admin_address = "{admin}"    # hears about quarantined mail and refused rules edits

[[desks]]
address = "{address}"
key = "{key}"
name = "{name}"
workflow = "default"

[smtp]
# The listener your MTA delivers to (or use `mailgate ingest` from a pipe transport:
# docs/postfix.md). lmtp = true for Postfix/Dovecot LMTP delivery (docs/lmtp.md).
enabled = true
host = "127.0.0.1"
port = 2525
lmtp = false

[outgoing]
# "file" writes each outgoing mail to state/outgoing/ (try it out); "smtp" sends through your
# relay, e.g. the local Postfix on port 25. The password comes from MAILGATE_RELAY_PASSWORD.
transport = "file"
host = "127.0.0.1"
port = 25
"""

INIT_TEAM = """\
# A new desk's team, written by `mailgate init`: replace the two example people with yours.
# rules/team.toml and rules/routing.toml of the mailgate sources show a larger desk (seed 003's
# care desk: several groups, round-robin and least-open assignment). Format: docs/routing.md.
# Check an edit with `mailgate rules check`; the daemon reloads this file when it changes and
# keeps the last good version if an edit is wrong.

# Who gets every ticket that no routing rule sent to a group or an agent.
triage = "{lead}"

# The desk's admins: told of refused rules edits, quarantined and held mail; those who are also
# agents below change and see every ticket (role = "admin" is the same): docs/security.md.
admins = ["{admin}"]

# --- agents ---------------------------------------------------------------------------------
# address is how mail reaches them and how they are recognised; handle is for "#assign lead".
# away = true: no new tickets are assigned to them. role = "agent" (default), "lead", "admin"
# or "light" (internal notes only): docs/security.md "Roles".

[[agents]]
address = "{lead}"
name = "Team lead"   # replace: the person who triages
handle = "lead"
role = "lead"

[[agents]]
address = "{agent}"
name = "Agent"       # replace, and add one [[agents]] table per person
handle = "agent"

# --- groups ---------------------------------------------------------------------------------
# A routing rule sends a ticket to a group; the group assigns it: "lead" (default), "round-robin"
# (members in turn) or "least-open" (the member with the fewest open tickets).

[[groups]]
name = "{name}"
members = ["{lead}", "{agent}"]
lead = "{lead}"
assignment = "round-robin"
"""

INIT_ROUTING = """\
# Routing rules for a new desk, written by `mailgate init`: which group, agent, priority and
# type a NEW ticket gets. Rules are tried in order; the first that hits decides, unless it says
# `continue = true` (its actions apply and the next rules are tried too: marking rules).
# No rule with a group or assignee hits: the triage person of team.toml gets the ticket.
# Try a message with `mailgate rules test message.eml`; check edits with `mailgate rules check`.
# Format, and every condition and action: docs/routing.md.

# Time of day and weekday conditions are read in the desk's zone: that of the [timers]
# calendar in sla.toml, as business hours, the digest and `mailgate report` are. Set
# timezone = "Area/City" here only to read these conditions in another zone.

# The priorities tickets may have, most urgent first.
priorities = ["critical", "high", "medium", "low"]

[defaults]
priority = "medium"

# A rule may set impact and urgency instead of a priority; the matrix gives the priority.
[priority_matrix]
impact = ["high", "medium", "low"]
urgency = ["high", "medium", "low"]
priority = [
  # urgency: high     medium    low
  ["critical", "high", "medium"], # impact high
  ["high", "medium", "low"],      # impact medium
  ["medium", "low", "low"],       # impact low
]
default_impact = "medium"
default_urgency = "medium"

[[rules]]
name = "urgent"
description = "The sender flags the mail as urgent (Outlook Importance / X-Priority, or says so)"
continue = true
when.any = [
  {{ header = {{ name = "Importance", equals = "high" }} }},
  {{ header = {{ name = "X-Priority", starts = ["1", "2"] }} }},
  {{ subject = {{ words = ["urgent", "asap", "emergency"] }} }},
]
then = {{ urgency = "high", tags = ["urgent"] }}

[[rules]]
name = "after-hours"
description = "Arrived at a weekend or outside office hours"
continue = true
when.any = [{{ weekday = ["sat", "sun"] }}, {{ time = "18:00-08:00" }}]
then = {{ tags = ["after-hours"] }}

# Send tickets to the group (uncomment and adapt; first match wins):
# [[rules]]
# name = "billing"
# when.text.words = ["invoice", "billing", "refund"]
# then = {{ group = "{name}", type = "Billing" }}
"""

ENV_EXAMPLE = """\
# Secrets for mailgate. Copy to .env beside config.toml, readable only by root and the user
# mailgate runs as (install -m 0640 -g mailgate). Every mailgate command run with that config
# reads it — the daemon, an MTA pipe's `mailgate ingest`, an admin's commands — so all sign
# with one key; set only in a service's environment, the others would not. Never in config.toml.
# Key that signs reply tokens. Empty: one is made in state/secret.key. Set it when several
# processes share one database.
MAILGATE_SECRET=
# Password for the outgoing relay (outgoing.password_env names this variable).
MAILGATE_RELAY_PASSWORD=
# Overrides database.url, e.g. postgresql://mailgate@db.example:5432/mailgate
MAILGATE_DATABASE_URL=
"""


def _init(args: argparse.Namespace) -> int:
    target = Path(args.dir)
    address = args.desk_address.lower()
    if not ADDRESS_RE.match(address):
        print(f"mailgate init: --desk-address: not an address: {address!r}", file=sys.stderr)
        return EX_CONFIG
    key = args.key or plus_parts(address)[0].rpartition("@")[0].upper()[:16]
    key = "".join(c for c in key if c.isalnum()) or "SUP"
    if not KEY_RE.match(key):
        print(
            f"mailgate init: --key must be 1-16 capitals/digits starting with a letter, got {key!r}",
            file=sys.stderr,
        )
        return EX_CONFIG
    sources = {name: SHIPPED / name for name in ("rules", "templates")}
    missing = [str(p) for p in sources.values() if not p.is_dir()]
    if missing:
        print(
            f"mailgate init: the shipped {', '.join(missing)} are not installed with this mailgate",
            file=sys.stderr,
        )
        return EX_CONFIG
    admin = (args.admin or f"postmaster@{address.split('@')[1]}").lower()
    files: dict[Path, bytes] = {
        target / "config.toml": CONFIG_TEMPLATE.format(
            name=args.name.replace('"', "'"),
            address=address,
            key=key,
            admin=admin,
        ).encode(),
        target / ".env.example": ENV_EXAMPLE.encode(),
    }
    for name, src in sources.items():
        for p in sorted(src.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                files[target / name / p.relative_to(src)] = p.read_bytes()
    # The shipped team and routing are the example care desk's: a new desk gets a team of its
    # own domain to fill in, and routing rules that refer to nobody but it.
    domain = address.split("@")[1]
    group = args.name.replace('"', "'")
    people = {"lead": f"team-lead@{domain}", "agent": f"agent@{domain}"}
    files[target / "rules" / "team.toml"] = INIT_TEAM.format(admin=admin, name=group, **people).encode()
    files[target / "rules" / "routing.toml"] = INIT_ROUTING.format(name=group).encode()
    existing = [p for p in files if p.exists()]
    if existing and not args.force:
        print(
            f"mailgate init: {len(existing)} file(s) exist already, e.g. {existing[0]}; nothing written"
            " (--force overwrites them)",
            file=sys.stderr,
        )
        return 73  # EX_CANTCREAT
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (target / "state").mkdir(exist_ok=True)
    print(f"wrote {len(files)} files to {target}/ for desk {key} <{address}>")
    print(f"next: mailgate --config {target / 'config.toml'} config check")
    return 0


def _status(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from mailgate.cli.common import config_of, missing_database, open_db
    from mailgate.status import gather, nothing_yet, render_text

    config = config_of(args)
    missing = missing_database(config)
    if missing:  # a desk that never ran: a status (exit 1, no daemon runs), not an error (66)
        st = nothing_yet(config, f"{missing} ({config.described})")
    else:
        with open_db(config) as db:
            st = gather(config, db, max_unsent_age=timedelta(minutes=args.max_unsent_minutes))
    if args.json:
        print(json.dumps(st.to_dict(), indent=2, sort_keys=True))
    else:
        print(render_text(st))
    return 0 if st.ok else 1


def _config_check(args: argparse.Namespace) -> int:
    from mailgate.checks import check_all
    from mailgate.config import config_path

    path = config_path(args.config)
    if path is None:  # a fresh checkout: the embedded default, which `mailgate run` would use
        print(
            "no config file (--config FILE, $MAILGATE_CONFIG or ./config.toml): checking the embedded default"
        )
    report = check_all(path)
    for w in report.warnings:  # FILE:LINE: warning: …, as `rules check` and compilers write it
        print(f"{w.file}:{w.line}: warning: {w.reason}")
    for p in report.problems:
        print(p)
    if report.problems:
        print(f"{len(report.problems)} problem(s)", file=sys.stderr)
    else:
        print(f"ok: {', '.join(report.checked)}")
    return report.exit_code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write config.toml, rules/, templates/ and .env.example for a new desk")
    p.add_argument("dir", nargs="?", default=".", help="directory to write into (default: here)")
    p.add_argument(
        "--desk-address", default="support@localhost", help="the support address (default: %(default)s)"
    )
    p.add_argument("--key", help="ticket key prefix, e.g. SUP for SUP-1 (default: from the address)")
    p.add_argument("--name", default="Support", help="the desk's display name (default: %(default)s)")
    p.add_argument("--admin", help="admin_address (default: postmaster@ the desk's domain)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=_init)

    s = sub.add_parser("status", help="queues, listeners, rules version; exit 1 when something needs a human")
    s.add_argument("--json", action="store_true", help="one JSON object, for monitoring")
    s.add_argument(
        "--max-unsent-minutes",
        type=float,
        default=15.0,
        help="oldest unsent mail allowed (default: %(default)s)",
    )
    s.set_defaults(func=_status)

    c = sub.add_parser("config", help="configuration")
    csub = c.add_subparsers(dest="config_command", required=True)
    chk = csub.add_parser("check", help="validate config.toml, rules and templates together")
    chk.set_defaults(func=_config_check)
