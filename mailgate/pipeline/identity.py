"""Is this mail really from the agent it claims to be? Commands run only when it proves it.

Proof is one of (DESIGN.md "Agents by mail", docs/security.md):
- a reply token issued to the sender's address for this ticket, in the plus-address the mail was
  sent to (envelope recipient, To or Cc): the one place that address's own reply carries it;
- an In-Reply-To naming a mail we sent to that same address about this ticket (the outbox row
  records whom each of our Message-IDs went to; the id itself is opaque and carries nothing);
- an `Authentication-Results` header (RFC 8601) added by the MTA in front of mailgate, only when
  the admin says one is there (`[security] trust_authentication_results = "relay"`): the topmost
  such header only, with a trusted authserv-id, showing dkim=pass for the agent's domain
  (header.d / header.i) or spf=pass for it (smtp.mailfrom). When mailgate's own listener is the
  MX, every such header came from outside and none is trusted (RFC 8601 section 5).
References prove nothing: they list ids of mail other people got. A From header alone proves
nothing: it is what a forger writes. This module decides; it writes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from mailgate.config import Config, Security
from mailgate.domain.tokens import KeyState, Purpose, TokenKeys, read_token
from mailgate.mail.decode import plus_parts
from mailgate.mail.model import ParsedMail
from mailgate.mail.msgid import parse_msgids

# resinfo (RFC 8601 section 2.2): method[/version] = result, then properties up to the next ";".
_RESINFO = re.compile(r"^\s*([a-z0-9-]+)\s*(?:/\s*\d+\s*)?=\s*([a-z]+)(.*)$", re.IGNORECASE | re.DOTALL)
_PROP = re.compile(r"\b(header\.d|header\.i|smtp\.mailfrom)\s*=\s*([^\s;]+)", re.IGNORECASE)
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")

# Who an outgoing Message-ID went to: (ticket id, recipients, kind) or None (Repo.sent_to).
SentTo = Callable[[str], "tuple[int | None, list[str], str] | None"]


@dataclass(frozen=True)
class Proof:
    proven: bool
    how: str  # for the trace and the agent: what proved it, or why nothing did
    retired_key: bool = False  # a real token of theirs, made under a key whose grace period ended


def token_keys(config: Config, today: date) -> TokenKeys:
    """The token keys live today: the current one, old ones until `old_secrets_until` (inclusive),
    after which they are only recognised, to tell the sender why their reply address stopped."""
    sec = config.security
    in_grace = not sec.old_secrets_until or today.isoformat() <= sec.old_secrets_until
    if in_grace:
        return TokenKeys(config.secret, old=sec.old_secrets)
    return TokenKeys(config.secret, retired=sec.old_secrets)


def token_proof(keys: TokenKeys, ticket_key: str, sender: str, recipients: Iterable[str]) -> Proof:
    """A reply token for this ticket, issued to `sender`, in a recipient plus-address."""
    retired = ""
    for addr in recipients:
        _, tag = plus_parts(addr)
        if tag is None:
            continue
        claim = read_token(tag)
        if claim is None or claim.ticket_key != ticket_key:
            continue
        state = keys.verify(claim, sender, Purpose.REPLY)
        if state in (KeyState.CURRENT, KeyState.OLD):
            old = " (under the previous key, in its grace period)" if state is KeyState.OLD else ""
            return Proof(True, f"reply token issued to {sender} in recipient {addr}{old}")
        if state is KeyState.RETIRED:
            retired = addr
    if retired:
        return Proof(
            False,
            f"the reply address {retired} was made under a token key that has since been retired; "
            "reply to a newer mail about this ticket",
            retired_key=True,
        )
    return Proof(False, "no reply token issued to this address for this ticket")


def in_reply_to_proof(mail: ParsedMail, ticket_id: int | None, sender: str, sent_to: SentTo) -> Proof:
    """In-Reply-To names a mail we sent to `sender` about this ticket."""
    who = sender.lower()
    for mid in parse_msgids(mail.in_reply_to):
        sent = sent_to(mid)
        if sent is None:
            continue
        tid, rcpts, _kind = sent
        if tid == ticket_id and who in (r.lower() for r in rcpts):
            return Proof(True, f"In-Reply-To <{mid}> is our mail to {sender}")
    return Proof(False, "In-Reply-To names no mail of ours to this address")


def authserv_id(value: str) -> tuple[str, str]:
    """(authserv-id, the rest after its ";") of one Authentication-Results value (RFC 8601 2.2):
    comments dropped, a version number after the id allowed, no space needed before ";"."""
    text = value
    while True:  # nested comments: innermost first
        stripped = _COMMENT.sub(" ", text)
        if stripped == text:
            break
        text = stripped
    head, _, rest = text.partition(";")
    words = head.split()
    return (words[0].lower() if words else "", rest)


def auth_results_proof(mail: ParsedMail, sender: str, security: Security) -> Proof:
    """dkim/spf pass for the sender's domain, in the topmost Authentication-Results, when an MTA
    in front is trusted to have added it."""
    if security.trust_authentication_results != "relay":
        return Proof(False, "Authentication-Results not trusted: mailgate's own listener is the MX")
    trusted = {t.lower() for t in security.trusted_authserv_ids}
    if not trusted:
        return Proof(False, "no trusted Authentication-Results server configured")
    headers = mail.header_all("Authentication-Results")
    if not headers:
        return Proof(False, "no Authentication-Results header")
    # RFC 8601 section 5: the MTA in front adds its header on top; anything below came with the mail.
    server, rest = authserv_id(headers[0])
    if server not in trusted:
        return Proof(False, f"the topmost Authentication-Results is by {server or '(none)'}, not trusted")
    domain = sender.rsplit("@", 1)[-1].lower()
    for resinfo in rest.split(";"):
        m = _RESINFO.match(resinfo)
        if not m or m.group(2).lower() != "pass":
            continue
        method = m.group(1).lower()
        if method not in ("dkim", "spf"):
            continue
        for prop, pval in _PROP.findall(m.group(3)):
            pdom = pval.strip("<>").rsplit("@", 1)[-1].lower()
            if pdom == domain and (method == "dkim") == prop.lower().startswith("header"):
                return Proof(True, f"{method}=pass for {domain} by {server}")
    return Proof(False, f"Authentication-Results by {server} shows no pass for {domain}")


def prove(
    mail: ParsedMail,
    *,
    keys: TokenKeys,
    ticket_key: str,
    ticket_id: int | None,
    recipients: Iterable[str],
    security: Security,
    sent_to: SentTo,
) -> Proof:
    sender = mail.from_addr
    token = token_proof(keys, ticket_key, sender, recipients)
    if token.proven:
        return token
    answer = in_reply_to_proof(mail, ticket_id, sender, sent_to)
    if answer.proven:
        return answer
    auth = auth_results_proof(mail, sender, security)
    if auth.proven:
        return auth
    if token.retired_key:
        return token  # the one thing the agent needs to hear
    return Proof(False, f"{token.how}; {answer.how}; {auth.how}")
