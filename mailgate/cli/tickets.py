"""`mailgate tickets list|show`: the tickets and their whole history, for people at a terminal."""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from sqlalchemy import select
from sqlmodel import col

from mailgate.cli.common import config_of, open_db
from mailgate.store.models import Event, OutboxItem, Ticket, now_utc, utc
from mailgate.store.repo import Repo


def _fmt(dt: datetime | None) -> str:
    value = utc(dt)
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _list(args: argparse.Namespace) -> int:
    with open_db(config_of(args)) as db, db.session() as s:
        stmt = select(Ticket).order_by(col(Ticket.id).desc()).limit(args.limit)
        if args.desk:
            stmt = stmt.where(col(Ticket.desk) == args.desk.upper())
        if args.status:
            stmt = stmt.where(col(Ticket.status) == args.status)
        rows = list(s.execute(stmt).scalars())
    if args.json:
        print(json.dumps([_ticket_dict(t) for t in rows], indent=2, default=str))
        return 0
    if not rows:
        print("no tickets")
        return 0
    print(f"{'KEY':<10} {'STATUS':<18} {'ASSIGNEE':<24} {'REQUESTER':<28} SUBJECT")
    for t in rows:
        print(f"{t.key:<10} {t.status:<18} {(t.assignee or '-'):<24} {t.requester:<28} {t.subject[:60]}")
    return 0


def _ticket_dict(t: Ticket) -> dict[str, object]:
    return {
        "key": t.key,
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
    if args.json:
        data = _ticket_dict(t)
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
            {"at": utc(e.created_at), "actor": e.actor, "kind": e.kind, "data": e.data} for e in events
        ]
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        return 0
    print(f"{t.key}  {t.subject}")
    print(f"  status      {t.status} ({t.status_category})")
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
        print(f"  {k:<11} {v}")
    print(f"  created     {_fmt(t.created_at)}")
    print(f"  1st reply   {_fmt(t.first_response_at)} (due {_fmt(t.first_response_due)})")
    print(f"  resolution  {_fmt(t.resolved_at)} (due {_fmt(t.resolution_due)})")
    if sla:
        print(f"  sla         {sla}")
    if t.rating is not None:
        print(f"  rating      {t.rating}/5 {t.rating_comment or ''}")
    print(
        "  people      " + ", ".join(f"{p.address} ({p.role}{'' if p.notify else ', muted'})" for p in people)
    )
    print("\nMessages:")
    for m in messages:
        print(f"--- {_fmt(m.created_at)} {m.direction} {m.kind} from {m.author}")
        print((m.reply_text or m.text).strip()[:2000])
        for a in m.attachments:
            print(f"    [attachment] {a.get('filename')} ({a.get('content_type')}, {a.get('size')} bytes)")
    print("\nHistory:")
    for e in events:
        detail = ", ".join(f"{k}={v}" for k, v in (e.data or {}).items())
        print(f"  {_fmt(e.created_at)} {e.actor}: {e.kind} {detail}")
    print("\nMail sent:")
    for o in outgoing:
        when = _fmt(o.sent_at) if o.sent_at else o.state + (f" ({o.last_error})" if o.last_error else "")
        print(f"  {_fmt(o.created_at)} {o.kind} to {', '.join(o.recipients)}: {when}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tickets", help="list and show tickets")
    tsub = p.add_subparsers(dest="tickets_command", required=True)
    ls = tsub.add_parser("list", help="the newest tickets")
    ls.add_argument("--desk")
    ls.add_argument("--status")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    sh = tsub.add_parser("show", help="one ticket: fields, messages and full history")
    sh.add_argument("key")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=_show)
    from mailgate.cli.export import register_export

    register_export(tsub)
