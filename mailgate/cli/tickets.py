"""`mailgate tickets list|search|show|attachment`: the tickets, their whole history and their files,
for people at a terminal."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select
from sqlmodel import col

from mailgate.cli.common import config_of, cut, open_db
from mailgate.domain.commands import format_minutes
from mailgate.domain.history import sentence
from mailgate.mail.attachments import safe_filename
from mailgate.mail.decode import visible, visible_lines
from mailgate.store.blobs import BlobStore
from mailgate.store.kinds import EventKind
from mailgate.store.models import Event, OutboxItem, Participant, Ticket, now_utc, utc
from mailgate.store.repo import Repo


def _fmt(dt: datetime | None) -> str:
    value = utc(dt)
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


# The columns of `tickets list`, with the width each keeps whatever its values: a long address is
# cut with an ellipsis rather than pushing the columns after it (issue 25). The subject, last,
# takes the rest of a terminal's width; in a pipe it is whole.
COLUMNS = (("KEY", 10), ("STATUS", 14), ("PRIORITY", 8), ("GROUP", 12), ("ASSIGNEE", 22), ("REQUESTER", 26))
CSV_FIELDS = (
    "key",
    "status",
    "priority",
    "group",
    "assignee",
    "requester",
    "created_at",
    "updated_at",
    "subject",
)
SORTS = {
    "created": (col(Ticket.created_at), col(Ticket.id)),
    "updated": (col(Ticket.updated_at), col(Ticket.id)),
    "key": (col(Ticket.desk), col(Ticket.number)),
    "status": (col(Ticket.status), col(Ticket.id)),
    "priority": (col(Ticket.priority), col(Ticket.id)),
    "assignee": (col(Ticket.assignee), col(Ticket.id)),
    "due": (col(Ticket.resolution_due), col(Ticket.id)),
}
# Newest first for times, alphabetical for the rest; --reverse turns either round.
_NEWEST_FIRST = {"created", "updated"}


def _select(args: argparse.Namespace) -> Any:
    stmt = select(Ticket)
    if args.desk:
        stmt = stmt.where(col(Ticket.desk) == args.desk.upper())
    if args.status:  # a status of the workflow, or a category: open, waiting, closed
        wanted = [v.strip() for v in args.status.split(",") if v.strip()]
        stmt = stmt.where(or_(col(Ticket.status).in_(wanted), col(Ticket.status_category).in_(wanted)))
    if args.group:  # as the agent types it: "it" is the group IT
        stmt = stmt.where(func.lower(col(Ticket.group)) == args.group.lower())
    if args.assignee:
        if args.assignee in ("-", "none"):
            stmt = stmt.where(col(Ticket.assignee).is_(None))
        else:
            stmt = stmt.where(col(Ticket.assignee) == args.assignee.lower())
    if args.mine:  # assigned to that agent, or one they are on as agent or watcher; not closed
        me = args.mine.lower()
        on = select(col(Participant.ticket_id)).where(
            col(Participant.address) == me, col(Participant.role).in_(["agent", "watcher"])
        )
        stmt = stmt.where(
            or_(col(Ticket.assignee) == me, col(Ticket.id).in_(on)), col(Ticket.status_category) != "closed"
        )
    order = SORTS[args.sort]
    descending = (args.sort in _NEWEST_FIRST) != args.reverse
    stmt = stmt.order_by(*(c.desc() if descending else c.asc() for c in order))
    return stmt.limit(args.limit) if args.limit > 0 else stmt


def _groups(s: Any) -> list[str]:
    """The groups tickets are in, for the hint when `--group` matched none."""
    found = s.execute(select(col(Ticket.group)).where(col(Ticket.group).is_not(None)).distinct())
    return sorted(str(g) for g in found.scalars())


def _list(args: argparse.Namespace) -> int:
    with open_db(config_of(args)) as db, db.session() as s:
        rows = list(s.execute(_select(args)).scalars())
        groups = [] if rows or not args.group else _groups(s)
    if args.json:
        print(json.dumps([_ticket_dict(t) for t in rows], indent=2, default=str, ensure_ascii=False))
        return 0
    if args.csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(CSV_FIELDS)
        for t in rows:
            d = _ticket_dict(t)
            out.writerow([_csv_value(d[f]) for f in CSV_FIELDS])
        return 0
    if not rows:
        if args.group and args.group.lower() not in {g.lower() for g in groups}:
            # a group no ticket has: most often a typo, so say which there are
            print(
                f"no tickets: no ticket has group '{args.group}' (groups on tickets: {', '.join(groups) or 'none'})"
            )
        else:
            print("no tickets")
        return 0
    widths = [w for _, w in COLUMNS]
    widths[0] = max(len("KEY"), *(len(t.key) for t in rows))  # keys are never cut
    room = None
    if sys.stdout.isatty():
        room = max(shutil.get_terminal_size().columns - sum(widths) - len(widths), 20)
    print(" ".join(cut(name, w) for (name, _), w in zip(COLUMNS, widths, strict=True)) + " SUBJECT")
    for t in rows:
        values = (t.key, t.status, t.priority, t.group, t.assignee, t.requester)
        cells = " ".join(cut(v or "-", w) for v, w in zip(values, widths, strict=True))
        print(f"{cells} {visible(t.subject) if room is None else cut(t.subject, room).rstrip()}")
    return 0


def _search(args: argparse.Namespace) -> int:
    """The tickets whose messages hold every word of the query (store/search.py: the index the
    similar-tickets block uses), best match first."""
    from mailgate.store.search import search, words

    if not words(args.text):
        print("nothing to search for: the query has no words (letters or digits)", file=sys.stderr)
        return 2
    wanted = [v.strip() for v in (args.status or "").split(",") if v.strip()]
    with open_db(config_of(args)) as db, db.reading() as s:
        hits = search(
            s,
            args.text,
            desk=args.desk,
            statuses=wanted,
            group=args.group,
            limit=args.limit,
        )
    if args.json:
        rows = [{**h.__dict__, "created_at": h.created_at, "resolved_at": h.resolved_at} for h in hits]
        print(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
        return 0
    if not hits:
        print(f"no tickets match {args.text!r}")
        return 0
    widths = [max(len("KEY"), *(len(h.key) for h in hits)), 14, 12, 22, 10]
    room = None
    if sys.stdout.isatty():
        room = max(shutil.get_terminal_size().columns - sum(widths) - len(widths), 20)
    head = ("KEY", "STATUS", "GROUP", "ASSIGNEE", "CREATED")
    print(" ".join(cut(name, w) for name, w in zip(head, widths, strict=True)) + " SUBJECT")
    for h in hits:
        values = (h.key, h.status, h.group, h.assignee, f"{h.created_at:%Y-%m-%d}")
        cells = " ".join(cut(v or "-", w) for v, w in zip(values, widths, strict=True))
        print(f"{cells} {visible(h.subject) if room is None else cut(h.subject, room).rstrip()}")
    return 0


def _csv_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


def _ticket_dict(t: Ticket) -> dict[str, object]:
    return {
        "key": t.key,
        "desk": t.desk,
        "subject": t.subject,
        "requester": t.requester,
        "status": t.status,
        "priority": t.priority,
        "type": t.type,
        "category": t.category,
        "group": t.group,
        "assignee": t.assignee,
        "tags": t.tags,
        "fields": t.fields,
        "created_at": utc(t.created_at),
        "updated_at": utc(t.updated_at),
        "first_response_at": utc(t.first_response_at),
        "first_response_due": utc(t.first_response_due),
        "resolution_due": utc(t.resolution_due),
        "resolved_at": utc(t.resolved_at),
        "closed_at": utc(t.closed_at),
        "rating": t.rating,
        "rating_comment": t.rating_comment,
    }


def _sla_line(args: argparse.Namespace, repo: Repo, t: Ticket) -> str | None:
    """Where the ticket's SLA clocks stand now (rules/sla.toml); None without SLA rules."""
    from mailgate.domain.rulesfile import RulesInvalid
    from mailgate.pipeline.sla_apply import sla_summary
    from mailgate.ruleset import load

    config = config_of(args)
    desk = config.desk_by_key(t.desk)
    try:
        rules = load(config.rules_dir, config.templates_dir, config.desks)
    except RulesInvalid as exc:
        return f"unknown (the rules do not load: {exc})"
    if desk is None:
        return None
    return sla_summary(repo, t, rules.workflow(desk), rules.sla, now_utc())


def time_spent(events: list[Event]) -> dict[str, int]:
    """Minutes each agent recorded with `#time`, in the order they first did."""
    spent: dict[str, int] = {}
    for e in events:
        if e.kind == EventKind.TIME:
            spent[e.actor] = spent.get(e.actor, 0) + int((e.data or {}).get("minutes") or 0)
    return spent


def _show(args: argparse.Namespace) -> int:
    with open_db(config_of(args)) as db, db.session() as s:
        repo = Repo(s)
        t = repo.ticket_by_key(args.key)
        if t is None:
            print(f"no ticket {args.key}")
            return 1
        messages = repo.messages(t.id)  # type: ignore[arg-type]
        people = repo.participants(t.id)  # type: ignore[arg-type]
        events = list(
            s.execute(select(Event).where(col(Event.ticket_id) == t.id).order_by(col(Event.id))).scalars()
        )
        outgoing = list(
            s.execute(
                select(OutboxItem).where(col(OutboxItem.ticket_id) == t.id).order_by(col(OutboxItem.id))
            ).scalars()
        )
        sla = _sla_line(args, repo, t)
    spent = time_spent(events)
    if args.json:
        data = _ticket_dict(t)
        data["time_spent"] = {"minutes": sum(spent.values()), "by_agent": spent}
        found = [e.data or {} for e in events if e.kind == EventKind.SIMILAR]
        data["similar"] = found[-1].get("keys", []) if found else []
        data["likely_duplicate_of"] = found[-1].get("duplicate") if found else None
        data["participants"] = [{"address": p.address, "role": p.role, "notify": p.notify} for p in people]
        data["messages"] = [
            {
                "direction": m.direction,
                "kind": m.kind,
                "author": m.author,
                "at": utc(m.created_at),
                "message_id": m.message_id,
                "text": m.text,
                "reply_text": m.reply_text,
                "attachments": m.attachments,
            }
            for m in messages
        ]
        data["events"] = [
            {
                "at": utc(e.created_at),
                "actor": e.actor,
                "kind": e.kind,
                "data": e.data,
                "text": sentence(e.kind, e.actor, e.data),
            }
            for e in events
        ]
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        return 0
    print(f"{t.key}  {visible(t.subject)}")
    # The category only when it says more: "waiting customer (waiting)", not "open (open)".
    category = f" ({t.status_category})" if t.status_category != t.status else ""
    print(f"  status      {t.status}{category}")
    print(f"  requester   {t.requester}")
    for label, value in (
        ("priority", t.priority),
        ("type", t.type),
        ("category", t.category),
        ("group", t.group),
        ("assignee", t.assignee),
    ):
        print(f"  {label:<11} {value or '-'}")
    if t.tags:
        print(f"  tags        {', '.join(t.tags)}")
    for k, v in (t.fields or {}).items():
        print(f"  {visible(str(k)):<11} {visible(str(v))}")
    print(f"  created     {_fmt(t.created_at)}")
    print(f"  1st reply   {_fmt(t.first_response_at)} (due {_fmt(t.first_response_due)})")
    print(f"  resolution  {_fmt(t.resolved_at)} (due {_fmt(t.resolution_due)})")
    if sla:
        print(f"  sla         {sla}")
    if spent:
        each = ", ".join(f"{who} {format_minutes(m)}" for who, m in spent.items())
        print(f"  time spent  {format_minutes(sum(spent.values()))} ({each})")
    if t.rating is not None:
        print(f"  rating      {t.rating}/5 {visible(t.rating_comment or '')}")
    for e in events:
        if e.kind == EventKind.SIMILAR:
            if (e.data or {}).get("duplicate"):
                print(
                    f"  duplicate?  likely a duplicate of {e.data['duplicate']} (same requester, within a day)"
                )
            print(f"  similar     {', '.join((e.data or {}).get('keys') or [])}")
    print(
        "  people      " + ", ".join(f"{p.address} ({p.role}{'' if p.notify else ', muted'})" for p in people)
    )
    print("\nMessages:")
    for m in messages:
        print(f"--- {_fmt(m.created_at)} {m.direction} {m.kind} from {m.author}")
        # What a customer wrote reaches the admin's terminal: no control sequence of theirs runs.
        print(visible_lines((m.reply_text or m.text).strip()[:2000]))
        for a in m.attachments:
            name, kind = visible(str(a.get("filename"))), visible(str(a.get("content_type")))
            print(f"    [attachment] {name} ({kind}, {a.get('size')} bytes)")
    print("\nHistory:")
    for e in events:
        print(f"  {_fmt(e.created_at)}  {sentence(e.kind, e.actor, e.data)}")
    print("\nMail sent:")
    for o in outgoing:
        when = (
            f"sent {_fmt(o.sent_at)}"
            if o.sent_at
            else o.state + (f" ({o.last_error})" if o.last_error else "")
        )
        print(f"  {_fmt(o.created_at)} {o.kind} to {', '.join(o.recipients)}: {when}")
    return 0


def _attachment(args: argparse.Namespace) -> int:
    """One attachment of a ticket by the name the notification gave (the newest of that name),
    to stdout or `--output FILE`: how an agent gets a file too large to travel by mail. The name
    is only matched, never used as a path; the bytes come from the store by content hash."""
    config = config_of(args)
    wanted = safe_filename(args.name)
    with open_db(config) as db, db.session() as s:
        repo = Repo(s)
        t = repo.ticket_by_key(args.key)
        if t is None:
            print(f"no ticket {args.key}", file=sys.stderr)
            return 1
        kept = [
            a
            for m in repo.messages(t.id)  # type: ignore[arg-type]
            for a in m.attachments
            if a.get("sha256")
        ]
    found = [a for a in kept if safe_filename(str(a.get("filename") or "")) == wanted]
    names = sorted({safe_filename(str(a.get("filename") or "")) for a in kept})
    if not found:
        print(
            f"{t.key} has no attachment named {wanted!r}; it has: {', '.join(names) or 'none'}",
            file=sys.stderr,
        )
        return 1
    data = BlobStore(config.state_dir / "attachments").get(str(found[-1]["sha256"]))
    if args.output:
        Path(args.output).write_bytes(data)
        print(f"wrote {len(data)} bytes to {args.output}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tickets", help="list and show tickets")
    tsub = p.add_subparsers(dest="tickets_command", required=True)
    ls = tsub.add_parser("list", help="tickets, newest first; filter, sort, or print as JSON or CSV")
    ls.add_argument("--desk", help="only this desk's tickets (its key, e.g. SUP)")
    ls.add_argument("--status", help="status or category (open, waiting, closed); several with commas")
    ls.add_argument("--group", help="only this group's tickets")
    ls.add_argument("--assignee", help="only tickets assigned to this address (- for unassigned)")
    ls.add_argument(
        "--mine", metavar="ADDRESS", help="tickets not closed that ADDRESS is assigned to or watches"
    )
    ls.add_argument("--sort", choices=sorted(SORTS), default="created", help="default: %(default)s")
    ls.add_argument("--reverse", action="store_true", help="turn the order round")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (0: all; default %(default)s)")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON list, every field")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    ls.set_defaults(func=_list)
    se = tsub.add_parser(
        "search", help="full-text search of subjects and messages: every word, best match first"
    )
    se.add_argument("text", help='the words to look for, e.g. "printer jam" (each also as a prefix)')
    se.add_argument("--desk", help="only this desk's tickets (its key, e.g. SUP)")
    se.add_argument("--status", help="status or category (open, waiting, closed); several with commas")
    se.add_argument("--group", help="only this group's tickets")
    se.add_argument("--limit", type=int, default=20, help="at most this many (default %(default)s)")
    se.add_argument("--json", action="store_true", help="a JSON list")
    se.set_defaults(func=_search)
    sh = tsub.add_parser("show", help="one ticket: fields, messages and full history")
    sh.add_argument("key")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)
    at = tsub.add_parser("attachment", help="one attachment of a ticket, by name, to stdout or a file")
    at.add_argument("key")
    at.add_argument("name")
    at.add_argument("-o", "--output", help="write to this file instead of stdout")
    at.set_defaults(func=_attachment)
    from mailgate.cli.export import register_export

    register_export(tsub)
