"""Attacks on the web side, each beside an honest control that the same path works for the
person it was made for (STYLE.md: security regressions get their own file).

Real mail through the real daemon makes every link; the attacks then change one thing each:
the MAC, the expiry, the purpose, the person, the CSRF field, the method, the address that asks
to sign in. Each asserts nothing changed and nothing leaked. Plain HTTP (no browser): these run
everywhere; tests/test_web_browser.py clicks the same links in Chromium.
"""

from __future__ import annotations

import re
import time

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, write_config
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from support.web import (
    CUSTOMER,
    TRIAGE,
    agent_says,
    csrf_of,
    http,
    link,
    one_click_url,
    open_ticket,
    origin,
    rcpt_of,
    resolve,
    sign_in,
)

from mailgate.domain.tokens import Purpose, make_link
from mailgate.store.models import Event, Participant, Ticket

SECRET = "test-secret"  # RunningDaemon's MAILGATE_SECRET


def word_of(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def ticket(daemon: RunningDaemon, key: str = "SUP-1") -> Ticket:
    return next(t for t in daemon.tickets() if t.key == key)


def notify_of(daemon: RunningDaemon, address: str) -> bool:
    with daemon.db.session() as s:
        return bool(
            s.execute(
                select(Participant.notify).where(Participant.ticket_id == 1, Participant.address == address)
            ).scalar_one()
        )


def signed(
    daemon: RunningDaemon, purpose: Purpose, key: str, who: str, *, secret: str = SECRET, ttl: int = 3600
) -> str:
    return make_link(secret, purpose, key, who, int(time.time()) + ttl)


# --- the request page -------------------------------------------------------------------------


def test_view_link_forged_altered_or_guessed_shows_nothing(daemon: RunningDaemon, sink: Sink) -> None:
    ack, _ = open_ticket(daemon, sink)
    url = link(ack, "View request:")
    honest = http("GET", url)
    assert (
        honest.status == 200
        and "Gift card balance" in honest.text
        and "My gift card shows zero" in honest.text
    )
    base = origin(daemon)
    payload, mac = word_of(url).split(".")
    attempts = {
        "altered MAC": f"{base}/r/{payload}.{mac[:-2]}{'AA' if mac[-2:] != 'AA' else 'BB'}",
        "made with another key": f"{base}/r/{signed(daemon, Purpose.VIEW, 'SUP-1', CUSTOMER, secret='guess')}",
        "the ticket key": f"{base}/r/SUP-1",
        "the key with a made-up MAC": f"{base}/r/{payload}.{'A' * 22}",
    }
    for what, bad in attempts.items():
        r = http("GET", bad)
        assert r.status == 404, what
        assert "Gift card balance" not in r.text and "My gift card shows zero" not in r.text, what


def test_expired_link_is_refused(daemon: RunningDaemon, sink: Sink) -> None:
    open_ticket(daemon, sink)
    base = origin(daemon)
    fresh = http("GET", f"{base}/r/{signed(daemon, Purpose.VIEW, 'SUP-1', CUSTOMER)}")
    assert fresh.status == 200 and "Gift card balance" in fresh.text  # control: same link, in time
    old = http("GET", f"{base}/r/{signed(daemon, Purpose.VIEW, 'SUP-1', CUSTOMER, ttl=-1)}")
    assert old.status == 410 and "expired" in old.text and "Gift card balance" not in old.text


def test_link_of_another_purpose_does_nothing(daemon: RunningDaemon, sink: Sink) -> None:
    ack, _ = open_ticket(daemon, sink)
    base = origin(daemon)
    view_word = word_of(link(ack, "View request:"))
    unsubscribe_word = word_of(one_click_url(ack))
    # the unsubscribe link shown in every header is no key to the conversation
    assert http("GET", f"{base}/r/{unsubscribe_word}").status == 404
    # and the view link is no one-click unsubscribe
    r = http("POST", f"{base}/u/{view_word}", {"List-Unsubscribe": "One-Click"})
    assert r.status == 404 and notify_of(daemon, CUSTOMER)
    # a sign-in or session word for the customer opens nothing either
    for purpose in (Purpose.SIGNIN, Purpose.SESSION, Purpose.RATE):
        assert http("GET", f"{base}/r/{signed(daemon, purpose, 'SUP-1', CUSTOMER)}").status == 404
    # control: the one-click URL does what it is for
    assert http("POST", f"{base}/u/{unsubscribe_word}", {"List-Unsubscribe": "One-Click"}).status == 200
    assert not notify_of(daemon, CUSTOMER)


def test_link_of_another_person_opens_only_their_own_view(daemon: RunningDaemon, sink: Sink) -> None:
    open_ticket(daemon, sink)
    base = origin(daemon)
    # a link correctly signed, but for someone who is not on SUP-1 (mallory's own link of
    # another ticket, with the ticket changed, fails the MAC: test above)
    stranger = http("GET", f"{base}/r/{signed(daemon, Purpose.VIEW, 'SUP-1', 'mallory@evil.example')}")
    assert stranger.status == 404 and "Gift card balance" not in stranger.text
    mine = http("GET", f"{base}/r/{signed(daemon, Purpose.VIEW, 'SUP-1', CUSTOMER)}")
    assert mine.status == 200


def test_internal_notes_never_reach_the_request_page(daemon: RunningDaemon, sink: Sink) -> None:
    ack, note_to = open_ticket(daemon, sink)
    agent_says(daemon, sink, note_to, "#internal\n\nCustomer is on the legacy plan, careful.")
    agent_says(daemon, sink, note_to, "We are sending a technician.")
    page = http("GET", link(ack, "View request:")).text
    assert "We are sending a technician." in page  # control: the public reply is there
    assert "legacy plan" not in page
    assert TRIAGE not in page  # the agent's address never came in mail to the customer either


def test_links_someone_forwarded_in_are_not_shown_to_the_others(daemon: RunningDaemon, sink: Sink) -> None:
    """The customer forwards our acknowledgement into the ticket (inline, as every client does):
    its View and unsubscribe links and its reply address were made for them alone. A colleague on
    the ticket reading the request page must not get them, or they could read, rate, reopen and
    turn off the customer's mail as the customer. Links of other sites stay; the customer's own
    page still shows their words as written."""
    colleague = "colleague@acme.com"
    raw = make_mail("Gift card balance", "My gift card shows zero.\n", sender=CUSTOMER, cc=colleague)
    daemon.send(raw, sender=CUSTOMER)
    ack, note = sink.wait_to(CUSTOMER, 1)[-1], sink.wait_to(TRIAGE, 1)[-1]
    view, off = link(ack, "View request:"), link(ack, "Turn off this request's notifications:")
    token = rcpt_of(ack).split("@")[0]
    forwarded = (
        "See the shop's page https://shop.example/r/ab12cd34ef56.gh78ij90kl12mn34op56qr too.\n\n"
        "---------- Forwarded message ---------\nFrom: Support <support@localhost>\n"
        f"Reply-To: <{token}@localhost>\nSubject: [SUP-1] Gift card balance\n\n{body_of(ack)}"
    )
    daemon.send(make_mail("Fwd: [SUP-1] Gift card balance", forwarded, sender=CUSTOMER), sender=CUSTOMER)
    agent_says(daemon, sink, note, "Your balance is back.")
    theirs = link(sink.wait_to(colleague, 1)[-1], "View request:")
    page = http("GET", theirs)
    assert page.status == 200 and "Forwarded message" in page.text and "Your balance is back." in page.text
    for secret in (word_of(view), word_of(off), token.split("+", 1)[1]):
        assert secret not in page.text
    assert "personal link, removed" in page.text
    assert "https://shop.example/r/ab12cd34ef56.gh78ij90kl12mn34op56qr" in page.text  # not ours: kept
    mine = http("GET", view).text  # control: the customer's own page shows what they wrote
    assert word_of(view) in mine and word_of(off) in mine


def test_attack_links_someone_forwarded_in_never_reach_anyone_else_by_mail(
    daemon: RunningDaemon, sink: Sink
) -> None:
    """The customer forwards our acknowledgement into the ticket, with a rating link of theirs:
    every mail that quotes their words to someone else — the agent's notification, and the
    agent's answer that pastes them, to the colleague on Cc — carries the words, not their View,
    rating or unsubscribe link nor their reply address (any of which lets the holder act as the
    customer). Control: the customer's own mail keeps theirs, and it works on the web; the
    colleague's own links in the colleague's mail work too."""
    colleague = "colleague@acme.com"
    daemon.send(make_mail("Gift card balance", "My gift card shows zero.\n", sender=CUSTOMER, cc=colleague))
    daemon.settle()
    ack = sink.wait_to(CUSTOMER, 1)[-1]
    sink.wait_to(TRIAGE, 1)
    view, off = link(ack, "View request:"), link(ack, "Turn off this request's notifications:")
    rate = f"{origin(daemon)}/rate/{signed(daemon, Purpose.RATE, 'SUP-1', CUSTOMER)}?n=5"
    token = rcpt_of(ack)  # support+<carla's reply token>@localhost
    secrets = {"view": word_of(view), "unsubscribe": word_of(off), "rate": word_of(rate), "token": token}
    forwarded = (
        f"Rating it already: {rate}\n\n---------- Forwarded message ---------\n"
        f"From: Support <support@localhost>\nReply-To: <{token}>\nSubject: [SUP-1] Gift card balance\n\n"
        f"{body_of(ack)}"
    )
    daemon.send(make_mail("Fwd: [SUP-1] Gift card balance", forwarded, sender=CUSTOMER), sender=CUSTOMER)
    daemon.settle()
    told = sink.wait_to(TRIAGE, 2)[-1]
    text = body_of(told)
    assert "Forwarded message" in text and "personal link, removed" in text, text
    assert not [what for what, word in secrets.items() if word in told.as_string()], text
    assert "support@localhost" in body_of(told)  # the reply address, its token gone
    # The agent answers and pastes what the customer sent: the colleague on Cc gets the answer.
    agent_says(daemon, sink, told, f"Carla sent us {view} and {token}; {rate} too. Fixed now.")
    theirs = sink.wait_to(colleague, 1)[-1]
    assert "Fixed now." in body_of(theirs)
    leaked = [what for what, word in secrets.items() if word in theirs.as_string()]
    assert not leaked, (leaked, body_of(theirs))
    assert http("GET", link(theirs, "View request:")).status == 200  # control: the colleague's own
    # Control: the customer's own copy of that answer keeps what was made for them, and it works.
    mine = sink.wait_to(CUSTOMER, 2)[-1]
    assert "Fixed now." in body_of(mine)
    pasted = (secrets["view"], secrets["rate"], token)
    assert all(word in body_of(mine) for word in pasted), body_of(mine)
    for url in (view, link(mine, "View request:")):
        page = http("GET", url)
        assert page.status == 200 and "Gift card balance" in page.text
    # The agent's ticket page shows the forward the same way the agent's mail did.
    page = http("GET", f"{origin(daemon)}/agent/t/SUP-1", headers=sign_in(daemon, sink, TRIAGE)).text
    assert "Forwarded message" in page and "personal link, removed" in page
    assert not [what for what, word in secrets.items() if word in page]


def test_post_without_csrf_or_from_another_site_changes_nothing(daemon: RunningDaemon, sink: Sink) -> None:
    _, note = open_ticket(daemon, sink)
    resolution = resolve(daemon, sink, note)
    url = link(resolution, "View request:")
    page = http("GET", url)
    token = csrf_of(page.text)
    base = origin(daemon)
    assert http("POST", f"{url}/rate", {"rating": "1"}).status == 403
    assert http("POST", f"{url}/rate", {"rating": "1", "csrf": "x" * 22}).status == 403
    cross = http("POST", f"{url}/rate", {"rating": "1", "csrf": token}, {"Origin": "https://evil.example"})
    assert cross.status == 403
    fetch_meta = http("POST", f"{url}/reopen", {"csrf": token}, {"Sec-Fetch-Site": "cross-site"})
    assert fetch_meta.status == 403
    # a CSRF field made for another link (the customer's rating link) does not fit this one
    other = csrf_of(http("GET", link(resolution, "4 Good")).text)
    assert http("POST", f"{url}/mute", {"csrf": other}, {"Origin": base}).status == 403
    t = ticket(daemon)
    assert t.rating is None and t.status == "resolved" and notify_of(daemon, CUSTOMER)
    # control: the page's own form, from the page's origin
    ok = http("POST", f"{url}/rate", {"rating": "5", "comment": "quick", "csrf": token}, {"Origin": base})
    assert ok.status == 303 and ticket(daemon).rating == 5


def test_get_of_a_rating_link_records_nothing(daemon: RunningDaemon, sink: Sink) -> None:
    _, note = open_ticket(daemon, sink)
    resolution = resolve(daemon, sink, note)
    one = link(resolution, "1 Bad")
    for _ in range(3):  # a link scanner, a preview, a second scanner
        r = http("GET", one)
        assert r.status == 200
        assert re.search(r'value="1" checked', r.text)
    daemon.settle()
    assert ticket(daemon).rating is None
    with daemon.db.session() as s:
        assert not s.execute(select(Event).where(Event.kind == "rating")).first()
    assert not [o for o in daemon.outbox() if o.kind == "rating"]
    # control: the POST from that page records it, and the agent hears of it
    token = csrf_of(r.text)
    done = http(
        "POST",
        one.split("?")[0],
        {"rating": "2", "comment": "slow", "csrf": token},
        {"Origin": origin(daemon)},
    )
    assert done.status == 200 and "2 out of 5" in done.text
    daemon.settle()
    t = ticket(daemon)
    assert (t.rating, t.rating_comment) == (2, "slow")
    [told] = [o for o in daemon.outbox() if o.kind == "rating"]
    assert told.recipients == [TRIAGE]
    # the same form sent again (a double click, a reload) is the same rating: thanked again,
    # recorded and told once
    again = http(
        "POST",
        one.split("?")[0],
        {"rating": "2", "comment": "slow", "csrf": token},
        {"Origin": origin(daemon)},
    )
    assert again.status == 200 and "2 out of 5" in again.text
    daemon.settle()
    with daemon.db.session() as s:
        assert len(s.execute(select(Event).where(Event.kind == "rating")).all()) == 1
    assert len([o for o in daemon.outbox() if o.kind == "rating"]) == 1
    # a changed mind is a new rating, told again
    http("POST", one.split("?")[0], {"rating": "4", "comment": "", "csrf": token}, {"Origin": origin(daemon)})
    daemon.settle()
    assert ticket(daemon).rating == 4
    assert len([o for o in daemon.outbox() if o.kind == "rating"]) == 2


def test_one_click_unsubscribe_as_a_mail_client_posts_it(daemon: RunningDaemon, sink: Sink) -> None:
    ack, note = open_ticket(daemon, sink)
    url = one_click_url(ack)
    # RFC 8058: a GET (a link scanner, a preview) changes nothing
    page = http("GET", url)
    assert page.status == 200 and notify_of(daemon, CUSTOMER)
    # a POST without the one-click body is not a mail client's: refused
    assert http("POST", url, {"something": "else"}).status == 400 and notify_of(daemon, CUSTOMER)
    # the mail client's POST: no cookie, no CSRF field, from no page of ours
    r = http("POST", url, {"List-Unsubscribe": "One-Click"})
    assert r.status == 200 and not notify_of(daemon, CUSTOMER)
    # and it holds: the agent's next public reply goes to nobody but... nobody
    before = len(daemon.outbox_to(CUSTOMER))
    agent_says(daemon, sink, note, "Still looking into it.")
    assert len(daemon.outbox_to(CUSTOMER)) == before


# --- agents -----------------------------------------------------------------------------------


def _signin(daemon: RunningDaemon, address: str, client: dict[str, str] | None = None) -> int:
    base = origin(daemon)
    page = http("GET", f"{base}/agent/signin")
    cookie = page.headers["set-cookie"].split(";")[0]
    r = http(
        "POST",
        f"{base}/agent/signin",
        {"address": address, "csrf": csrf_of(page.text)},
        {"Cookie": cookie, "Origin": base, **(client or {})},
    )
    return r.status


def test_stranger_cannot_sign_in_as_an_agent(daemon: RunningDaemon, sink: Sink) -> None:
    open_ticket(daemon, sink)
    base = origin(daemon)
    # no session: the agent page sends to sign-in, shows nothing
    r = http("GET", f"{base}/agent/t/SUP-1")
    assert r.status == 303 and r.headers["location"].startswith("/agent/signin")
    # a stranger asks for a link for their own address: told the same as an agent, mailed nothing
    assert _signin(daemon, "mallory@evil.example") == 200
    daemon.settle()
    assert not daemon.outbox_to("mallory@evil.example")
    # forged sessions: another key, another purpose (a requester's view link), a non-agent
    for cookie in (
        signed(daemon, Purpose.SESSION, "", TRIAGE, secret="guess"),
        signed(daemon, Purpose.VIEW, "SUP-1", TRIAGE),
        signed(daemon, Purpose.SIGNIN, "", TRIAGE),
        signed(daemon, Purpose.SESSION, "", CUSTOMER),
        signed(daemon, Purpose.SESSION, "", TRIAGE, ttl=-1),
    ):
        r = http("GET", f"{base}/agent/t/SUP-1", headers={"Cookie": f"mailgate_session={cookie}"})
        assert r.status == 303, cookie
    # the CSRF-less sign-in POST mails nobody
    assert http("POST", f"{base}/agent/signin", {"address": TRIAGE}).status == 403
    daemon.settle()
    assert not [o for o in daemon.outbox_to(TRIAGE) if o.kind == "signin"]
    # control: the agent asks, gets a link by mail; its GET signs nobody in, its POST does
    assert _signin(daemon, TRIAGE) == 200
    daemon.settle()
    mail = sink.wait_to(TRIAGE, 2)[-1]
    assert "Sign in" in str(mail["Subject"])
    url = re.search(r"Sign in: (\S+)", body_of(mail)).group(1)  # type: ignore[union-attr]
    shown = http("GET", url)
    assert shown.status == 200 and "set-cookie" not in shown.headers
    # a stranger who got hold of the page but not the link cannot use its form for another link
    confirm = http("POST", url, {"csrf": csrf_of(shown.text)}, {"Origin": base})
    assert confirm.status == 303
    session = confirm.headers["set-cookie"]
    assert "HttpOnly" in session and "SameSite=lax" in session.replace("Lax", "lax")
    page = http("GET", f"{base}/agent/t/SUP-1", headers={"Cookie": session.split(";")[0]})
    assert page.status == 200 and "Gift card balance" in page.text


def test_a_sign_in_link_signs_in_once(daemon: RunningDaemon, sink: Sink) -> None:
    """A magic link is single-use: a copy of it (a forwarded mail, a proxy log, the browser's
    history on a shared machine) signs nobody in once it was used. The page then says so and
    offers a new link; the browser it signed in simply goes on."""
    open_ticket(daemon, sink)
    base = origin(daemon)
    assert _signin(daemon, TRIAGE) == 200
    daemon.settle()
    mail = sink.wait_to(TRIAGE, 2)[-1]
    url = re.search(r"Sign in: (\S+)", body_of(mail)).group(1)  # type: ignore[union-attr]
    shown = http("GET", url)
    field = csrf_of(shown.text)
    # control: the first POST signs in
    first = http("POST", url, {"csrf": field}, {"Origin": base})
    assert first.status == 303 and "mailgate_session=" in first.headers["set-cookie"]
    session = first.headers["set-cookie"].split(";")[0]
    # attack: the same link, POSTed again from another browser (no session), signs nobody in
    again = http("POST", url, {"csrf": field}, {"Origin": base})
    assert again.status == 410 and "set-cookie" not in again.headers
    assert "already used" in again.text and 'href="/agent/signin"' in again.text
    # its GET no longer shows a sign-in button either
    later = http("GET", url)
    assert later.status == 410 and "already used" in later.text and "<button" not in later.text
    # the browser it signed in goes on to the agent pages (a second click, the back button)
    mine = http("GET", url, headers={"Cookie": session})
    assert mine.status == 303 and mine.headers["location"] == "/agent"
    # a new link, asked for from that page, works once too
    assert _signin(daemon, TRIAGE) == 200
    daemon.settle()
    mail = sink.wait_to(TRIAGE, 3)[-1]
    fresh = re.search(r"Sign in: (\S+)", body_of(mail)).group(1)  # type: ignore[union-attr]
    assert fresh != url
    ok = http("POST", fresh, {"csrf": csrf_of(http("GET", fresh).text)}, {"Origin": base})
    assert ok.status == 303 and "mailgate_session=" in ok.headers["set-cookie"]


def test_an_expired_sign_in_link_offers_a_new_one(daemon: RunningDaemon, sink: Sink) -> None:
    base = origin(daemon)
    old = signed(daemon, Purpose.SIGNIN, "", TRIAGE, ttl=-1)
    r = http("GET", f"{base}/agent/signin/{old}?next=/agent/t/SUP-1")
    assert r.status == 410 and "expired" in r.text
    assert 'href="/agent/signin?next=/agent/t/SUP-1"' in r.text


def test_sign_in_mails_are_rate_limited(daemon: RunningDaemon, sink: Sink) -> None:
    statuses = [_signin(daemon, TRIAGE) for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    daemon.settle()
    assert len([o for o in daemon.outbox_to(TRIAGE) if o.kind == "signin"]) == 5


def test_attachments_download_and_never_render(daemon: RunningDaemon, sink: Sink) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = CUSTOMER
    msg["To"] = "support@localhost"
    msg["Subject"] = "see the page"
    msg["Message-ID"] = "<att-1@acme.com>"
    msg.set_content("attached")
    msg.add_attachment(b"<script>alert(1)</script>", maintype="text", subtype="html", filename="x.html")
    daemon.send(msg.as_bytes())
    daemon.settle()
    ack = sink.wait_to(CUSTOMER, 1)[-1]
    page = http("GET", link(ack, "View request:"))
    href = re.search(r'href="(/r/[^"]+/a/\d+/\d+)"', page.text).group(1)  # type: ignore[union-attr]
    r = http("GET", origin(daemon) + href)
    assert r.status == 200 and r.text == "<script>alert(1)</script>"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith("attachment;")
    assert "default-src 'none'" in r.headers["content-security-policy"]
    # another ticket's message id under this link: nothing
    assert http("GET", re.sub(r"/a/\d+/", "/a/999/", origin(daemon) + href)).status == 404


def test_pages_carry_a_strict_policy_and_no_inline_script(daemon: RunningDaemon, sink: Sink) -> None:
    ack, _ = open_ticket(daemon, sink)
    r = http("GET", link(ack, "View request:"))
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp and "form-action 'self'" in csp
    assert r.headers["referrer-policy"] == "same-origin" and r.headers["x-frame-options"] == "DENY"
    assert (
        "<script" not in r.text
        and "style=" not in r.text
        and "http" not in r.text.split("<main>")[0].replace('name="viewport"', "")
    )


# --- operations -------------------------------------------------------------------------------


def test_healthz_and_metrics(daemon: RunningDaemon, sink: Sink) -> None:
    _, note = open_ticket(daemon, sink)
    resolve(daemon, sink, note)
    base = origin(daemon)
    assert http("GET", f"{base}/healthz").status == 200
    metrics = {m.name: m for m in text_string_to_metric_families(http("GET", f"{base}/metrics").text)}
    received = {
        s.labels["desk"]: s.value
        for s in metrics["mailgate_messages_received"].samples
        if s.name.endswith("_total")
    }
    assert received == {"SUP": 2}
    processed = {
        s.labels["disposition"]: s.value
        for s in metrics["mailgate_messages_processed"].samples
        if s.name.endswith("_total")
    }
    assert processed["ticket-created"] == 1
    sent = {
        s.labels["state"]: s.value for s in metrics["mailgate_outbox"].samples if s.name.endswith("_total")
    }
    assert sent["sent"] == len(daemon.outbox())
    assert "mailgate_processing_latency_seconds" in metrics and "mailgate_queue_oldest_age_seconds" in metrics
    # the pipeline stops: /healthz says so, with the reason
    worker = daemon.daemon.worker
    assert worker is not None
    worker.runner.stop()
    for t in worker.threads:
        if t.name == "pipeline":
            t.join(timeout=10)
    r = http("GET", f"{base}/healthz")
    assert r.status == 503 and "worker thread stopped" in r.text


def test_web_port_from_the_environment_and_off_switch(tmp_path, sink: Sink) -> None:  # type: ignore[no-untyped-def]
    from conftest import free_port

    from mailgate.config import load_config

    path = write_config(tmp_path / "desk", relay_port=sink.port)
    port = free_port()
    cfg = load_config(path, env={"MAILGATE_SECRET": SECRET, "MAILGATE_WEB_PORT": str(port)})
    assert cfg.web.port == port and cfg.web.url == f"http://127.0.0.1:{port}"
    text = path.read_text().replace("[web]\nport = 0", "[web]\nenabled = false")
    path.write_text(text)
    d = RunningDaemon(path)
    try:
        assert d.daemon.web is None
        d.send(__import__("conftest").make_mail())
        d.settle()
        ack = sink.wait_to(CUSTOMER, 1)[-1]
        # no web side: mail keeps its mailto links only
        assert str(ack["List-Unsubscribe"]).startswith("<mailto:") and "List-Unsubscribe-Post" not in ack
        assert "View request" not in body_of(ack)
    finally:
        d.stop()
    with pytest.raises(Exception, match="web.port"):
        path.write_text(text.replace("enabled = false", "port = 70000"))
        load_config(path, env={"MAILGATE_SECRET": SECRET})


# --- the signed link itself (pure) --------------------------------------------------------------


def test_signed_links_bind_purpose_person_ticket_expiry_and_key() -> None:
    from mailgate.domain.tokens import LinkState, TokenKeys, read_link

    now = 1_800_000_000
    word = make_link("k1", Purpose.VIEW, "sup-7", "Alice@Example.com", now + 60)
    ok = read_link(TokenKeys("k1"), word, Purpose.VIEW, now)
    assert (ok.state, ok.ticket_key, ok.address) == (LinkState.VALID, "SUP-7", "alice@example.com")
    assert read_link(TokenKeys("k1"), word, Purpose.RATE, now).state is LinkState.INVALID
    assert read_link(TokenKeys("k1"), word, Purpose.VIEW, now + 60).state is LinkState.EXPIRED
    assert read_link(TokenKeys("k2"), word, Purpose.VIEW, now).state is LinkState.INVALID
    # rotation: the old key in its grace period, never once retired
    assert read_link(TokenKeys("k2", old=("k1",)), word, Purpose.VIEW, now).state is LinkState.VALID
    assert read_link(TokenKeys("k2", retired=("k1",)), word, Purpose.VIEW, now).state is LinkState.INVALID
    # another person's or ticket's payload under the same MAC
    payload, mac = word.split(".")
    other = make_link("k1", Purpose.VIEW, "SUP-8", "alice@example.com", now + 60).split(".")[0]
    assert read_link(TokenKeys("k1"), f"{other}.{mac}", Purpose.VIEW, now).state is LinkState.INVALID
    for junk in ("", "x", f"{payload}", f"{payload}.{mac}x", "a" * 500 + "." + mac):
        assert read_link(TokenKeys("k1"), junk, Purpose.VIEW, now).state is LinkState.INVALID
    # a reply token's MAC under the same key is no link MAC (the "link:" prefix keeps them apart)
    with pytest.raises(ValueError):
        make_link("k1", Purpose.VIEW, "SUP-1", "a|b@example.com", now)


def test_without_proofs_blanks_only_our_links_and_tokens() -> None:
    from mailgate.domain.tokens import TokenKeys, make_token, without_proofs

    now = int(time.time())
    view = make_link(SECRET, Purpose.VIEW, "SUP-1", CUSTOMER, now + 60)
    old = make_link(SECRET, Purpose.RATE, "SUP-1", CUSTOMER, now - 60)  # expired: still theirs
    forged = make_link("guess", Purpose.VIEW, "SUP-1", CUSTOMER, now + 60)
    token = make_token(SECRET, "SUP-1", CUSTOMER)
    text = (
        f"a https://help.example/r/{view} b https://help.example/rate/{old}?n=4 c /r/{forged}\n"
        f"d support+{token}@localhost e support+{token}-off@localhost f support+billing@localhost"
        f" g bob+{token}@acme.com"
    )
    out = without_proofs(text, TokenKeys(SECRET), ["support@localhost"], now)
    assert view not in out and old not in out and token not in out.split(" g ")[0]
    assert f"/r/{forged}" in out  # not made by us: nothing of anyone's
    assert "d support@localhost e support@localhost f support+billing@localhost" in out
    assert f"bob+{token}@acme.com" in out  # not our address
    # For the person they were issued to (the recipient of a mail, the holder of a page) they stay;
    # anyone else's are blanked as before.
    bob = make_token(SECRET, "SUP-1", "bob@acme.com")
    both = f"{text} h support+{bob}@localhost"
    theirs = without_proofs(both, TokenKeys(SECRET), ["support@localhost"], now, keep_for=CUSTOMER.upper())
    assert view in theirs and old in theirs and f"support+{token}@localhost" in theirs
    assert f"support+{token}-off@localhost" not in theirs  # a reply token is no unsubscribe token
    assert "h support@localhost" in theirs and bob not in theirs


def test_the_html_mail_escapes_what_an_agent_wrote_and_keeps_its_line_breaks(
    daemon: RunningDaemon, sink: Sink
) -> None:
    """resolved.html is autoescaped: markup someone wrote arrives as text, and the template's own
    line breaks are markup (they were escaped too, and showed as "<br>" in the customer's mail)."""
    _, note = open_ticket(daemon, sink, subject="Gift card <script>alert(1)</script>")
    agent_says(daemon, sink, note, '#resolve\n\nFixed <img src=x onerror="alert(2)">.\nSecond line.')
    mail = sink.wait_to(CUSTOMER, 2)[-1]
    part = mail.get_body(preferencelist=("html",))
    assert part is not None
    html = part.get_content().replace("\r\n", "\n")
    assert "Fixed &lt;img src=x onerror=&#34;alert(2)&#34;&gt;.<br>\nSecond line." in html
    assert "<img" not in html and "<script" not in html and "&lt;br&gt;" not in html
