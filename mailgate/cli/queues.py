"""`mailgate inbox …` and `mailgate outbox …`: what came in and why it went where it went,
what is waiting to go out, and putting quarantined or failed items back."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session, col

from mailgate.cli.common import config_of, cut, open_db
from mailgate.mail.decode import NULL_REVERSE_PATH
from mailgate.store import inbox
from mailgate.store.db import Database
from mailgate.store.models import InboxItem, InboxRaw, OutboxItem, Ticket, now_utc, utc

log = logging.getLogger(__name__)


# How the inbox commands print JSON: as `tickets list --json` and `tickets show --json` do.
JSON: dict[str, Any] = {"indent": 2, "default": str, "ensure_ascii": False}


def _inbox_dict(r: InboxItem, key: str | None) -> dict[str, Any]:
    """One inbox row as `inbox show --json` prints it, and `inbox list --json` each of its rows:
    every field, the ticket by its key."""
    return {
        "id": r.id,
        "desk": r.desk,
        "state": r.state,
        "disposition": r.disposition,
        "ticket": key,
        "message_id": r.message_id,
        "source": r.source,
        "mail_from": r.mail_from,
        "rcpt_tos": r.rcpt_tos,
        "attempts": r.attempts,
        "stage": r.stage,
        "reason": r.reason,
        "trace": r.trace,
        "received_at": utc(r.received_at),
        "released_by": r.released_by,
        "released_at": utc(r.released_at),
    }


def _inbox_list(args: argparse.Namespace) -> int:
    with open_db(config_of(args)) as db, db.session() as s:
        stmt = select(InboxItem).order_by(col(InboxItem.id).desc()).limit(args.limit)
        if args.failed:
            stmt = stmt.where(col(InboxItem.state) == "failed")
        rows = list(s.execute(stmt).scalars())
        keys = {
            t.id: t.key
            for t in s.execute(
                select(Ticket).where(col(Ticket.id).in_([r.ticket_id for r in rows if r.ticket_id]))
            ).scalars()
        }
    if args.json:  # a list, as `tickets list --json`, of what `inbox show --json` prints for one
        print(json.dumps([_inbox_dict(r, keys.get(r.ticket_id)) for r in rows], **JSON))
        return 0
    if not rows:
        print("no failed messages" if args.failed else "inbox is empty")
        return 0
    key_width = max(len("TICKET"), *(len(keys.get(r.ticket_id, "-")) for r in rows))
    print(f"{'ID':>6} {'STATE':<10} {'DESK':<8} {'TICKET':<{key_width}} {'FROM':<28} OUTCOME")
    for r in rows:
        what = f"{r.stage}: {r.reason}" if r.state == "failed" else (r.disposition or "")
        if r.released_by and r.state in ("new", "processing"):
            what = f"released by {r.released_by}, waiting"
        elif r.state != "failed" and what.startswith("held:") and r.reason:
            what += f" ({r.reason})"  # why it was kept from the desk, without `inbox show`
        elif r.released_by:
            what += f" (released by {r.released_by})"
        print(
            f"{r.id:>6} {r.state:<10} {cut(r.desk, 8)} {keys.get(r.ticket_id, '-'):<{key_width}}"
            f" {cut(r.mail_from or '-', 28)} {what}"
        )
    return 0


def _inbox_show(args: argparse.Namespace) -> int:
    with open_db(config_of(args)) as db, db.session() as s:
        r = s.get(InboxItem, args.id)
        if r is None:
            print(f"no inbox item {args.id}")
            return 1
        if args.raw:  # the message exactly as received, e.g. to open a quarantined one in a mail client
            raw = s.get(InboxRaw, args.id)
            sys.stdout.buffer.write(raw.raw if raw is not None else b"")
            sys.stdout.buffer.flush()
            return 0
        key = s.get(Ticket, r.ticket_id).key if r.ticket_id else None  # type: ignore[union-attr]
    if args.json:
        print(json.dumps(_inbox_dict(r, key), **JSON))
        return 0
    print(
        f"inbox item {r.id} for desk {r.desk}, received {utc(r.received_at):%Y-%m-%d %H:%M:%S} UTC by {r.source}"
    )
    print(f"  Message-ID  <{r.message_id}>" if r.message_id else "  Message-ID  (none)")
    sender = (
        "<> (the null sender: a delivery report or a notice not to be answered)"
        if r.mail_from == NULL_REVERSE_PATH
        else f"<{r.mail_from}>"
        if r.mail_from
        else "(none given)"
    )
    print(f"  envelope    from {sender} to {', '.join(r.rcpt_tos) or '(from headers)'}")
    print(f"  state       {r.state}, {r.attempts} attempt(s)" + (f", ticket {key}" if key else ""))
    if r.disposition:
        print(f"  outcome     {r.disposition}" + (f": {r.reason}" if r.reason else ""))
    if r.state == "failed":
        print(f"  failed at   {r.stage}: {r.reason}")
    if r.released_by:
        print(f"  released    by {r.released_by} at {utc(r.released_at):%Y-%m-%d %H:%M:%S} UTC")
    elif r.state == "done" and (r.disposition or "") in ("held:auto-reply", "held:flood"):
        print(
            f"  held        `mailgate inbox release {r.id}` processes it as if not held; `inbox drop {r.id}` discards it"
        )
    print("Decisions:")
    for step in r.trace:
        if step.get("decision") == "traceback":
            print("  " + step.get("detail", "").replace("\n", "\n  "))
        else:
            print(f"  {step['stage']:<12} {step['decision']}")
    return 0


def _inbox_retry(args: argparse.Namespace) -> int:
    with open_db(config_of(args)) as db, db.session() as s:
        ok = inbox.retry(s, args.id)
    print(f"inbox item {args.id} queued again" if ok else f"inbox item {args.id} is not quarantined")
    return 0 if ok else 1


def _who(args: argparse.Namespace) -> str:
    """Who decides, for the audit trail: --by, else the login name running the command — or,
    for a user id no passwd entry names (a container's `-u 1000`, systemd's DynamicUser), the
    id itself."""
    import getpass
    import os

    by = (args.by or "").strip()
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no LOGNAME/USER and no passwd entry: KeyError, OSError from 3.13
        return f"uid {os.getuid()}"


def _inbox_release(args: argparse.Namespace) -> int:
    """Each id released in its own commit, then processed on the pipeline's one path, here
    (a running daemon's worker may take one first: the claim gives each row to one of them)."""
    from mailgate.pipeline import release
    from mailgate.pipeline.runner import Runner

    by = _who(args)
    config = config_of(args)
    with open_db(config) as db:
        answers = []
        for item_id in dict.fromkeys(args.ids):
            with db.session() as s:
                answers.append(release.release(s, item_id, by))
        if any(a.ok for a in answers):
            try:
                Runner(db, config).run_until_idle()
            except Exception as exc:  # noqa: BLE001 - released is committed: the daemon processes it
                log.error("processing after the release failed (the release stands): %s", exc)
        daemon = _daemon_runs(db)
        with db.session() as s:
            for a in answers:
                r = s.get(InboxItem, a.item_id)
                if not a.ok or r is None:
                    print(a.text, file=sys.stderr)
                    continue
                when = "" if a.now else f" at {utc(r.released_at):%Y-%m-%d %H:%M} UTC"
                done = "released" if a.now else "was released"
                print(f"inbox item {r.id} {done} by {r.released_by}{when}: {_after_release(s, r, daemon)}")
    return 0 if all(a.ok for a in answers) else 1


def _daemon_runs(db: Database) -> bool:
    """Whether a `mailgate run` is alive by its heartbeat: what the release's admin is told
    happens next to the message and its mail depends on it."""
    from mailgate.store.heartbeat import daemons

    return any(d.alive for d in daemons(db))


def _after_release(s: Session, r: InboxItem, daemon: bool) -> str:
    """What the pipeline made of a released message, and what happens next: the command
    processes it but sends nothing, so its mail waits in the outbox for a daemon's sender."""
    if r.state in ("new", "processing"):  # a running daemon's worker took it first, or this run failed
        if daemon:
            return f"queued; the running daemon's worker processes it (`mailgate inbox show {r.id}` tells the outcome)"
        return "queued, not processed yet, and no daemon is running: `mailgate run` (or this command again) processes it"
    if r.state == "failed":
        return f"quarantined at {r.stage}: {r.reason} (`mailgate inbox show {r.id}`)"
    ticket = s.get(Ticket, r.ticket_id) if r.ticket_id else None
    outcome = r.disposition or r.state
    if ticket is None:
        return f"{outcome}: {r.reason or ''}".rstrip(": ")
    mails = s.execute(
        select(func.count())
        .select_from(OutboxItem)
        .where(col(OutboxItem.ticket_id) == ticket.id, col(OutboxItem.created_at) >= r.released_at)
    ).scalar_one()
    said = f"ticket {ticket.key} ({outcome})"
    if not mails:
        return said
    n = f"{mails} mail{'' if mails == 1 else 's'}"
    if daemon:
        return f"{said}; {n} about it {'goes' if mails == 1 else 'go'} out with the running daemon"
    it = "it" if mails == 1 else "them"
    waits = "waits" if mails == 1 else "wait"
    return (
        f"{said}; {n} about it {waits} in the outbox until `mailgate run` sends {it} (no daemon is running)"
    )


def _inbox_drop(args: argparse.Namespace) -> int:
    from mailgate.pipeline import release

    by = _who(args)
    with open_db(config_of(args)) as db:
        answers = []
        for item_id in dict.fromkeys(args.ids):
            with db.session() as s:
                answers.append(release.drop(s, item_id, by))
    for a in answers:
        print(a.text, file=sys.stdout if a.ok else sys.stderr)
    return 0 if all(a.ok for a in answers) else 1


def _sender_line(db: Database, pending: int) -> tuple[str, bool]:
    """Who sends the pending mail: a running daemon (by its heartbeat), or nobody. The second
    value is False when mail waits and no sender is alive."""
    from mailgate.store.heartbeat import daemons

    running = [d for d in daemons(db) if d.alive]
    if running:
        d = running[0]
        return f"sender: running in the daemon, pid {d.pid} on {d.host}", True
    if not pending:
        return "sender: no daemon is running", True
    return f"sender: NOT RUNNING (no daemon): {pending} mail(s) wait until `mailgate run` starts", False


def _when(at: datetime, now: datetime) -> str:
    """A time as how far it is from now: `in 4m`, or `overdue 3m` when it has passed."""
    seconds = int((utc(at) - now).total_seconds())
    span = abs(seconds)
    text = f"{span}s" if span < 120 else f"{span // 60}m" if span < 7200 else f"{span // 3600}h"
    return f"in {text}" if seconds > 0 else "now" if span < 5 else f"overdue {text}"


def _outbox_list(args: argparse.Namespace) -> int:
    with open_db(config_of(args)) as db:
        with db.session() as s:
            stmt = select(OutboxItem).order_by(col(OutboxItem.id).desc()).limit(args.limit)
            if args.failed:
                stmt = stmt.where(col(OutboxItem.state) == "failed")
            else:
                stmt = stmt.where(col(OutboxItem.state).in_(["pending", "sending", "failed"]))
            rows = list(s.execute(stmt).scalars())
        sender, alive = _sender_line(db, sum(r.state != "failed" for r in rows))
    if not rows:
        print("no failed mail" if args.failed else "outbox is empty")
        return 0
    now = now_utc()
    print(f"{'ID':>6} {'STATE':<8} {'KIND':<16} {'TO':<30} {'TRIES':>5} {'NEXT':<12} LAST ERROR")
    for r in rows:
        nxt = "-" if r.state == "failed" else _when(r.next_attempt_at, now)
        print(
            f"{r.id:>6} {r.state:<8} {cut(r.kind, 16)} {cut(','.join(r.recipients), 30)} {r.attempts:>5}"
            f" {nxt:<12} {' '.join((r.last_error or '-').split())}"
        )
    if not args.failed:
        print(sender, file=sys.stdout if alive else sys.stderr)
    return 0


def _outbox_retry(args: argparse.Namespace) -> int:
    from mailgate.outbox.sender import retry_failed

    with open_db(config_of(args)) as db:
        n = retry_failed(db, args.id)
        if args.id is not None and not n:
            # One id asked for and nothing done: say why, as `inbox retry` does.
            with db.session() as s:
                row = s.get(OutboxItem, args.id)
            why = (
                f"no outbox item {args.id}"
                if row is None
                else f"outbox item {args.id} is {row.state}, not failed"
            )
            print(f"mailgate outbox retry: {why}: nothing queued again", file=sys.stderr)
            return 1
    # Nothing failed is no error: the command did all there was to do.
    print(f"{n} mail(s) queued again" if n else "no failed mail: nothing to queue again")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inbox", help="received messages: list, show (why it went where), failed, retry, release, drop"
    )
    isub = p.add_subparsers(dest="inbox_command", required=True)
    ls = isub.add_parser("list", help="the newest received messages")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="a JSON list, every field (as `inbox show --json`)")
    ls.set_defaults(func=_inbox_list, failed=False)
    fl = isub.add_parser("failed", help="quarantined messages with stage and reason")
    fl.add_argument("--limit", type=int, default=50)
    fl.add_argument("--json", action="store_true", help="a JSON list, every field (as `inbox show --json`)")
    fl.set_defaults(func=_inbox_list, failed=True)
    sh = isub.add_parser("show", help="what each stage decided about one message, and why")
    sh.add_argument("id", type=int)
    sh.add_argument("--json", action="store_true", help="one JSON object, every field")
    sh.add_argument("--raw", action="store_true", help="print the message as received (> message.eml)")
    sh.set_defaults(func=_inbox_show)
    rt = isub.add_parser("retry", help="process a quarantined message again")
    rt.add_argument("id", type=int)
    rt.set_defaults(func=_inbox_retry)
    rl = isub.add_parser(
        "release",
        help="let held mail (held:auto-reply, held:flood, dropped) through: process it as if not held",
    )
    rl.add_argument("ids", type=int, nargs="+", metavar="ID")
    rl.add_argument("--by", metavar="WHO", help="who decides, for the ticket's history (default: your login)")
    rl.set_defaults(func=_inbox_release)
    dr = isub.add_parser("drop", help="discard held mail (kept as dropped; `release` undoes it)")
    dr.add_argument("ids", type=int, nargs="+", metavar="ID")
    dr.add_argument("--by", metavar="WHO", help="who decides, for the record (default: your login)")
    dr.set_defaults(func=_inbox_drop)

    o = sub.add_parser("outbox", help="mail waiting to go out: list, failed, retry")
    osub = o.add_subparsers(dest="outbox_command", required=True)
    ol = osub.add_parser("list", help="pending and failed mail")
    ol.add_argument("--limit", type=int, default=50)
    ol.set_defaults(func=_outbox_list, failed=False)
    of = osub.add_parser("failed", help="mail that could not be delivered, with the relay's answer")
    of.add_argument("--limit", type=int, default=50)
    of.set_defaults(func=_outbox_list, failed=True)
    orr = osub.add_parser("retry", help="send failed mail again (all, or one id)")
    orr.add_argument("id", type=int, nargs="?")
    orr.set_defaults(func=_outbox_retry)
