"""The pure rules behind who may act: roles and group access, the Authentication-Results reader,
token purposes and key states. The attacks through the daemon are in test_attacks_identity.py."""

from __future__ import annotations

import pytest

from mailgate.config import Security
from mailgate.domain.rulesfile import RulesInvalid, TomlFile
from mailgate.domain.team import may_change, may_see, parse_team
from mailgate.domain.tokens import KeyState, Purpose, TokenKeys, make_token, read_token
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
