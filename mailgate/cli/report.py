"""`mailgate report`: what the desk did, how fast, how well (docs/reports.md); and who gets the
weekly report mail (`--opt-out` / `--opt-in`).

Only parses options, loads the config and rules, and prints what mailgate/reports computes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from contextlib import ExitStack
from os import EX_DATAERR, EX_USAGE
from typing import TYPE_CHECKING

from mailgate.cli.common import config_of, open_db
from mailgate.cli.progress import Bar, progress

if TYPE_CHECKING:
    from mailgate.config import Config
    from mailgate.ruleset import Snapshot
    from mailgate.store.db import Database


def _snapshot(args: argparse.Namespace) -> tuple[Config, Snapshot]:
    from mailgate.ruleset import load

    config = config_of(args)
    return config, load(config.rules_dir, config.templates_dir, config.desks)


def _opt(args: argparse.Namespace) -> int:
    from sqlalchemy import delete
    from sqlmodel import col

    from mailgate.store.db import insert_for
    from mailgate.store.models import ReportOptOut, now_utc

    config = config_of(args)
    address = (args.opt_out or args.opt_in).strip().lower()
    with open_db(config) as db, db.session() as s:
        if args.opt_out:
            insert = insert_for(s.get_bind().dialect.name)
            s.execute(
                insert(ReportOptOut).values(address=address, created_at=now_utc()).on_conflict_do_nothing()
            )
            print(f"{address} gets no weekly report mail any more")
        else:
            s.execute(delete(ReportOptOut).where(col(ReportOptOut.address) == address))
            print(f"{address} gets the weekly report mail again (as a group lead or admin)")
    return 0


class _Progress:
    """How far a long report is (a year of a busy desk measures tickets for a while): a bar on
    standard error if a person watches (cli/progress.py), from the first batch measured."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.bar: Bar | None = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = self.stack.enter_context(
                progress(self.args, total=total, desc="measuring tickets", unit="ticket")
            )
        self.bar.update(done - self.done)
        self.done = done


def _groups(db: Database, team_groups: Iterable[str]) -> dict[str, str]:
    """Every group a report may name, by its lower-case name: team.toml's and those on tickets
    (a group since removed from team.toml still has its history)."""
    from sqlalchemy import select
    from sqlmodel import col

    from mailgate.store.models import Ticket

    with db.reading() as s:
        on_tickets = s.execute(select(col(Ticket.group)).where(col(Ticket.group).is_not(None)).distinct())
        names = [*team_groups, *(str(g) for g in on_tickets.scalars())]
    return {name.lower(): name for name in names}


def _report(args: argparse.Namespace) -> int:
    from mailgate.domain.rulesfile import RulesInvalid
    from mailgate.reports import (
        Periods,
        Scope,
        parse_since,
        parse_until,
        report_of,
        to_csv,
        to_json,
        to_text,
    )
    from mailgate.store.models import now_utc

    if args.opt_out or args.opt_in:
        return _opt(args)
    try:
        config, snapshot = _snapshot(args)
    except RulesInvalid as exc:
        print(f"mailgate report: the rules do not load:\n{exc}", file=sys.stderr)
        return EX_DATAERR
    if args.desk and config.desk_by_key(args.desk.upper()) is None:
        known = ", ".join(d.key for d in config.desks)
        print(f"mailgate report: no desk {args.desk!r} (desks: {known})", file=sys.stderr)
        return EX_USAGE
    tz = snapshot.zone
    now = now_utc()
    try:
        since = parse_since(args.since, now, tz)
        until = parse_until(args.until, now, tz) if args.until else now
        by = args.by if args.by in ("day", "week", "month") else None
        periods = Periods.cut(since, until, by, tz)
    except ValueError as exc:
        print(f"mailgate report: {exc}", file=sys.stderr)
        return EX_USAGE
    with open_db(config) as db, ExitStack() as stack:
        group = args.group
        if group:  # as the agent types it ("it" is IT); a group nobody knows is most often a typo
            named = _groups(db, snapshot.team.groups)
            group = named.get(group.lower())
            if group is None:
                print(
                    f"mailgate report: no group {args.group!r} in team.toml or on any ticket"
                    f" (groups: {', '.join(sorted(set(named.values()))) or 'none'})",
                    file=sys.stderr,
                )
                return EX_USAGE
        scope = Scope(desk=args.desk, group=group, agent=args.agent)
        report = report_of(
            db,
            periods,
            workflows={d.key: snapshot.workflow(d) for d in config.desks},
            sla=snapshot.sla,
            now=now,
            by=args.by,
            scope=scope,
            progress=_Progress(args, stack),
        )
    render = {"text": to_text, "csv": to_csv, "json": to_json}[args.format]
    sys.stdout.write(render(report))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from mailgate.reports.figures import BY

    p = sub.add_parser(
        "report",
        help="figures of a period: volume, backlog, response times, SLA, satisfaction, workload",
        description="Figures of a period (docs/reports.md). Dates are the desk's local days.",
    )
    p.add_argument(
        "--since", default="30d", help="a date (2026-11-01), a time, or an age: 30d, 12w, 6h (default 30d)"
    )
    p.add_argument("--until", help="a date (included), a time, or an age (default: now)")
    p.add_argument("--desk", help="one desk, by key (SUP)")
    p.add_argument("--group", help="tickets of one group (now)")
    p.add_argument("--agent", help="tickets assigned to one agent (now)")
    p.add_argument(
        "--by", choices=BY, help="one row per period or per value (default: one row for the range)"
    )
    p.add_argument("--format", choices=("text", "csv", "json"), default="text")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--opt-out", metavar="ADDRESS", help="send ADDRESS no weekly report mail")
    who.add_argument("--opt-in", metavar="ADDRESS", help="send ADDRESS the weekly report mail again")
    p.set_defaults(func=_report)
