"""Attacks on who may act: forged agents, forged Authentication-Results, copied tokens, robots
answering, system mail answered, roles, removed agents, retired keys (issue 18, identity half).

Every attack goes through the real daemon over SMTP and asserts that nothing changed on the
ticket and nothing leaked to the attacker; beside them, controls show the real agent's honest
reply still runs its commands. docs/security.md says what each defence stops.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, Sink, body_of, make_mail, reply, scenario_config

from mailgate.domain.tokens import UNSUBSCRIBE_SUFFIX, Purpose, make_token

DESK = "support@desk.example"
CUSTOMER = "carla@client.example"
ALICE = "alice@desk.example"  # Billing, its lead: new Billing tickets are hers
BOB = "bob@desk.example"  # Network
LENA = "lena@desk.example"  # Billing, a light agent
ROOT = "root@desk.example"  # admin
TRIAGE = "triage@desk.example"
ADMIN = "admin@example.com"  # admin_address in conftest.write_config
MALLORY = "mallory@evil.example"

TEAM = f"""
triage = "{TRIAGE}"
[[agents]]
address = "{TRIAGE}"
[[agents]]
address = "{ALICE}"
name = "Alice"
[[agents]]
address = "{BOB}"
name = "Bob"
[[agents]]
address = "{LENA}"
name = "Lena"
role = "light"
[[agents]]
address = "{ROOT}"
name = "Root"
role = "admin"
[[groups]]
name = "Billing"
members = ["{ALICE}", "{LENA}"]
lead = "{ALICE}"
[[groups]]
name = "Network"
members = ["{BOB}"]
"""

ROUTING = """
[[rules]]
name = "billing"
when.subject.words = ["invoice"]
then = { group = "Billing" }
"""

RELAY = '[security]\ntrust_authentication_results = "relay"\ntrusted_authserv_ids = ["mx.desk.example"]\n'
MX = '[security]\ntrusted_authserv_ids = ["mx.desk.example"]\n'  # ids set, but mailgate is the MX
GOOD_AR = "mx.desk.example; dkim=pass header.d=desk.example; spf=pass smtp.mailfrom=desk.example"


def make_desk(root: Path, sink: Sink, extra: str = "", env: dict[str, str] | None = None) -> RunningDaemon:
    cfg = scenario_config(
        root, relay_port=sink.port, desks=[(DESK, "SUP", "default")], team=TEAM, routing=ROUTING, extra=extra
    )
    return RunningDaemon(cfg, env=env)


@pytest.fixture
def desk(tmp_path: Path, sink: Sink) -> Iterator[RunningDaemon]:
    d = make_desk(tmp_path / "desk", sink)
    yield d
    d.stop()


def send(d: RunningDaemon, raw: bytes, sender: str, rcpt: str | list[str] = DESK) -> None:
    d.send(raw, sender=sender, rcpt=rcpt)
    d.settle()


def answer(d: RunningDaemon, to_msg: EmailMessage, sender: str, body: str, **kw: Any) -> None:
    """`sender` replies to `to_msg` with their mail client: to its Reply-To, threading headers kept."""
    send(d, reply(to_msg, sender, body, **kw), sender, str(to_msg["Reply-To"].addresses[0].addr_spec))


def open_ticket(d: RunningDaemon, sink: Sink) -> tuple[EmailMessage, EmailMessage]:
    """carla writes about an invoice: SUP-1 in Billing, assigned to alice. (ack, alice's mail)"""
    send(
        d,
        make_mail("Wrong invoice", "Invoice 2026-11 is twice the usual amount.\n", sender=CUSTOMER),
        CUSTOMER,
    )
    [ack] = sink.wait_to(CUSTOMER, 1)
    [new] = sink.wait_to(ALICE, 1)
    return ack, new


def snapshot(d: RunningDaemon) -> tuple[Any, ...]:
    t = d.tickets()[0]
    return (t.status, t.priority, t.assignee, t.group, tuple(t.tags or []), t.first_response_at)


def last(d: RunningDaemon) -> Any:
    return d.inbox()[-1]


def messages(d: RunningDaemon) -> list[Any]:
    from sqlalchemy import select

    from mailgate.store.models import Message

    with d.db.session() as s:
        return list(s.execute(select(Message).order_by(Message.id)).scalars())


def forged(subject: str, body: str, *, sender: str = ALICE, **kw: Any) -> bytes:
    return make_mail(subject, body, sender=sender, **kw)


def assert_nothing_ran(
    d: RunningDaemon, sink: Sink, before: tuple[Any, ...], customer_mails: int = 1
) -> None:
    """The ticket is as it was; the customer (here the attacker) got nothing new; the attacker's
    address at evil.example got nothing at all."""
    assert snapshot(d) == before
    assert len(sink.to(CUSTOMER)) == customer_mails
    assert sink.to(MALLORY) == []


# --- 1. tokens bound to one address, one purpose ------------------------------------------------


def test_control_the_real_agent_runs_commands_by_replying(desk: RunningDaemon, sink: Sink) -> None:
    _, new = open_ticket(desk, sink)
    answer(desk, new, ALICE, "#priority low\n#resolve\n\nCorrected, a credit note is on its way.")
    t = desk.tickets()[0]
    assert (t.status, t.priority) == ("resolved", "low") and t.first_response_at is not None
    assert "Corrected, a credit note" in body_of(sink.wait_to(CUSTOMER, 2)[-1])
    assert "reply token issued to alice@desk.example" in " ".join(s["decision"] for s in last(desk).trace)


def test_control_in_reply_to_alone_proves_the_address_it_was_sent_to(desk: RunningDaemon, sink: Sink) -> None:
    """alice writes to the plain desk address, answering her notification by In-Reply-To only."""
    _, new = open_ticket(desk, sink)
    send(
        desk,
        forged("Re: [SUP-1] Wrong invoice", "#priority high\n\nLooking.", in_reply_to=new["Message-ID"]),
        ALICE,
    )
    assert desk.tickets()[0].priority == "high"
    assert last(desk).disposition == "agent-reply"


def test_mail_to_the_requester_carries_no_identifier_issued_to_an_agent(
    desk: RunningDaemon, sink: Sink
) -> None:
    _, new = open_ticket(desk, sink)
    answer(desk, new, ALICE, "#pending\n\nWhich invoice number exactly?")
    to_alice = {m["Message-ID"] for m in sink.to(ALICE)}
    alice_token = make_token("test-secret", "SUP-1", ALICE)
    for m in sink.wait_to(CUSTOMER, 2):
        threading = f"{m['In-Reply-To']} {m['References']} {m['Message-ID']} {m['Reply-To']}"
        assert not any(mid in threading for mid in to_alice), threading
        assert alice_token not in m.as_string()
    # Message-IDs are opaque: no ticket key, no token
    for m in sink.messages:
        assert re.fullmatch(r"<mg\.[0-9a-f]{24}@desk\.example>", str(m["Message-ID"])), m["Message-ID"]


def test_attack_forged_from_with_copied_references(desk: RunningDaemon, sink: Sink) -> None:
    """carla copies everything her acknowledgement carries and writes as alice."""
    ack, _ = open_ticket(desk, sink)
    before = snapshot(desk)
    refs = f"{ack['References'] or ''} {ack['Message-ID']}".strip()
    send(
        desk,
        forged(
            "Re: [SUP-1] Wrong invoice",
            "#resolve\n#priority low\n\nRefund approved.",
            in_reply_to=ack["Message-ID"],
            references=refs,
        ),
        ALICE,
    )
    assert last(desk).disposition == "forged-agent"
    assert_nothing_ran(desk, sink, before)
    warned = [m for m in sink.to(ALICE) if "claimed to come from you" in body_of(m)]
    assert len(warned) == 1 and "none of them was run" in body_of(warned[0])


def test_attack_references_naming_the_agents_own_notification_prove_nothing(
    desk: RunningDaemon, sink: Sink
) -> None:
    """Whoever learnt the id of alice's notification: References are read by everyone, not proof."""
    _, new = open_ticket(desk, sink)
    before = snapshot(desk)
    send(desk, forged("Re: [SUP-1] Wrong invoice", "#resolve\n\nDone.", references=new["Message-ID"]), ALICE)
    assert last(desk).disposition == "forged-agent"
    assert_nothing_ran(desk, sink, before)


def test_attack_requesters_own_token_with_a_command(desk: RunningDaemon, sink: Sink) -> None:
    ack, _ = open_ticket(desk, sink)
    before = snapshot(desk)
    answer(desk, ack, CUSTOMER, "#resolve\n#priority critical\n\nPlease hurry.")
    assert snapshot(desk) == before
    assert last(desk).disposition == "reply"
    # ... and the same token under alice's name: a forwarded acknowledgement proves nothing of her
    answer(desk, ack, ALICE, "#resolve\n\nClosing.")
    assert last(desk).disposition == "forged-agent"
    assert_nothing_ran(desk, sink, before)


def test_attack_token_copied_from_mail_to_another_agent(desk: RunningDaemon, sink: Sink) -> None:
    """bob got alice's notification forwarded and answers it as himself."""
    _, new = open_ticket(desk, sink)
    before = snapshot(desk)
    answer(desk, new, BOB, "#assign bob\n#resolve\n\nMine now.")
    assert last(desk).disposition == "forged-agent"
    assert_nothing_ran(desk, sink, before)
    assert any("claimed to come from you" in body_of(m) for m in sink.to(BOB))


def test_attack_agents_token_used_from_another_address(desk: RunningDaemon, sink: Sink) -> None:
    _, new = open_ticket(desk, sink)
    before = snapshot(desk)
    answer(desk, new, MALLORY, "#resolve\n#priority low\n\nclose it")
    assert desk.inbox()[-1].disposition != "agent-reply"
    assert_nothing_ran(desk, sink, before)


def test_attack_reply_token_used_as_an_unsubscribe_token(desk: RunningDaemon, sink: Sink) -> None:
    """Purpose is part of the MAC: the reply token in alice's Reply-To does not unsubscribe her."""
    _, new = open_ticket(desk, sink)
    reply_addr = str(new["Reply-To"].addresses[0].addr_spec)
    off = reply_addr.replace("@", "-off@")
    send(desk, make_mail("unsubscribe", "", sender=ALICE, to=off), ALICE, off)
    assert last(desk).disposition == "rejected"
    # the real unsubscribe address in List-Unsubscribe works, and is not a reply token
    real_off = re.search(r"mailto:([^?>]+)", str(new["List-Unsubscribe"])).group(1)  # type: ignore[union-attr]
    assert real_off != off
    as_reply = real_off.replace("-off@", "@")
    before = snapshot(desk)
    send(desk, forged("Re: [SUP-1] Wrong invoice", "#resolve\n\nDone.", to=as_reply), ALICE, as_reply)
    assert last(desk).disposition == "forged-agent"
    assert snapshot(desk) == before
    send(desk, make_mail("unsubscribe", "", sender=ALICE, to=real_off), ALICE, real_off)
    assert last(desk).disposition == "unsubscribed"
    # The handler reads the notifier's own suffix (UNSUBSCRIBE_SUFFIX), case-blind as the token
    # itself is read: a client that upper-cases the address still unsubscribes.
    assert real_off.endswith(f"{UNSUBSCRIBE_SUFFIX}@{DESK.split('@')[1]}")
    shouted = real_off.replace(f"{UNSUBSCRIBE_SUFFIX}@", f"{UNSUBSCRIBE_SUFFIX.upper()}@")
    send(desk, make_mail("unsubscribe", "", sender=ALICE, to=shouted), ALICE, shouted)
    assert last(desk).disposition == "unsubscribed"


# --- 2. Authentication-Results (RFC 8601 section 5) ---------------------------------------------

AR_SPELLINGS = {
    "case": "MX.Desk.EXAMPLE; DKIM=pass header.d=desk.example",
    "version": "mx.desk.example 1; dkim=pass header.d=desk.example",
    "no-space": "mx.desk.example;dkim=pass header.d=desk.example",
    "comment": "(relay) mx.desk.example (v1);dkim=pass (good) header.d=desk.example",
}


@pytest.mark.parametrize("spelling", sorted(AR_SPELLINGS))
def test_attack_forged_authentication_results_when_mailgate_is_the_mx(
    tmp_path: Path, sink: Sink, spelling: str
) -> None:
    """Trusted ids set but no relay in front: every such header came with the mail; none counts."""
    d = make_desk(tmp_path / "mx", sink, extra=MX)
    try:
        open_ticket(d, sink)
        before = snapshot(d)
        headers = {"Authentication-Results": AR_SPELLINGS[spelling]}
        send(d, forged("Re: [SUP-1] Wrong invoice", "#resolve\n\nok", headers=headers), ALICE)
        assert last(d).disposition == "forged-agent"
        assert_nothing_ran(d, sink, before)
    finally:
        d.stop()


@pytest.mark.parametrize("spelling", sorted(AR_SPELLINGS))
def test_control_the_relays_header_in_every_spelling_proves_the_agent(
    tmp_path: Path, sink: Sink, spelling: str
) -> None:
    d = make_desk(tmp_path / "relay", sink, extra=RELAY)
    try:
        open_ticket(d, sink)
        headers = {"Authentication-Results": AR_SPELLINGS[spelling]}
        send(d, forged("Re: [SUP-1] Wrong invoice", "#priority low\n\nok", headers=headers), ALICE)
        assert d.tickets()[0].priority == "low"
    finally:
        d.stop()


def test_attack_forged_authentication_results_below_the_relays_own(tmp_path: Path, sink: Sink) -> None:
    """The relay put its own header on top (a fail); the sender's forged pass sits below it."""
    d = make_desk(tmp_path / "relay", sink, extra=RELAY)
    try:
        open_ticket(d, sink)
        before = snapshot(d)
        raw = forged(
            "Re: [SUP-1] Wrong invoice", "#resolve\n\nok", headers={"Authentication-Results": GOOD_AR}
        )
        top = b"Authentication-Results: mx.desk.example; dkim=fail header.d=desk.example; spf=softfail\r\n"
        send(d, top + raw, ALICE)
        assert last(d).disposition == "forged-agent"
        assert_nothing_ran(d, sink, before)
    finally:
        d.stop()


def test_attack_authentication_results_by_an_untrusted_server(tmp_path: Path, sink: Sink) -> None:
    d = make_desk(tmp_path / "relay", sink, extra=RELAY)
    try:
        open_ticket(d, sink)
        before = snapshot(d)
        headers = {"Authentication-Results": GOOD_AR.replace("mx.desk.example", "mx.evil.example")}
        send(d, forged("Re: [SUP-1] Wrong invoice", "#resolve\n\nok", headers=headers), ALICE)
        assert last(d).disposition == "forged-agent"
        assert_nothing_ran(d, sink, before)
    finally:
        d.stop()


def test_config_check_warns_when_trusted_ids_are_set_without_a_relay(tmp_path: Path, sink: Sink) -> None:
    import subprocess
    import sys

    for extra, warned in ((MX, True), (RELAY, False)):
        cfg = scenario_config(
            tmp_path / str(warned),
            relay_port=sink.port,
            desks=[(DESK, "SUP", "default")],
            team=TEAM,
            routing=ROUTING,
            extra=extra,
        )
        out = subprocess.run(
            [sys.executable, "-m", "mailgate", "--config", str(cfg), "config", "check"],
            capture_output=True,
            text=True,
            env={"MAILGATE_SECRET": "x", "PATH": "/usr/bin:/bin"},
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert ("warning:" in out.stdout and "trust_authentication_results" in out.stdout) is warned, (
            out.stdout
        )


# --- 3. commands where they do not belong --------------------------------------------------------


def test_attack_commands_in_quoted_text(desk: RunningDaemon, sink: Sink) -> None:
    """The real agent quotes a mail that has command lines in it: only the top of a reply counts."""
    _, new = open_ticket(desk, sink)
    before = snapshot(desk)
    body = "Looking into it.\n\n> #resolve\n> #priority low\n> #assign bob"
    answer(desk, new, ALICE, body)
    assert last(desk).disposition == "agent-reply"
    t = desk.tickets()[0]
    assert (t.status, t.priority, t.assignee) == before[:3]
    assert "#resolve" not in body_of(sink.wait_to(CUSTOMER, 2)[-1])


def test_attack_commands_in_an_html_only_part(desk: RunningDaemon, sink: Sink) -> None:
    ack, _ = open_ticket(desk, sink)
    before = snapshot(desk)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = CUSTOMER, str(ack["Reply-To"]), "Re: [SUP-1] Wrong invoice"
    msg["In-Reply-To"] = ack["Message-ID"]
    msg.set_content(
        "<p>#resolve</p><p>#priority low</p><div style='display:none'>#close</div>", subtype="html"
    )
    send(desk, msg.as_bytes(), CUSTOMER, str(ack["Reply-To"].addresses[0].addr_spec))
    assert snapshot(desk) == before and last(desk).disposition == "reply"
    # and the same HTML-only mail under alice's name, without her token: nothing
    msg.replace_header("From", ALICE)
    msg.replace_header("To", DESK)
    send(desk, msg.as_bytes(), ALICE)
    assert last(desk).disposition == "forged-agent"
    assert_nothing_ran(desk, sink, before)


def test_attack_commands_in_the_subject(desk: RunningDaemon, sink: Sink) -> None:
    _, new = open_ticket(desk, sink)
    before = snapshot(desk)
    raw = reply(new, ALICE, "Noted.").replace(b"Subject: Re: ", b"Subject: #resolve #priority low Re: ")
    send(desk, raw, ALICE, str(new["Reply-To"].addresses[0].addr_spec))
    assert last(desk).disposition == "agent-reply"  # alice, proven: her reply went out, no command ran
    t = desk.tickets()[0]
    assert (t.status, t.priority) == before[:2]


# --- 4. auto-replies, agents included -----------------------------------------------------------

OOO = {
    "outlook": ("Automatic reply: Re: [SUP-1] Wrong invoice", {}),
    "out-of-office": ("Out of Office: Re: [SUP-1] Wrong invoice", {}),
    "german": ("Abwesenheitsnotiz: Re: [SUP-1] Wrong invoice", {}),
    "french": ("Réponse automatique : Re: [SUP-1] Wrong invoice", {}),
    "spanish": ("Respuesta automática: Re: [SUP-1] Wrong invoice", {}),
    "italian": ("Risposta automatica: Re: [SUP-1] Wrong invoice", {}),
    "dutch": ("Automatisch antwoord: Re: [SUP-1] Wrong invoice", {}),
    "vacation": ("away from my mail", {}),
    "notes": ("Alice Example is out of the office.", {}),
    "x-autorespond": ("Re: [SUP-1] Wrong invoice", {"X-Autorespond": "yes"}),
    "x-autoreply": ("Re: [SUP-1] Wrong invoice", {"X-Autoreply": "yes"}),
    "x-autoresponder": ("Re: [SUP-1] Wrong invoice", {"X-Autoresponder": "vacation"}),
}


@pytest.mark.parametrize("kind", sorted(OOO))
def test_attack_agents_out_of_office_without_rfc3834_headers(
    desk: RunningDaemon, sink: Sink, kind: str
) -> None:
    """alice's own mail client answers her notification, through her token address: kept as an
    internal note, never mailed to the customer, no first response, no command run."""
    _, new = open_ticket(desk, sink)
    before = snapshot(desk)
    subject, headers = OOO[kind]
    raw = make_mail(
        subject,
        "#resolve\n\nI am away until Monday. For urgent matters call the desk.",
        sender=ALICE,
        to=str(new["Reply-To"]),
        in_reply_to=new["Message-ID"],
        headers=headers,
    )
    send(desk, raw, ALICE, str(new["Reply-To"].addresses[0].addr_spec))
    assert last(desk).disposition == "agent-auto-reply"
    assert_nothing_ran(desk, sink, before)
    assert desk.tickets()[0].first_response_at is None
    assert messages(desk)[-1].kind == "internal"


# --- 5. system mail -----------------------------------------------------------------------------


def test_attack_answering_a_system_mail(desk: RunningDaemon, sink: Sink, tmp_path: Path) -> None:
    """A refused rules edit mails the admin; the admin's auto-responder (no RFC 3834 header)
    answers twice: to the sender, and to the desk. Neither opens a ticket or mails anyone."""
    routing = tmp_path / "desk" / "rules" / "routing.toml"
    routing.write_text(ROUTING.replace('group = "Billing"', 'group = "Biling"'))
    send(desk, make_mail("hello", "x\n", sender=CUSTOMER), CUSTOMER)
    [notice] = sink.wait_to(ADMIN, 1)
    assert notice["From"].addresses[0].addr_spec == "mailgate-noreply@desk.example"
    assert notice["Auto-Submitted"] == "auto-generated"
    tickets, sent = len(desk.tickets()), len(sink.messages)
    ooo = make_mail(
        "Re: mailgate: a rules edit was refused",
        "I am on holiday.",
        sender=ADMIN,
        to="mailgate-noreply@desk.example",
        in_reply_to=notice["Message-ID"],
    )
    send(desk, ooo, ADMIN, "mailgate-noreply@desk.example")
    assert (last(desk).state, last(desk).disposition) == ("done", "ignored:system-mail")
    assert "system sender" in last(desk).reason
    to_desk = make_mail("Re: rules", "See my answer.", sender=ADMIN, in_reply_to=notice["Message-ID"])
    send(desk, to_desk, ADMIN)
    assert (last(desk).disposition, len(desk.tickets()), len(sink.messages)) == (
        "ignored:system-mail",
        tickets,
        sent,
    )
    assert "is a system mail" in last(desk).reason


# --- 6. roles and access ------------------------------------------------------------------------


def test_attack_refused_command_by_role(tmp_path: Path, sink: Sink) -> None:
    """bob (Network) proves who he is (the relay's DKIM pass) but SUP-1 is Billing's: refused,
    told the rule. lena is a light agent: notes only. root is an admin: anything."""
    d = make_desk(tmp_path / "relay", sink, extra=RELAY)
    try:
        ack, _ = open_ticket(d, sink)
        before = snapshot(d)
        ar = {"Authentication-Results": GOOD_AR}
        send(d, forged("Re: [SUP-1] Wrong invoice", "#resolve\n\nDone.", sender=BOB, headers=ar), BOB)
        assert last(d).disposition == "commands-refused"
        assert_nothing_ran(d, sink, before)
        told = body_of(sink.wait_to(BOB, 1)[-1])
        assert "belongs to group 'Billing'" in told and "tickets of their groups" in told
        # refused, bob did not join the ticket: the customer's next reply reaches alice, not him
        answer(d, ack, CUSTOMER, "Any news?")
        assert "Any news?" in body_of(sink.wait_to(ALICE, 2)[-1])
        assert len(sink.to(BOB)) == 1

        send(d, forged("Re: [SUP-1] Wrong invoice", "Hello customer.", sender=LENA, headers=ar), LENA)
        assert last(d).disposition == "commands-refused"
        assert "light agents write internal notes only" in body_of(sink.wait_to(LENA, 1)[-1])
        assert_nothing_ran(d, sink, before)
        # controls: lena's internal note, root's command
        send(
            d,
            forged("Re: [SUP-1] Wrong invoice", "#internal\n\nCustomer called too.", sender=LENA, headers=ar),
            LENA,
        )
        assert last(d).disposition == "agent-reply"
        send(
            d, forged("Re: [SUP-1] Wrong invoice", "#priority low\n#internal", sender=ROOT, headers=ar), ROOT
        )
        assert d.tickets()[0].priority == "low"
        assert len(sink.to(CUSTOMER)) == 1
    finally:
        d.stop()


def test_control_a_one_group_desk_without_roles_works_as_before(tmp_path: Path, sink: Sink) -> None:
    """No roles, one group, and an agent outside it (the triage person): everyone works everything."""
    team = (
        f'triage = "{TRIAGE}"\n[[agents]]\naddress = "{TRIAGE}"\n[[agents]]\naddress = "{ALICE}"\n'
        f'[[groups]]\nname = "Desk"\nmembers = ["{ALICE}"]\n'
    )
    cfg = scenario_config(
        tmp_path / "one",
        relay_port=sink.port,
        desks=[(DESK, "SUP", "default")],
        team=team,
        routing=ROUTING.replace("Billing", "Desk"),
    )
    d = RunningDaemon(cfg)
    try:
        open_ticket(d, sink)
        send(d, forged("Re: [SUP-1] x", "#priority low\n\nok", sender=TRIAGE, headers={}), TRIAGE)
        assert last(d).disposition == "forged-agent"  # no proof yet: triage got no mail
        new = sink.wait_to(ALICE, 1)[0]
        answer(d, new, ALICE, "#assign triage\n\nHanding over.")
        [assigned] = sink.wait_to(TRIAGE, 2)[-1:]
        answer(d, assigned, TRIAGE, "#priority low\n#resolve\n\nDone.")
        assert (d.tickets()[0].status, d.tickets()[0].priority) == ("resolved", "low")
    finally:
        d.stop()


def test_attack_token_of_an_agent_removed_from_team_toml(
    desk: RunningDaemon, sink: Sink, tmp_path: Path
) -> None:
    _, new = open_ticket(desk, sink)
    before = snapshot(desk)
    team_file = tmp_path / "desk" / "rules" / "team.toml"
    team_file.write_text(
        TEAM.replace('[[agents]]\naddress = "alice@desk.example"\nname = "Alice"\n', "").replace(
            f'members = ["{ALICE}", "{LENA}"]\nlead = "{ALICE}"', f'members = ["{LENA}"]'
        )
    )
    answer(desk, new, ALICE, "#resolve\n#priority low\n\nClosing this one on my way out.")
    assert ALICE not in desk.daemon.runner.rules.current.team.agents  # the edit was taken
    assert last(desk).disposition != "agent-reply"
    assert_nothing_ran(desk, sink, before)


# --- 7. key rotation ----------------------------------------------------------------------------


def _rotate(tmp_path: Path, sink: Sink, until: str) -> tuple[RunningDaemon, EmailMessage]:
    """SUP-1 opened under key "k1"; the desk restarted with key "k2", "k1" old until `until`."""
    root = tmp_path / "rot"
    d = make_desk(root, sink, env={"MAILGATE_SECRET": "k1"})
    _, new = open_ticket(d, sink)
    d.stop()
    extra = f'[security]\nold_secrets_until = "{until}"\n'
    cfg = scenario_config(
        root, relay_port=sink.port, desks=[(DESK, "SUP", "default")], team=TEAM, routing=ROUTING, extra=extra
    )
    return RunningDaemon(cfg, env={"MAILGATE_SECRET": "k2", "MAILGATE_SECRET_OLD": "k1"}), new


def test_control_old_key_accepted_during_its_grace_period(tmp_path: Path, sink: Sink) -> None:
    d, new = _rotate(tmp_path, sink, "2999-12-31")
    try:
        answer(d, new, ALICE, "#priority low\n\nok")
        assert d.tickets()[0].priority == "low"
        assert "previous key" in " ".join(s["decision"] for s in last(d).trace)
    finally:
        d.stop()


def test_attack_old_key_after_its_grace_period(tmp_path: Path, sink: Sink) -> None:
    d, new = _rotate(tmp_path, sink, "2020-01-01")
    try:
        before = snapshot(d)
        # whoever kept the retired key "k1" mints alice's token: refused, and alice told why
        minted = DESK.replace("@", f"+{make_token('k1', 'SUP-1', ALICE)}@")
        assert minted == str(new["Reply-To"].addresses[0].addr_spec)
        send(d, forged("Re: [SUP-1] Wrong invoice", "#resolve\n\nok", to=minted), ALICE, minted)
        assert last(d).disposition == "token-retired"
        assert_nothing_ran(d, sink, before)
        told = body_of(sink.wait_to(ALICE, 2)[-1])
        assert "retired" in told and "reply to a newer mail" in told
        # a token made under a key that was never ours: refused with the plain reason
        fake = DESK.replace("@", f"+{make_token('k0', 'SUP-1', ALICE)}@")
        send(d, forged("Re: [SUP-1] Wrong invoice", "#resolve", to=fake), ALICE, fake)
        assert last(d).disposition == "forged-agent"
        assert snapshot(d) == before
        # alice's own reply to her old notification still proves her: its In-Reply-To names a
        # mail we sent her (stored, not derived from any key); and the new key works
        answer(d, new, ALICE, "#priority low\n\nok")
        assert d.tickets()[0].priority == "low"
        answer(d, sink.to(ALICE)[-1], ALICE, "#priority high\n\nok")
        assert d.tickets()[0].priority == "high"
    finally:
        d.stop()


def test_unsubscribe_tokens_have_their_own_purpose() -> None:
    assert make_token("s", "SUP-1", ALICE) != make_token("s", "SUP-1", ALICE, Purpose.UNSUBSCRIBE)


def _participants(d: RunningDaemon, key: str) -> set[str]:
    from sqlalchemy import select

    from mailgate.store.models import Participant, Ticket

    with d.db.session() as s:
        tid = s.execute(select(Ticket.id).where(Ticket.key == key)).scalar_one()
        return set(s.execute(select(Participant.address).where(Participant.ticket_id == tid)).scalars())


def _ticket(d: RunningDaemon, key: str) -> Any:
    return next(t for t in d.tickets() if t.key == key)


def test_attack_merge_link_or_parent_reach_another_groups_ticket(tmp_path: Path, sink: Sink) -> None:
    """bob (Network) may change Network's tickets, not Billing's SUP-1. `#merge SUP-1` would put
    his ticket's people on SUP-1 (a watcher he just added would get SUP-1's mail and its request
    page), `#link SUP-1` writes on SUP-1, `#parent SUP-1` would pull SUP-1's broadcasts into his
    ticket: each names a ticket he may not change, so each is refused and nothing applied.
    Controls: the same commands on a ticket of his own group run, and an admin's run anywhere."""
    network = '\n[[rules]]\nname = "network"\nwhen.subject.words = ["vpn"]\nthen = { group = "Network" }\n'
    cfg = scenario_config(
        tmp_path / "roles",
        relay_port=sink.port,
        desks=[(DESK, "SUP", "default")],
        team=TEAM,
        routing=ROUTING + network,
        extra=RELAY,
    )
    d = RunningDaemon(cfg)
    try:
        open_ticket(d, sink)  # SUP-1, Billing
        for n in (2, 3):  # SUP-2 and SUP-3, Network
            send(
                d, make_mail("VPN down", f"Office {n} is offline.\n", sender=f"nat{n}@client.example"), "x@y"
            )
        assert [t.group for t in d.tickets()] == ["Billing", "Network", "Network"]
        billing = (_participants(d, "SUP-1"), _ticket(d, "SUP-1").fields, _ticket(d, "SUP-1").status)
        ar = {"Authentication-Results": GOOD_AR}
        for command in ("#merge SUP-1", "#link SUP-1", "#parent SUP-1"):
            body = f"#cc add {MALLORY}\n{command}\n\nDone."
            send(d, forged("Re: [SUP-2] VPN down", body, sender=BOB, headers=ar), BOB)
            assert last(d).disposition == "commands-refused", command
            assert "belongs to group 'Billing'" in body_of(sink.wait_to(BOB, 1)[-1])
            assert (
                _participants(d, "SUP-1"),
                _ticket(d, "SUP-1").fields,
                _ticket(d, "SUP-1").status,
            ) == billing
            sup2 = _ticket(d, "SUP-2")
            assert MALLORY not in _participants(d, "SUP-2") and not sup2.merged_into
            assert "parent" not in (sup2.fields or {}) and "links" not in (sup2.fields or {})
        assert sink.to(MALLORY) == []
        # controls: within his group bob links and merges; root (admin) merges into Billing's
        send(d, forged("Re: [SUP-2] VPN down", "#link SUP-3\n\nSame outage.", sender=BOB, headers=ar), BOB)
        assert last(d).disposition == "agent-reply"
        assert _ticket(d, "SUP-3").fields["links"] == ["SUP-2"]
        send(d, forged("Re: [SUP-3] VPN down", "#merge SUP-1\n#internal", sender=ROOT, headers=ar), ROOT)
        assert last(d).disposition == "agent-reply"
        assert _ticket(d, "SUP-3").merged_into == "SUP-1"
        assert "nat3@client.example" in _participants(d, "SUP-1")
    finally:
        d.stop()


def test_attack_another_spelling_of_an_agents_or_the_desks_address(desk: RunningDaemon, sink: Sink) -> None:
    """`"alice"@desk.example` and `alice@desk.example.` reach alice's mailbox: the same address,
    so a mail in that spelling claims to be alice (unproven: nothing runs, alice is told), and
    `"support"@desk.example.` is the desk's own (never answered, never a watcher). Read as other
    addresses, the first was a stranger's mail and the second opened a ticket whose
    acknowledgement went to the desk itself. Control: the customer's reply in a quoted spelling
    is hers."""
    ack, _ = open_ticket(desk, sink)
    before = snapshot(desk)
    sup1 = desk.tickets()[0].id
    for spelling in ('"alice"@desk.example', "alice@desk.example.", '"Alice"@DESK.example.'):
        send(desk, forged("Re: [SUP-1] Wrong invoice", "#resolve\n\nDone.", sender=spelling), MALLORY)
        item = last(desk)
        assert (item.disposition, item.ticket_id) == ("forged-agent", sup1), spelling
        assert_nothing_ran(desk, sink, before)
    assert len(sink.wait_to(ALICE, 4)) == 4  # the new-ticket notice, then told of each forgery
    own = '"support"@desk.example.'
    send(desk, forged("Hello", "Anyone there?", sender=own, cc='"support"@desk.example'), MALLORY)
    assert last(desk).disposition == "ignored:loop"
    assert len(desk.tickets()) == 1 and desk.outbox_to(DESK) == []
    # control: carla's client quoting her address is still carla, on her ticket
    raw = make_mail("Re: [SUP-1] Wrong invoice", "Any news?\n", sender='"carla"@client.example')
    send(desk, raw, CUSTOMER)
    assert last(desk).disposition not in ("held:stranger", "forged-agent")
    assert "Any news?" in body_of(sink.wait_to(ALICE, 5)[-1])
