"""`mailgate tickets export`: every ticket with every field, as CSV or JSON, streamed to stdout or
a file in bounded memory (mailgate/reports/export.py). Registered by cli/tickets.py.
"""

from __future__ import annotations

import argparse
import sys
from os import EX_DATAERR, EX_USAGE

from mailgate.cli.common import config_of, open_db


def _export(args: argparse.Namespace) -> int:
    from mailgate.domain.rulesfile import RulesInvalid
    from mailgate.reports import (
        ExportFilter,
        Scope,
        export_rows,
        parse_since,
        parse_until,
        write_csv,
        write_json,
    )
    from mailgate.ruleset import load
    from mailgate.store.models import now_utc

    config = config_of(args)
    if args.with_messages and args.format != "json":
        print("mailgate tickets export: --with-messages needs --format json", file=sys.stderr)
        return EX_USAGE
    try:
        snapshot = load(config.rules_dir, config.templates_dir, config.desks)
    except RulesInvalid as exc:
        print(f"mailgate tickets export: the rules do not load:\n{exc}", file=sys.stderr)
        return EX_DATAERR
    tz = snapshot.zone
    now = now_utc()
    try:
        since = parse_since(args.since, now, tz) if args.since else None
        until = parse_until(args.until, now, tz) if args.until else None
    except ValueError as exc:
        print(f"mailgate tickets export: {exc}", file=sys.stderr)
        return EX_USAGE
    where = ExportFilter(Scope(args.desk, args.group, args.agent), since, until)
    write = write_csv if args.format == "csv" else write_json
    out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        with open_db(config) as db, db.reading() as s:
            rows = export_rows(
                s,
                workflows={d.key: snapshot.workflow(d) for d in config.desks},
                sla=snapshot.sla,
                now=now,
                where=where,
                with_messages=args.with_messages,
            )
            n = write(rows, out)
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"{n} tickets written to {args.output}", file=sys.stderr)
    return 0


def register_export(tsub: argparse._SubParsersAction) -> None:
    ex = tsub.add_parser("export", help="every ticket with every field, as CSV or JSON (streamed)")
    ex.add_argument("--format", choices=("csv", "json"), default="csv")
    ex.add_argument("--with-messages", action="store_true", help="JSON: add each ticket's conversation")
    ex.add_argument("--since", help="created at or after: a date, a time, or an age (30d)")
    ex.add_argument("--until", help="created before the end of: a date, a time, or an age")
    ex.add_argument("--desk")
    ex.add_argument("--group")
    ex.add_argument("--agent")
    ex.add_argument("--output", "-o", help="write to this file instead of stdout")
    ex.set_defaults(func=_export)
