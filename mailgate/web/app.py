"""The ASGI app (Starlette): the requester's request page, one-click rating and unsubscribe, the
agents' sign-in, queues and ticket pages, /healthz and /metrics.

Who may see what is decided by signed links (domain/tokens.make_link): a link names one ticket,
one person and one purpose, and expires; the ticket key in a URL is never enough. Agents sign in
by a link mailed to their address and then carry a signed session cookie; what a signed-in agent
is shown is what they may see by mail (domain.team.may_see, through `_shown`, for every agent
route): a ticket of another group is "no such ticket" (404, as a key that does not exist), and
the lists simply do not hold it. Every POST but the RFC 8058 one-click unsubscribe needs the
form's CSRF field and a same-origin request; no GET changes anything (mail gateways' link
scanners open every link in a mail).

Database work runs in Starlette's thread pool (`run_in_threadpool`), so the event loop serving
pages never waits on it; changes go through the Repo in one transaction, as the pipeline's do.
Must not: send mail itself (it queues outbox rows), or show a requester anything the mail did not.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import or_, select
from sqlalchemy.orm import configure_mappers
from sqlmodel import col
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from mailgate.config import Config, Desk
from mailgate.domain.team import may_see
from mailgate.domain.tokens import (
    Link,
    LinkState,
    Purpose,
    TokenKeys,
    form_token,
    make_link,
    read_link,
    without_proofs,
)
from mailgate.mail.decode import visible
from mailgate.outbox.render import Renderer
from mailgate.pipeline.canned import CannedFailed, article_title, render_canned
from mailgate.pipeline.identity import token_keys
from mailgate.pipeline.notify import Notifier
from mailgate.pipeline.web_actions import Outcome, RequesterActions, is_done
from mailgate.reports import to_csv
from mailgate.ruleset import RulesSource, Snapshot
from mailgate.store.blobs import BlobError, BlobStore
from mailgate.store.db import Database
from mailgate.store.kinds import EventKind
from mailgate.store.models import Event, InboxItem, Message, Ticket, now_utc, utc
from mailgate.store.repo import Repo
from mailgate.store.search import search
from mailgate.store.spent import is_spent, spend
from mailgate.web.guard import RateLimit, SecurityHeaders, csrf_ok, same_origin
from mailgate.web.metrics import health_problems, registry_for
from mailgate.web.reports import Query, report_access
from mailgate.web.reports import Refused as ReportRefused
from mailgate.web.reports import build as build_reports
from mailgate.web.reports import view as report_view

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "mailgate_session"
PRESESSION_COOKIE = "mailgate_pre"  # binds the sign-in form's CSRF field to this browser
SIGNIN_MINUTES = 15
AT_RISK = timedelta(hours=4)
QUEUE_ROWS = 100  # tickets per queue list
_ADDRESS = re.compile(r"^[^@\s<>|]{1,64}@[^@\s<>|]{1,255}$")


class WebApp:
    """The pages over one database, built once by the daemon and passed in (no globals)."""

    def __init__(self, config: Config, db: Database, alive: Callable[[], list[str]] | None = None) -> None:
        # Repo.ticket_by_key builds ORM objects by hand, which needs the mappers configured; the
        # ORM does that lazily on first use, and two first page requests in the thread pool raced
        # it (AttributeError inside SQLAlchemy). Configure once, here, before any request.
        configure_mappers()
        self.config = config
        self.db = db
        self.alive = alive or (lambda: [])
        self.rules = RulesSource(config.rules_dir, config.templates_dir, config.desks)
        self.notifier = Notifier(config, Renderer(self.rules))
        self.actions = RequesterActions(config, self.notifier, self.rules)
        self.blobs = BlobStore(config.state_dir / "attachments")
        self.metrics = registry_for(db)
        self.signin_by_address = RateLimit(config.web.signin_per_hour)
        self.signin_by_client = RateLimit(config.web.signin_per_hour * 4)
        env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        # A subject or a name as it is shown: no bidi override or invisible character of a row
        # stored before intake cleaned them can reorder the page around it (decode.visible).
        env.filters["visible"] = visible
        self.templates = Jinja2Templates(env=env)
        self.secure_cookie = config.web.url.startswith("https://")

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def snapshot(self) -> Snapshot:
        self.rules.poll()  # cheap stat of the rules files: an edit is seen as the pipeline sees it
        return self.rules.current

    def keys(self) -> TokenKeys:
        return token_keys(self.config, now_utc().date())

    def link(self, word: str, purpose: Purpose) -> Link:
        return read_link(self.keys(), word, purpose, int(time.time()))

    def page(self, request: Request, name: str, code: int = 200, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, name, context, status_code=code)

    def notice(
        self, request: Request, title: str, text: str, code: int = 200, more: str = "", more_url: str = ""
    ) -> Response:
        return self.page(request, "notice.html", code, title=title, text=text, more=more, more_url=more_url)

    def refused(self, request: Request, link: Link) -> Response:
        if link.state is LinkState.EXPIRED:
            return self.notice(
                request,
                "This link has expired",
                "Links in our mail work for a while only. The newest mail about your request has a fresh one, "
                "or reply to it.",
                410,
            )
        return self.notice(
            request,
            "This link does not work",
            "It may be incomplete: copy the whole link from the mail.",
            404,
        )

    async def form(self, request: Request, bearer: str) -> dict[str, str] | None:
        """The POSTed form when it comes from our own page with the CSRF field made for
        `bearer`; None otherwise (refused with 403 by the caller)."""
        if not same_origin(
            request.headers, self.config.web.url, f"{request.url.scheme}://{request.url.netloc}"
        ):
            return None
        data = await request.form()
        fields = {k: v for k, v in data.items() if isinstance(v, str)}
        if not csrf_ok(self.keys(), bearer, fields.get("csrf")):
            return None
        return fields

    def forbidden(self, request: Request) -> Response:
        return self.notice(
            request, "Refused", "This form did not come from this page. Open the page again and retry.", 403
        )

    def csrf(self, bearer: str) -> str:
        return form_token(self.config.secret, bearer)

    def _ticket(self, repo: Repo, link: Link) -> Ticket | None:
        ticket = repo.ticket_by_key(link.ticket_key)
        if ticket is None:
            return None
        if link.purpose is Purpose.UNSUBSCRIBE:
            return ticket  # muting someone not (or no longer) on the ticket changes nothing
        # The link's person must still be on the ticket (a merged or removed watcher is not).
        if not any(p.address == link.address for p in repo.participants(ticket.id)):  # type: ignore[arg-type]
            return None
        return ticket

    # -- the requester's request page -------------------------------------------------------------
    async def _linked_view(self, request: Request, word: str, purpose: Purpose) -> dict[str, Any] | Response:
        """The request page's view for a link of `purpose`, or the refusal page: a link that is
        not valid, or whose person is no longer on the ticket, shows nothing of it."""
        link = self.link(word, purpose)
        if link.state is not LinkState.VALID:
            return self.refused(request, link)
        view = await run_in_threadpool(self._request_view, link)
        if view is None:
            return self.refused(request, Link(link.purpose, "", "", 0, LinkState.INVALID))
        return view

    async def request_page(self, request: Request) -> Response:
        word = request.path_params["word"]
        view = await self._linked_view(request, word, Purpose.VIEW)
        if isinstance(view, Response):
            return view
        flash = request.query_params.get("done", "")
        return self.page(request, "request.html", **view, word=word, csrf=self.csrf(word), flash=flash)

    def _request_view(self, link: Link) -> dict[str, Any] | None:
        snap = self.snapshot
        with self.db.reading() as s:
            repo = Repo(s)
            ticket = self._ticket(repo, link)
            if ticket is None:
                return None
            desk = self.config.desk_by_key(ticket.desk)
            workflow = snap.workflow(desk) if desk else None
            status = workflow.statuses.get(ticket.status) if workflow else None
            me = next(p for p in repo.participants(ticket.id) if p.address == link.address)  # type: ignore[arg-type]
            names = {p.address: p.name for p in repo.participants(ticket.id)}  # type: ignore[arg-type]
            messages = []
            keys, now = self.keys(), int(time.time())
            for m in repo.messages(ticket.id):  # type: ignore[arg-type]
                if m.kind != "public":
                    continue  # internal notes and system notes are the agents' only
                text = m.reply_text or m.text or ""
                # Our mail forwarded in by someone: only what was made for this reader stays.
                text = without_proofs(text, keys, self.config.own_addresses, now, keep_for=link.address)
                agent = snap.team.agents.get(m.author)
                who = (
                    "You"
                    if m.author == link.address
                    else (agent.name if agent else (desk.name if desk else "Support"))
                    if agent or m.direction == "out"
                    else names.get(m.author) or "Another person on this request"
                )
                messages.append(
                    {
                        "id": m.id,
                        "who": who,
                        "when": utc(m.created_at),
                        "text": text,
                        "attachments": [(i, a) for i, a in enumerate(m.attachments or []) if a.get("sha256")],
                    }
                )
            done = desk is not None and is_done(snap, desk, ticket)
            articles = self._articles(s, ticket, desk) if desk is not None else []
            return {
                "articles": articles,
                "ticket": ticket,
                "status": status.label if status else ticket.status,
                "messages": messages,
                "done": done,
                "can_reopen": bool(
                    done and workflow and workflow.reopen and workflow.can(ticket.status, workflow.reopen)
                ),
                "notify": me.notify,
                "desk": desk,
            }

    def _articles(self, s: Any, ticket: Ticket, desk: Desk) -> list[dict[str, str]]:
        """The knowledge-base articles sent on this ticket (a routing rule's kb_* auto-reply, an
        agent's `#canned kb_*`), each once, as the requester got them: title and text."""
        snap = self.snapshot
        names = s.execute(
            select(col(Event.data)).where(
                col(Event.ticket_id) == ticket.id, col(Event.kind) == EventKind.KB_SENT
            )
        ).scalars()
        articles: list[dict[str, str]] = []
        for name in dict.fromkeys(str((d or {}).get("article") or "") for d in names):
            if name not in snap.templates.canned_names():
                continue  # removed since it was sent: nothing to show
            try:
                text = render_canned(snap, desk, ticket, name, "")
            except CannedFailed:
                text = ""
            articles.append({"id": name, "title": article_title(snap, desk.key, name), "text": text})
        return articles

    async def request_action(self, request: Request) -> Response:
        word = request.path_params["word"]
        action = request.path_params["action"]
        link = self.link(word, Purpose.VIEW)
        if link.state is not LinkState.VALID:
            return self.refused(request, link)
        fields = await self.form(request, word)
        if fields is None:
            return self.forbidden(request)
        if action == "rate":
            value = _rating(fields.get("rating"))
            if value is None:
                return self.notice(request, "Choose a rating", "Pick one of 1 to 5, then send.", 400)
            outcome = await run_in_threadpool(self._rate, link, value, fields.get("comment", ""))
        elif action == "reopen":
            outcome = await run_in_threadpool(self._reopen, link, fields.get("comment", ""))
        elif action == "mute":
            outcome = await run_in_threadpool(self._mute, link, "web: request page")
        elif action == "mute-all":
            outcome = await run_in_threadpool(self._mute_all, link)
        else:
            return self.notice(request, "Not found", "There is no such button.", 404)
        if outcome is None:
            return self.refused(request, Link(link.purpose, "", "", 0, LinkState.INVALID))
        return RedirectResponse(f"/r/{word}?done={quote(str(outcome))}", status_code=303)

    def _with_ticket(self, link: Link, fn: Callable[[Repo, Any, Ticket], Outcome]) -> Outcome | None:
        with self.db.session() as s:
            repo = Repo(s)
            ticket = self._ticket(repo, link)
            desk = self.config.desk_by_key(ticket.desk) if ticket else None
            if ticket is None or desk is None:
                return None
            return fn(repo, desk, ticket)

    def _rate(self, link: Link, value: int, comment: str) -> Outcome | None:
        return self._with_ticket(
            link, lambda repo, desk, t: self.actions.rate(repo, desk, t, link.address, value, comment)
        )

    def _reopen(self, link: Link, comment: str) -> Outcome | None:
        return self._with_ticket(
            link, lambda repo, desk, t: self.actions.reopen(repo, desk, t, link.address, comment)
        )

    def _mute(self, link: Link, via: str) -> Outcome | None:
        return self._with_ticket(link, lambda repo, desk, t: self.actions.mute(repo, t, link.address, via))

    def _mute_all(self, link: Link) -> Outcome | None:
        def all_mine(repo: Repo, desk: Any, t: Ticket) -> Outcome:
            self.actions.mute_all(repo, link.address)
            return Outcome.MUTED

        return self._with_ticket(link, all_mine)

    # -- one-click rating (the resolution mail's 1..5) ---------------------------------------------
    async def rate_page(self, request: Request) -> Response:
        """GET only shows the form with the choice made: a link scanner's GET records nothing."""
        word = request.path_params["word"]
        view = await self._linked_view(request, word, Purpose.RATE)
        if isinstance(view, Response):
            return view
        chosen = _rating(request.query_params.get("n"))
        return self.page(request, "rate.html", **view, word=word, csrf=self.csrf(word), chosen=chosen)

    async def rate_post(self, request: Request) -> Response:
        word = request.path_params["word"]
        link = self.link(word, Purpose.RATE)
        if link.state is not LinkState.VALID:
            return self.refused(request, link)
        fields = await self.form(request, word)
        if fields is None:
            return self.forbidden(request)
        value = _rating(fields.get("rating"))
        if value is None:
            return self.notice(request, "Choose a rating", "Pick one of 1 to 5, then send.", 400)
        outcome = await run_in_threadpool(self._rate, link, value, fields.get("comment", ""))
        if outcome is None:
            return self.refused(request, Link(link.purpose, "", "", 0, LinkState.INVALID))
        if outcome is Outcome.NOT_RESOLVED:
            return self.notice(
                request, "Not rated", "This request is open again: it can be rated once it is resolved.", 409
            )
        return self.notice(request, "Thank you", f"You rated this request {value} out of 5.")

    # -- RFC 8058 one-click unsubscribe ------------------------------------------------------------
    async def unsubscribe_page(self, request: Request) -> Response:
        word = request.path_params["word"]
        link = self.link(word, Purpose.UNSUBSCRIBE)
        if link.state is not LinkState.VALID:
            return self.refused(request, link)
        return self.page(
            request,
            "unsubscribe.html",
            word=word,
            csrf=self.csrf(word),
            key=link.ticket_key,
            address=link.address,
        )

    async def unsubscribe_post(self, request: Request) -> Response:
        """RFC 8058: the mail client POSTs `List-Unsubscribe=One-Click` to the URL of the
        List-Unsubscribe header, from no page of ours and with no cookie: the signed link is the
        whole authority, and it can only turn this person's mail about this ticket off. So this
        one POST takes no CSRF field; the page's own buttons (all my tickets) do."""
        word = request.path_params["word"]
        link = self.link(word, Purpose.UNSUBSCRIBE)
        if link.state is not LinkState.VALID:
            return self.refused(request, link)
        data = await request.form()
        if data.get("csrf") is not None or data.get("scope") == "all":
            fields = await self.form(request, word)
            if fields is None:
                return self.forbidden(request)
            if fields.get("scope") == "all":
                outcome = await run_in_threadpool(self._mute_all, link)
                return (
                    self.notice(
                        request,
                        "Unsubscribed",
                        "You will get no more notifications about any of your requests.",
                    )
                    if outcome
                    else self.refused(request, link)
                )
        elif data.get("List-Unsubscribe") != "One-Click":
            return PlainTextResponse("expected List-Unsubscribe=One-Click (RFC 8058)", status_code=400)
        outcome = await run_in_threadpool(self._mute, link, "web: one-click unsubscribe (RFC 8058)")
        if outcome is None:
            return self.refused(request, Link(link.purpose, "", "", 0, LinkState.INVALID))
        return self.notice(
            request, "Unsubscribed", f"You will get no more notifications about {link.ticket_key}."
        )

    # -- agents: sign-in by mailed link -----------------------------------------------------------
    def agent(self, request: Request) -> str | None:
        """The signed-in agent, or None: a valid session cookie for someone who is an agent in
        the team now (removing them from team.toml signs them out)."""
        word = request.cookies.get(SESSION_COOKIE, "")
        link = self.link(word, Purpose.SESSION)
        if link.state is not LinkState.VALID:
            return None
        return link.address if link.address in self.snapshot.team.agents else None

    def to_signin(self, request: Request) -> Response:
        return RedirectResponse(f"/agent/signin?next={quote(request.url.path)}", status_code=303)

    async def signin_page(self, request: Request) -> Response:
        pre = request.cookies.get(PRESESSION_COOKIE) or secrets.token_urlsafe(18)
        resp = self.page(
            request, "signin.html", csrf=self.csrf(pre), next=_local(request.query_params.get("next"))
        )
        resp.set_cookie(
            PRESESSION_COOKIE, pre, httponly=True, samesite="strict", secure=self.secure_cookie, path="/agent"
        )
        return resp

    async def signin_post(self, request: Request) -> Response:
        """Mail a sign-in link to an agent's address. Whoever asks is told the same thing, agent
        or not (no way to learn who the agents are); mail goes only to team.toml's agents, and
        at most `signin_per_hour` times an hour per address."""
        fields = await self.form(request, request.cookies.get(PRESESSION_COOKIE, ""))
        if fields is None:
            return self.forbidden(request)
        address = (fields.get("address") or "").strip().lower()
        client = request.client.host if request.client else ""
        if not self.signin_by_client.allow(client) or not self.signin_by_address.allow(address):
            return self.notice(
                request,
                "Too many sign-in mails",
                "Wait a while, then ask again; the last link still works for a few minutes.",
                429,
            )
        if _ADDRESS.match(address) and address in self.snapshot.team.agents:
            await run_in_threadpool(self._mail_signin, address, _local(fields.get("next")))
        else:
            log.info("sign-in asked for %r, who is no agent: nothing sent", address[:200])
        return self.notice(
            request,
            "Check your mail",
            "If that address belongs to an agent of this desk, a sign-in link is on its way. It works for "
            f"{SIGNIN_MINUTES} minutes.",
        )

    def _mail_signin(self, address: str, next_path: str) -> None:
        word = make_link(
            self.config.secret,
            Purpose.SIGNIN,
            "",
            address,
            int(time.time()) + SIGNIN_MINUTES * 60,
            nonce=secrets.token_urlsafe(6),
        )
        url = f"{self.config.web.url}/agent/signin/{word}" + (
            f"?next={quote(next_path)}" if next_path else ""
        )
        desk = self.config.desks[0]
        text, html = self.notifier.renderer.render(
            desk.key,
            "agent_signin",
            {"desk": desk, "url": url, "minutes": SIGNIN_MINUTES, "recipient": address},
        )
        with self.db.session() as s:
            self.notifier.send_plain(
                Repo(s),
                desk,
                to=address,
                subject=f"Sign in to {desk.name}",
                text=text,
                html=html,
                kind="signin",
            )

    async def signin_link(self, request: Request) -> Response:
        """GET of the mailed link shows a button; only its POST signs in (a scanner's GET must
        not leave a session behind it, nor use the link up)."""
        word = request.path_params["word"]
        link = self.link(word, Purpose.SIGNIN)
        if link.state is not LinkState.VALID or link.address not in self.snapshot.team.agents:
            return self.signin_refused(request, link)
        if await run_in_threadpool(is_spent, self.db, _mac_of(word)):
            return self.signin_used(request, link)
        return self.page(
            request,
            "signin_confirm.html",
            address=link.address,
            csrf=self.csrf(word),
            next=_local(request.query_params.get("next")),
        )

    def signin_refused(self, request: Request, link: Link) -> Response:
        """An expired sign-in link is answered with the way to a new one (the requester's words
        of `refused` speak of "your request"); a forged one as any other."""
        if link.state is LinkState.EXPIRED:
            return self.notice(
                request,
                "This sign-in link has expired",
                f"Sign-in links work for {SIGNIN_MINUTES} minutes.",
                410,
                more="Mail me a new sign-in link",
                more_url=self.signin_url(request),
            )
        return self.refused(request, link)

    def signin_used(self, request: Request, link: Link) -> Response:
        """A sign-in link works once (a copy of it in a forwarded mail, a log or a browser's
        history signs nobody in later). The browser it signed in goes on where it was going."""
        if self.agent(request) == link.address:
            return RedirectResponse(_local(request.query_params.get("next")) or "/agent", status_code=303)
        return self.notice(
            request,
            "This sign-in link was already used",
            "Each sign-in link works once. If it was not you who used it, tell your desk's admin.",
            410,
            more="Mail me a new sign-in link",
            more_url=self.signin_url(request),
        )

    def signin_url(self, request: Request) -> str:
        next_path = _local(request.query_params.get("next"))
        return "/agent/signin" + (f"?next={quote(next_path)}" if next_path else "")

    async def signin_confirm(self, request: Request) -> Response:
        word = request.path_params["word"]
        link = self.link(word, Purpose.SIGNIN)
        if link.state is not LinkState.VALID or link.address not in self.snapshot.team.agents:
            return self.signin_refused(request, link)
        fields = await self.form(request, word)
        if fields is None:
            return self.forbidden(request)
        spent_now = await run_in_threadpool(
            spend, self.db, _mac_of(word), link.address, datetime.fromtimestamp(link.expires, UTC)
        )
        if not spent_now:
            return self.signin_used(request, link)
        hours = self.config.web.session_hours
        session = make_link(
            self.config.secret, Purpose.SESSION, "", link.address, int(time.time()) + hours * 3600
        )
        resp = RedirectResponse(_local(fields.get("next")) or "/agent", status_code=303)
        resp.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=hours * 3600,
            httponly=True,
            samesite="lax",
            secure=self.secure_cookie,
            path="/",
        )
        log.info("agent %s signed in", link.address)
        return resp

    async def signout(self, request: Request) -> Response:
        fields = await self.form(request, request.cookies.get(SESSION_COOKIE, ""))
        if fields is None:
            return self.forbidden(request)
        resp = RedirectResponse("/agent/signin", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # -- agents: queues and ticket pages -----------------------------------------------------------
    async def queues(self, request: Request) -> Response:
        me = self.agent(request)
        if me is None:
            return self.to_signin(request)
        q = (request.query_params.get("q") or "").strip()[:200]
        view = await run_in_threadpool(self._queues, me, q)
        return self.page(request, "queues.html", **self._nav(request, me), q=q, **view)

    def _shown(self, snap: Snapshot, me: str, ticket: Ticket | None) -> Ticket | None:
        """The ticket if `me` may see it, else None: the one access check of every agent route
        (page, lists, attachments). Callers answer None as they answer a key that does not exist,
        so a refused agent cannot tell another group's ticket from no ticket."""
        if ticket is None or not may_see(snap.team, me, ticket.key, ticket.group, ticket.assignee):
            return None
        return ticket

    def _queues(self, me: str, q: str) -> dict[str, Any]:
        snap = self.snapshot
        # An admin's list is every open ticket, in a group or none (Team.is_admin: the one rule);
        # an agent's, the tickets of the groups they are in.
        every = snap.team.is_admin(me)
        groups = [g.name for g in snap.team.groups.values() if every or me in g.members]
        now = now_utc()
        soon = now + AT_RISK
        open_ = col(Ticket.status_category) != "closed"
        with self.db.reading() as s:

            def rows(*where: Any) -> list[Ticket]:
                """The newest QUEUE_ROWS matching tickets `me` may see. Filtered after the query,
                so it reads on past the ones hidden (in batches, stopping when the list is full)
                rather than showing a short list when other groups' tickets are the newest."""
                query = select(Ticket).where(*where).order_by(col(Ticket.id).desc())
                out: list[Ticket] = []
                for t in s.execute(query.execution_options(yield_per=200)).scalars():
                    if self._shown(snap, me, t) is not None:
                        out.append(t)
                        if len(out) == QUEUE_ROWS:
                            break
                return out

            out: dict[str, Any] = {
                "mine": rows(open_, col(Ticket.assignee) == me),
                "groups": groups,
                "every": every,
                "group_tickets": (
                    rows(open_) if every else rows(open_, col(Ticket.group).in_(groups)) if groups else []
                ),
                "unassigned": rows(open_, col(Ticket.assignee).is_(None)),
                "at_risk": rows(
                    open_,
                    or_(
                        (col(Ticket.first_response_at).is_(None)) & (col(Ticket.first_response_due) < soon),
                        col(Ticket.resolution_due) < soon,
                    ),
                ),
                "results": None,
                "now": now,
            }
            if q:  # the full-text index (store/search.py), as `mailgate tickets search`
                keys = [
                    h.key
                    for h in search(s, q, limit=100)
                    if may_see(snap.team, me, h.key, h.group, h.assignee)
                ]
                # rows() checks the ticket rows themselves again: one check for every list
                found = {t.key: t for t in rows(col(Ticket.key).in_(keys))} if keys else {}
                out["results"] = [found[k] for k in keys if k in found]  # best match first
            return out

    async def agent_ticket(self, request: Request) -> Response:
        me = self.agent(request)
        if me is None:
            return self.to_signin(request)
        view = await run_in_threadpool(self._agent_ticket, me, request.path_params["key"])
        if view is None:  # no such key, or another group's: the same answer
            return self.notice(request, "No such ticket", "No ticket has that key.", 404)
        return self.page(request, "agent_ticket.html", **self._nav(request, me), **view)

    def _agent_ticket(self, me: str, key: str) -> dict[str, Any] | None:
        snap = self.snapshot
        with self.db.reading() as s:
            repo = Repo(s)
            ticket = self._shown(snap, me, repo.ticket_by_key(key))
            if ticket is None:
                return None
            desk = self.config.desk_by_key(ticket.desk)
            workflow = snap.workflow(desk) if desk else None
            status = workflow.statuses.get(ticket.status) if workflow else None
            events = list(
                s.execute(
                    select(Event).where(col(Event.ticket_id) == ticket.id).order_by(col(Event.id))
                ).scalars()
            )
            traces = list(
                s.execute(
                    select(InboxItem).where(col(InboxItem.ticket_id) == ticket.id).order_by(col(InboxItem.id))
                ).scalars()
            )
            keys, now = self.keys(), int(time.time())

            def shown(text: str) -> str:
                return without_proofs(text, keys, self.config.own_addresses, now, keep_for=me)

            return {
                "ticket": ticket,
                "status": status.label if status else ticket.status,
                "messages": [
                    {
                        "m": m,
                        # What a customer forwarded in holds their links and reply address: an
                        # agent reads the words, never someone else's working proof.
                        "shown": shown(m.reply_text or m.text or ""),
                        "whole": shown(m.text or "") if m.reply_text and m.reply_text != m.text else "",
                        "attachments": [(i, a) for i, a in enumerate(m.attachments or []) if a.get("sha256")],
                    }
                    for m in repo.messages(ticket.id)  # type: ignore[arg-type]
                ],
                "people": repo.participants(ticket.id),  # type: ignore[arg-type]
                "events": events,
                "traces": traces,
                "now": now_utc(),
                "utc": utc,
                "commands": [
                    "#status wip",
                    "#assign <handle>",
                    "#priority 1",
                    "#internal",
                    "#resolve",
                    "#close",
                ],
            }

    # -- agents: reports (web/reports.py) -----------------------------------------------------------
    async def reports(self, request: Request) -> Response:
        return await self._reports(request, csv=False)

    async def reports_csv(self, request: Request) -> Response:
        return await self._reports(request, csv=True)

    async def _reports(self, request: Request, *, csv: bool) -> Response:
        me = self.agent(request)
        if me is None:
            return self.to_signin(request)
        access = report_access(self.snapshot.team, me)
        if not access.allowed:
            return self.notice(request, "Reports are for group leads and admins", access.reason, 403)
        query = Query.of(request.query_params)
        try:
            query, report = await run_in_threadpool(
                build_reports, self.config, self.db, self.snapshot, access, query, now_utc()
            )
        except ReportRefused as exc:
            return self.notice(request, "Not your group", str(exc), 403)
        except ValueError as exc:
            if csv:
                return PlainTextResponse(f"{exc}\n", status_code=400)
            return self.page(
                request, "reports.html", 400, **self._nav(request, me), error=str(exc), query=query
            )
        if csv:
            name = f"report-{report.periods.since:%Y%m%d}-{report.periods.until:%Y%m%d}.csv"
            return Response(
                to_csv(report),
                media_type="text/csv; charset=utf-8",
                headers={"content-disposition": f'attachment; filename="{name}"'},
            )
        team = self.snapshot.team
        return self.page(
            request,
            "reports.html",
            **self._nav(request, me),
            **report_view(report, query, access, team, self.config),
        )

    def _nav(self, request: Request, me: str) -> dict[str, Any]:
        """What the agent pages' navigation needs."""
        return {
            "me": me,
            "csrf": self.csrf(request.cookies[SESSION_COOKIE]),
            "may_report": report_access(self.snapshot.team, me).allowed,
        }

    # -- attachments --------------------------------------------------------------------------------
    async def request_attachment(self, request: Request) -> Response:
        link = self.link(request.path_params["word"], Purpose.VIEW)
        if link.state is not LinkState.VALID:
            return self.refused(request, link)
        found = await run_in_threadpool(
            self._attachment,
            link.ticket_key,
            link,
            request.path_params["mid"],
            request.path_params["n"],
            None,
        )
        return found or self.notice(request, "Not found", "No such attachment on this request.", 404)

    async def agent_attachment(self, request: Request) -> Response:
        me = self.agent(request)
        if me is None:
            return self.to_signin(request)
        found = await run_in_threadpool(
            self._attachment,
            request.path_params["key"],
            None,
            request.path_params["mid"],
            request.path_params["n"],
            me,
        )
        return found or self.notice(request, "Not found", "No such attachment on this ticket.", 404)

    def _attachment(
        self, key: str, link: Link | None, mid: int, n: int, agent: str | None
    ) -> Response | None:
        """The bytes, always as a download (never rendered from our origin: an attached HTML
        page must not run as one of our pages). By a requester's `link`, or for the signed-in
        `agent` (who also gets internal notes' attachments) of a ticket they may see."""
        with self.db.reading() as s:
            repo = Repo(s)
            if link is not None:
                ticket = self._ticket(repo, link)
            elif agent is not None:
                ticket = self._shown(self.snapshot, agent, repo.ticket_by_key(key))
            else:
                ticket = None
            if ticket is None:
                return None
            m = s.get(Message, mid)
            if m is None or m.ticket_id != ticket.id or (m.kind != "public" and agent is None):
                return None
            atts = m.attachments or []
            if not 0 <= n < len(atts) or not atts[n].get("sha256"):
                return None
            entry = atts[n]
        try:
            data = self.blobs.get(entry["sha256"])
        except (OSError, BlobError):
            return None
        name = re.sub(r"[^\w.\- ]", "_", entry.get("filename") or "attachment")[:150] or "attachment"
        return Response(
            data,
            media_type="application/octet-stream",
            headers={
                "content-disposition": f"attachment; filename=\"{name}\"; filename*=UTF-8''{quote(entry.get('filename') or name)}"
            },
        )

    # -- operations --------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        problems = await run_in_threadpool(health_problems, self.db, self.alive)
        if problems:
            return PlainTextResponse("unhealthy\n" + "".join(f"- {p}\n" for p in problems), status_code=503)
        return PlainTextResponse("ok\n")

    async def metrics_page(self, request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, self.metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def home(self, request: Request) -> Response:
        return RedirectResponse("/agent", status_code=303)

    def asgi(self) -> Any:
        routes = [
            Route("/", self.home),
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics_page),
            Route("/r/{word}", self.request_page),
            Route("/r/{word}/a/{mid:int}/{n:int}", self.request_attachment),
            Route("/r/{word}/{action}", self.request_action, methods=["POST"]),
            Route("/rate/{word}", self.rate_page, methods=["GET"]),
            Route("/rate/{word}", self.rate_post, methods=["POST"]),
            Route("/u/{word}", self.unsubscribe_page, methods=["GET"]),
            Route("/u/{word}", self.unsubscribe_post, methods=["POST"]),
            Route("/agent", self.queues),
            Route("/agent/signin", self.signin_page, methods=["GET"]),
            Route("/agent/signin", self.signin_post, methods=["POST"]),
            Route("/agent/signin/{word}", self.signin_link, methods=["GET"]),
            Route("/agent/signin/{word}", self.signin_confirm, methods=["POST"]),
            Route("/agent/signout", self.signout, methods=["POST"]),
            Route("/agent/t/{key}", self.agent_ticket),
            Route("/agent/reports", self.reports),
            Route("/agent/reports.csv", self.reports_csv),
            Route("/agent/t/{key}/a/{mid:int}/{n:int}", self.agent_attachment),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        return SecurityHeaders(Starlette(routes=routes))


def _rating(value: str | None) -> int | None:
    return int(value) if value in ("1", "2", "3", "4", "5") else None


def _mac_of(word: str) -> str:
    """The MAC part of a checked link word (`<payload>.<mac>`): what a spent link is known by."""
    return word.rpartition(".")[2]


def _local(path: str | None) -> str:
    """Only our own agent pages as a place to go after sign-in (never another site: an open
    redirect would lend our name to a phishing link)."""
    if path and re.fullmatch(r"/agent(/[A-Za-z0-9_\-/]*)?", path):
        return path
    return ""
