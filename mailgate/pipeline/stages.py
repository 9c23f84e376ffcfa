"""The stages before a handler is chosen: parse, screen, thread. Each decides and notes why.

Every stage has the signature `(ctx, config, repo)`; the runner names the stage in `ctx.stage`
before calling it, so a failure is always reported at the right stage.
Screening runs before any ticket lookup (STYLE.md habit 4): a loop is cut before it can touch a
ticket. Stages never send mail or write tickets; the handler's apply step does.
"""

from __future__ import annotations

from mailgate.config import Config
from mailgate.domain.threading import find_ticket
from mailgate.mail.compose import LOOP_HEADER
from mailgate.mail.parse import parse_message
from mailgate.mail.screen import auto_reply_reason
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import LoopDetected
from mailgate.store.repo import DeskLookup, Repo


def parse(ctx: Context, config: Config, repo: Repo) -> None:
    ctx.mail = parse_message(ctx.raw, own_addresses=config.own_addresses)
    m = ctx.mail
    detail = f"from {m.from_addr or '(none)'}, subject {m.subject[:80]!r}, {len(m.attachments)} attachment(s)"
    if m.errors:
        detail += f"; defects: {'; '.join(m.errors[:3])}"
    ctx.note("parse", detail)


def screen(ctx: Context, config: Config, repo: Repo) -> None:
    """Decide whether this mail may be answered automatically, and cut our own mail coming back."""
    m = ctx.mail
    own = set(config.own_addresses)
    sender_base = _base(m.from_addr)
    if m.header(LOOP_HEADER) and not m.is_bounce:
        raise LoopDetected(f"carries our own {LOOP_HEADER} header: a mail we sent came back")
    if sender_base in own and not m.is_bounce:
        raise LoopDetected(f"sent from our own address {m.from_addr}")
    if m.is_bounce:
        ctx.auto_reason = "a delivery status notification (bounce)"
    else:
        ctx.auto_reason = m.auto_reply_reason or auto_reply_reason(m, config.own_addresses)
    if ctx.auto_reason:
        ctx.note("screen", f"no automatic answer: {ctx.auto_reason}")
    else:
        ctx.note("screen", "a person's mail: may be acknowledged")


def thread(ctx: Context, config: Config, repo: Repo) -> None:
    m = ctx.mail
    references = list(m.references)
    in_reply_to = m.in_reply_to
    if m.is_bounce and m.bounce and m.bounce.original_message_id:
        # A bounce is about the message it returns, not about its own headers.
        in_reply_to = m.bounce.original_message_id
    hit, tried = find_ticket(
        desk_key=ctx.desk.key,
        subject=m.subject,
        recipients=ctx.recipients,
        in_reply_to=in_reply_to,
        references=references,
        secret=config.secret,
        lookup=DeskLookup(repo, ctx.desk.key),
    )
    ctx.hit = hit
    if hit:
        ctx.ticket = repo.ticket_by_key(hit.key)
        if ctx.ticket is not None and ctx.ticket.merged_into:
            target = repo.ticket_by_key(ctx.ticket.merged_into)
            if target is not None:
                tried.append(f"{hit.key} was merged into {target.key}")
                ctx.ticket = target
    for line in tried:
        ctx.note("thread", line)
    if ctx.ticket is None:
        ctx.note("thread", "no ticket found: this is a new conversation")


def _base(address: str) -> str:
    local, _, domain = address.lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


# The stages between parse and the handler, in order; the runner looks each up by name at call
# time. `parse` runs first and on its own, before the write transaction opens (it reads no table).
ORDER = ("screen", "thread")
