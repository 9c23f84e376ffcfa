"""The stages before a handler is chosen: parse, screen, thread. Each decides and notes why.

Every stage has the signature `(ctx, config, repo)`; the runner names the stage in `ctx.stage`
before calling it, so a failure is always reported at the right stage.
Screening runs before any ticket lookup (STYLE.md habit 4): a loop is cut before it can touch a
ticket. Stages never send mail or write tickets; the handler's apply step does.
"""

from __future__ import annotations

from mailgate.config import Config
from mailgate.domain.threading import ThreadHit, find_ticket
from mailgate.mail.compose import LOOP_HEADER
from mailgate.mail.decode import NULL_REVERSE_PATH, plus_parts
from mailgate.mail.msgid import parse_msgids
from mailgate.mail.parse import parse_message
from mailgate.mail.portal import relayed_by_portal
from mailgate.mail.screen import auto_reply_reason, own_list
from mailgate.pipeline.context import Context
from mailgate.pipeline.errors import LoopDetected, SystemMailAnswer, Unattributable
from mailgate.store.repo import DeskLookup, Repo


def parse(ctx: Context, config: Config, repo: Repo) -> None:
    ctx.mail = parse_message(
        ctx.raw, own_addresses=config.own_addresses, null_sender=ctx.item.mail_from == NULL_REVERSE_PATH
    )
    m = ctx.mail
    detail = f"from {m.from_addr or '(none)'}, subject {m.subject[:80]!r}, {len(m.attachments)} attachment(s)"
    if m.errors:
        detail += f"; defects: {'; '.join(m.errors[:3])}"
    ctx.note("parse", detail)
    relayed = relayed_by_portal(m, ctx.desk.portals, config.own_addresses) if ctx.desk.portals else None
    if relayed is not None:
        # A web form's mail: the person in Reply-To is the requester (mail/portal.py has the guards).
        ctx.note("parse", relayed.why)
        if relayed.person:
            m.from_addr, m.from_name = relayed.person, relayed.name
    if not m.from_addr and not m.is_bounce:
        # Nobody to make a ticket for, answer or attribute a reply to; the MTA had its 250, so
        # the message must not vanish as an outcome: an admin looks (`mailgate inbox failed`).
        if not ctx.raw.strip():
            raise Unattributable("empty message: no headers and no body")
        raise Unattributable("no sender address: the From header is missing or holds no address")


def screen(ctx: Context, config: Config, repo: Repo) -> None:
    """Decide whether this mail may be answered automatically, and cut our own mail coming back."""
    m = ctx.mail
    own = set(config.own_addresses)
    sender_base = _base(m.from_addr)
    if m.header(LOOP_HEADER) and not m.is_bounce:
        raise LoopDetected(f"carries our own {LOOP_HEADER} header: a mail we sent came back")
    if sender_base in own and not m.is_bounce:
        raise LoopDetected(f"sent from our own address {m.from_addr}")
    answered = _answers_system_mail(ctx, config, repo)
    if answered:
        raise SystemMailAnswer(answered)
    relayed = None if m.is_bounce else own_list(m, ctx.desk.addresses)
    if m.is_bounce:
        ctx.auto_reason = "a delivery status notification (bounce)"
    elif relayed:
        # The desk's address is a group that relays to it (Google Groups, Mailman): mail sent
        # to the desk, answered like mail sent straight to it. The author is the sender (parse
        # read them out of a From the group rewrote); the group itself is one of our own
        # addresses, so the loop guard above and every recipient list leave it out.
        ctx.note("screen", relayed)
        ctx.auto_reason = auto_reply_reason(m, config.own_addresses, desk_list=True)
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
        lookup=DeskLookup(repo, ctx.desk.key),
    )
    reused = _reused_message_id(ctx, repo)
    if hit is None and reused is not None:
        hit = reused
        tried.append(f"reused Message-ID: {reused.detail}")
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


def _answers_system_mail(ctx: Context, config: Config, repo: Repo) -> str | None:
    """Why this mail answers system mail (sent to the no-reply system sender, or In-Reply-To an
    admin notice or digest), or None."""
    system = config.system_sender
    for addr in ctx.recipients:
        if _base(addr) == system:
            return f"addressed to the system sender {system}: answers to system mail are not ticketed"
    for mid in parse_msgids(ctx.mail.in_reply_to):
        sent = repo.sent_to(mid)
        if sent is not None and sent[0] is None:
            return f"In-Reply-To <{mid}> is a system mail ({sent[2]}) of ours: not ticketed"
    return None


def _reused_message_id(ctx: Context, repo: Repo) -> ThreadHit | None:
    """Another message with this Message-ID came first (identical redeliveries never reach here:
    accept keeps one row per Message-ID and content). Noted, and processed as the mail it is: a
    stranger who sent first with someone's Message-ID must not decide where the real mail goes.
    Only when the earlier copy was the same sender's (a client resending an edited copy, or a
    relay re-encoding it) does it go to the same ticket, so one request never becomes two."""
    m = ctx.mail
    if not m.message_id or ctx.item.id is None:
        return None
    earlier = ctx.earlier_copy
    if earlier is None:
        return None
    ctx.note("thread", f"reused Message-ID <{m.message_id}>: inbox row {earlier} had it, with other content")
    key = repo.ticket_of_message(ctx.desk.key, m.message_id, m.from_addr) if m.from_addr else None
    if key is None:
        return None
    return ThreadHit(key, "reused-message-id", f"the earlier copy from {m.from_addr} is on {key}")


def _base(address: str) -> str:
    return plus_parts(address)[0]


# The stages between parse and the handler, in order; the runner looks each up by name at call
# time. `parse` runs first and on its own, before the write transaction opens (it reads no table).
ORDER = ("screen", "thread")
