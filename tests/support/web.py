"""Helpers for the web side's tests: real mail through the real daemon, then the links in it.

`open_ticket` and `resolve` go by SMTP and wait on the relay sink; `http` is a plain HTTP client
that follows no redirect and raises on no status, so a test sees exactly what a browser or a
mail client would get.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from conftest import RunningDaemon, Sink, body_of, make_mail, reply

CUSTOMER = "customer1@acme.com"
TRIAGE = "angel@localhost"


def rcpt_of(msg: EmailMessage) -> str:
    return str(msg["Reply-To"].addresses[0].addr_spec)


def open_ticket(
    daemon: RunningDaemon, sink: Sink, subject: str = "Gift card balance"
) -> tuple[EmailMessage, EmailMessage]:
    """A new ticket by SMTP: (the requester's acknowledgement, the triage agent's notification)."""
    daemon.send(make_mail(subject, "My gift card shows zero.\nPlease help.\n"))
    daemon.settle()
    return sink.wait_to(CUSTOMER, 1)[-1], sink.wait_to(TRIAGE, 1)[-1]


def agent_says(
    daemon: RunningDaemon, sink: Sink, to_msg: EmailMessage, body: str, agent: str = TRIAGE
) -> None:
    """The agent answers a notification by mail (its reply token proves them)."""
    daemon.send(reply(to_msg, agent, body), sender=agent, rcpt=rcpt_of(to_msg))
    daemon.settle()


def resolve(daemon: RunningDaemon, sink: Sink, notification: EmailMessage) -> EmailMessage:
    """The triage agent resolves the ticket by mail; the requester's resolution mail."""
    before = len(sink.to(CUSTOMER))
    agent_says(daemon, sink, notification, "#resolve\n\nThe fire is out; new fuser fitted.")
    mail = sink.wait_to(CUSTOMER, before + 1)[-1]
    assert "How was our service" in body_of(mail)
    return mail


def link(mail: EmailMessage, label: str) -> str:
    """The URL after `label` in a mail's text part ("View request:", "5 Excellent", …)."""
    m = re.search(re.escape(label) + r"\s+(https?://\S+)", body_of(mail))
    assert m, f"no {label!r} link in:\n{body_of(mail)}"
    return m.group(1)


def one_click_url(mail: EmailMessage) -> str:
    """The https URL of List-Unsubscribe, as a mail client reads it (RFC 8058)."""
    header = str(mail["List-Unsubscribe"])
    assert str(mail["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    m = re.search(r"<(https?://[^>]+)>", header)
    assert m, header
    return m.group(1)


@dataclass
class Reply:
    status: int
    headers: Any
    text: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http(
    method: str, url: str, data: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> Reply:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with _OPENER.open(req, timeout=10) as resp:
            return Reply(resp.status, resp.headers, resp.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as err:
        return Reply(err.code, err.headers, err.read().decode("utf-8", "replace"))


def csrf_of(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, "no CSRF field on the page"
    return m.group(1)


def origin(daemon: RunningDaemon) -> str:
    return daemon.daemon.config.web.url


def sign_in(daemon: RunningDaemon, sink: Sink, address: str) -> dict[str, str]:
    """Sign `address` in as a person does: ask on the form, open the mailed link, press the
    button. Returns the request headers that carry the session (cookie, and our Origin)."""
    base = origin(daemon)
    before = len([m for m in sink.to(address) if "Sign in" in str(m["Subject"])])
    form = http("GET", f"{base}/agent/signin")
    pre = form.headers["set-cookie"].split(";")[0]
    asked = http(
        "POST",
        f"{base}/agent/signin",
        {"address": address, "csrf": csrf_of(form.text)},
        {"Cookie": pre, "Origin": base},
    )
    assert asked.status == 200
    daemon.settle()
    mails = [m for m in sink.wait_to(address, 1) if "Sign in" in str(m["Subject"])]
    assert len(mails) == before + 1
    url = re.search(r"Sign in: (\S+)", body_of(mails[-1])).group(1)  # type: ignore[union-attr]
    confirm = http("POST", url, {"csrf": csrf_of(http("GET", url).text)}, {"Origin": base})
    assert confirm.status == 303
    return {"Cookie": confirm.headers["set-cookie"].split(";")[0], "Origin": base}


def section(page: str, start: str, end: str) -> str:
    """The part of a page between the elements with ids `start` and `end` (a queue's list)."""
    return page.split(f'id="{start}"', 1)[1].split(f'id="{end}"', 1)[0]
