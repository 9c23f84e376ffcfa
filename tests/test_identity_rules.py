"""The pure rules behind who may act: roles and group access, the Authentication-Results reader,
token purposes and key states. The attacks through the daemon are in test_attacks_identity.py."""

from __future__ import annotations

import pytest

from mailgate.config import Desk, Security
from mailgate.domain.rulesfile import RulesInvalid, TomlFile
from mailgate.domain.team import may_change, may_see, parse_team
from mailgate.domain.tokens import (
    KeyState,
    Purpose,
    TokenKeys,
    bounce_word,
    make_token,
    read_bounce_word,
    read_token,
    without_proofs,
)
from mailgate.mail.model import ParsedMail
from mailgate.pipeline.identity import auth_results_proof, authserv_id

TEAM = """
triage = "t@d.example"
[[agents]]
address = "t@d.example"
[[agents]]
address = "lead@d.example"
role = "lead"
[[agents]]
address = "ann@d.example"
[[agents]]
address = "net@d.example"
[[agents]]
address = "light@d.example"
role = "light"
[[agents]]
address = "boss@d.example"
role = "admin"
[[groups]]
name = "Billing"
members = ["lead@d.example", "ann@d.example", "light@d.example"]
lead = "lead@d.example"
[[groups]]
name = "Network"
members = ["net@d.example"]
"""


@pytest.fixture(scope="module")
def team():  # type: ignore[no-untyped-def]
    return parse_team(TomlFile.parse(TEAM, "team.toml"))


@pytest.mark.parametrize(
    ("who", "group", "assignee", "allowed"),
    [
        ("ann@d.example", "Billing", "lead@d.example", True),  # her group
        ("ann@d.example", "Network", None, False),  # another group's
        ("ann@d.example", "Network", "ann@d.example", True),  # assigned to her
        ("ann@d.example", None, None, True),  # no group owns it: triage
        ("lead@d.example", "Network", "ann@d.example", True),  # assigned to a member of his group
        ("ann@d.example", "Network", "net@d.example", False),
        ("net@d.example", "Network", "ann@d.example", True),
        ("light@d.example", "Billing", "light@d.example", False),  # notes only, even when assigned
        ("boss@d.example", "Network", "net@d.example", True),
        ("gone@d.example", "Billing", None, False),  # not on the team
    ],
)
def test_roles_reach(team, who: str, group: str | None, assignee: str | None, allowed: bool) -> None:  # type: ignore[no-untyped-def]
    access = may_change(team, who, "SUP-1", group, assignee)
    assert access.allowed is allowed, access.rule
    assert access.rule


@pytest.mark.parametrize(
    ("who", "group", "assignee", "shown"),
    [
        ("light@d.example", "Billing", None, True),  # a light agent sees their group's tickets
        ("light@d.example", "Network", "net@d.example", False),  # not another group's
        ("ann@d.example", "Network", "net@d.example", False),  # as may_change
        ("ann@d.example", "Billing", None, True),
        ("boss@d.example", "Network", None, True),
        ("gone@d.example", None, None, False),  # nobody outside the team is shown anything
    ],
)
def test_what_an_agent_is_shown_of_other_tickets(  # type: ignore[no-untyped-def]
    team, who: str, group: str | None, assignee: str | None, shown: bool
) -> None:
    """Similar tickets and search results (docs/security.md "Roles")."""
    assert may_see(team, who, "SUP-1", group, assignee) is shown


def test_a_refusal_names_the_rule(team) -> None:  # type: ignore[no-untyped-def]
    rule = may_change(team, "ann@d.example", "SUP-7", "Network", "net@d.example").rule
    assert rule == (
        "SUP-7 belongs to group 'Network' and is assigned to net@d.example; ann@d.example "
        "(role agent, groups: Billing) may change tickets of their groups and tickets assigned to them"
    )


def test_one_group_desk_needs_no_roles() -> None:
    one = parse_team(
        TomlFile.parse(
            'triage = "t@d.example"\n[[agents]]\naddress = "t@d.example"\n[[agents]]\naddress = "a@d.example"\n'
            '[[groups]]\nname = "Desk"\nmembers = ["a@d.example"]\n',
            "team.toml",
        )
    )
    assert may_change(one, "t@d.example", "SUP-1", "Desk", "a@d.example").allowed


def test_an_unknown_role_is_refused_with_its_line() -> None:
    bad = TEAM.replace('role = "lead"', 'role = "leader"')
    with pytest.raises(RulesInvalid) as exc:
        parse_team(TomlFile.parse(bad, "team.toml"))
    [err] = exc.value.errors
    assert err.line == bad.splitlines().index('role = "leader"') + 1
    assert "unknown role 'leader'" in str(err) and "lead" in str(err)


@pytest.mark.parametrize(
    ("value", "server"),
    [
        ("mx.example.com; dkim=pass", "mx.example.com"),
        ("MX.Example.COM 1; dkim=pass", "mx.example.com"),
        ("mx.example.com;dkim=pass", "mx.example.com"),
        ("(outer (nested) comment) mx.example.com (v) 1 ;dkim=pass", "mx.example.com"),
        ("; dkim=pass", ""),
    ],
)
def test_authserv_id_is_read_as_rfc8601_writes_it(value: str, server: str) -> None:
    assert authserv_id(value)[0] == server


def _mail(*values: str, sender: str = "a@d.example") -> ParsedMail:
    mail = ParsedMail()
    mail.from_addr = sender
    mail.headers = [("Authentication-Results", v) for v in values]
    return mail


RELAY = Security(trust_authentication_results="relay", trusted_authserv_ids=("mx.d.example",))


@pytest.mark.parametrize(
    ("values", "security", "proven"),
    [
        (["mx.d.example; dkim=pass header.d=d.example"], RELAY, True),
        (["mx.d.example; dkim/1=pass header.i=@d.example"], RELAY, True),
        (["mx.d.example; spf=pass smtp.mailfrom=a@d.example"], RELAY, True),
        (["mx.d.example; spf=pass header.d=d.example"], RELAY, False),  # spf proves by mailfrom only
        (["mx.d.example; dkim=pass header.d=other.example"], RELAY, False),
        (
            ["mx.d.example; dkim=fail header.d=d.example", "mx.d.example; dkim=pass header.d=d.example"],
            RELAY,
            False,
        ),
        (
            ["mx.d.example; dkim=pass header.d=d.example"],
            Security(trusted_authserv_ids=("mx.d.example",)),
            False,
        ),
        (
            ["mx.d.example; dkim=pass header.d=d.example"],
            Security(trust_authentication_results="relay"),
            False,
        ),
    ],
)
def test_authentication_results(values: list[str], security: Security, proven: bool) -> None:
    proof = auth_results_proof(_mail(*values), "a@d.example", security)
    assert proof.proven is proven, proof.how


def test_tokens_by_purpose_and_key() -> None:
    reply = read_token(make_token("k2", "SUP-3", "a@d.example"))
    off = read_token(make_token("k2", "SUP-3", "a@d.example", Purpose.UNSUBSCRIBE))
    old = read_token(make_token("k1", "SUP-3", "a@d.example"))
    assert reply and off and old
    keys = TokenKeys("k2", old=("k1",))
    assert keys.verify(reply, "a@d.example") is KeyState.CURRENT
    assert keys.verify(reply, "A@D.example") is KeyState.CURRENT  # addresses compare without case
    assert keys.verify(reply, "b@d.example") is None
    assert keys.verify(reply, "a@d.example", Purpose.UNSUBSCRIBE) is None
    assert keys.verify(off, "a@d.example", Purpose.UNSUBSCRIBE) is KeyState.CURRENT
    assert keys.verify(old, "a@d.example") is KeyState.OLD
    assert TokenKeys("k2", retired=("k1",)).verify(old, "a@d.example") is KeyState.RETIRED
    assert TokenKeys("k2").verify(old, "a@d.example") is None


def test_a_bounce_token_proves_one_address_for_bounces_only() -> None:
    """The envelope sender of a mail about a ticket (VERP): support+<token>-b@, bound to the one
    recipient and the purpose `bounce`; a reply token is no bounce token, nor the other way round."""
    word = bounce_word("k2", "SUP-3", "a@d.example")
    assert word.endswith("-b") and read_token(word) is None  # never read as a reply token
    claim = read_bounce_word(word)
    assert claim is not None and claim.ticket_key == "SUP-3"
    keys = TokenKeys("k2", old=("k1",))
    assert keys.verify(claim, "A@d.example", Purpose.BOUNCE) is KeyState.CURRENT
    assert keys.verify(claim, "b@d.example", Purpose.BOUNCE) is None
    assert keys.verify(claim, "a@d.example", Purpose.REPLY) is None
    reply = make_token("k2", "SUP-3", "a@d.example")
    assert keys.verify(read_bounce_word(f"{reply}-b"), "a@d.example", Purpose.BOUNCE) is None  # type: ignore[arg-type]
    assert read_bounce_word(reply) is None and read_bounce_word(f"{reply}-off") is None


def test_the_envelope_sender_keeps_the_local_part_within_64_octets() -> None:
    desk = Desk(address="support@desk.example", key="SUP")
    longest = bounce_word("k", "ABCDEFGHIJKLMNOP-999999999", "a@d.example")  # key 16, number 9 digits
    assert desk.envelope_sender(longest) == f"support+{longest}@desk.example"
    assert len(desk.envelope_sender(longest).split("@")[0]) <= 64
    wordy = Desk(address="customer-support-and-billing-questions@desk.example", key="SUP")
    assert wordy.envelope_sender(longest) == wordy.address  # too long: the plain address


def test_a_bounce_address_is_blanked_like_a_reply_address_in_text_shown_to_others() -> None:
    word = bounce_word("k2", "SUP-3", "a@d.example")
    text = f"Return-Path: <support+{word}@desk.example>"
    shown = without_proofs(text, TokenKeys("k2"), ["support@desk.example"], 0)
    assert shown == "Return-Path: <support@desk.example>"
