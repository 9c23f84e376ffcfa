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

ENV_EXAMPLE = """\
# Secrets for mailgate. Copy to .env (keep it private: chmod 600) or set them in the service's
# environment (systemd: EnvironmentFile=). Never put them in config.toml.
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
    files: dict[Path, bytes] = {
        target / "config.toml": CONFIG_TEMPLATE.format(
            name=args.name.replace('"', "'"),
            address=address,
            key=key,
            admin=args.admin or f"postmaster@{address.split('@')[1]}",
        ).encode(),
        target / ".env.example": ENV_EXAMPLE.encode(),
    }
    for name, src in sources.items():
        for p in sorted(src.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                files[target / name / p.relative_to(src)] = p.read_bytes()
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

    from mailgate.cli.common import config_of, open_db
    from mailgate.status import gather, render_text

    config = config_of(args)
    with open_db(config) as db:
        st = gather(config, db, max_unsent_age=timedelta(minutes=args.max_unsent_minutes))
    if args.json:
        print(json.dumps(st.to_dict(), indent=2, sort_keys=True))
    else:
        print(render_text(st))
    return 0 if st.ok else 1


def _config_check(args: argparse.Namespace) -> int:
    import os

    from mailgate.checks import check_all

    path = (
        args.config
        or os.environ.get("MAILGATE_CONFIG")
        or ("config.toml" if Path("config.toml").exists() else None)
    )
    if path is None:
        print(
            "mailgate config check: no config file (--config FILE, $MAILGATE_CONFIG or ./config.toml)",
            file=sys.stderr,
        )
        return EX_CONFIG
    report = check_all(Path(path))
    for w in report.warnings:
        print(f"warning: {w}")
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
