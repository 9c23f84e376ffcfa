"""Is this mail really from the agent it claims to be? Commands run only when it proves it.

Proof is either (DESIGN.md "Agents by mail"):
- a reply token issued to that agent's address for this ticket, found in a recipient
  plus-address or a referenced Message-ID (the MAC binds ticket and address), or
- an `Authentication-Results` header (RFC 8601) added by an MTA the admin trusts
  (`[security] trusted_authserv_ids`), showing dkim=pass for the agent's domain (header.d) or
  spf=pass for it (smtp.mailfrom). Only the first such header counts: a trusted MTA puts its own
  on top and must strip forged copies carrying its id, as RFC 8601 section 5 requires.
A From header alone proves nothing: it is what a forger writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailgate.domain.tokens import read_token, verify_token
from mailgate.mail.decode import plus_parts
from mailgate.mail.model import ParsedMail
from mailgate.mail.msgid import parse_msgids

_RESINFO = re.compile(r"\b(dkim|spf)\s*=\s*(\w+)([^;]*)", re.IGNORECASE)
_PROP = re.compile(r"\b(header\.d|header\.i|smtp\.mailfrom)\s*=\s*([^\s;]+)", re.IGNORECASE)


@dataclass(frozen=True)
class Proof:
    proven: bool
    how: str  # for the trace: "reply token in recipient ...", "dkim=pass for example.com by mx.example.com", or why not


def token_proof(
    secret: str, ticket_key: str, sender: str, recipients: Iterable[str], msgids: Sequence[str]
) -> Proof:
    for addr in recipients:
        _, tag = plus_parts(addr)
        if tag is not None:
            claim = read_token(secret, tag)
            if claim and claim.ticket_key == ticket_key and verify_token(secret, claim, sender):
                return Proof(True, f"reply token issued to {sender} in recipient {addr}")
    for mid in msgids:
        claim = read_token(secret, mid.split("@", 1)[0].split(".", 1)[0])
        if claim and claim.ticket_key == ticket_key and verify_token(secret, claim, sender):
            return Proof(True, f"reply token issued to {sender} in Message-ID <{mid}>")
    return Proof(False, "no reply token issued to this address for this ticket")


def auth_results_proof(mail: ParsedMail, sender: str, trusted: Iterable[str]) -> Proof:
    trusted = {t.lower() for t in trusted}
    if not trusted:
        return Proof(False, "no trusted Authentication-Results server configured")
    domain = sender.rsplit("@", 1)[-1].lower()
    for value in mail.header_all("Authentication-Results"):
        authserv = value.split(";", 1)[0].strip().split()[0].lower() if value.strip() else ""
        if authserv not in trusted:
            continue
        for method, result, props in _RESINFO.findall(value):
            if result.lower() != "pass":
                continue
            for prop, pval in _PROP.findall(props):
                pdom = pval.strip("<>").rsplit("@", 1)[-1].lower()
                if pdom == domain and (method.lower() == "dkim") == prop.lower().startswith("header"):
                    return Proof(True, f"{method.lower()}=pass for {domain} by {authserv}")
        return Proof(False, f"Authentication-Results by {authserv} shows no pass for {domain}")
    return Proof(False, "no Authentication-Results from a trusted server")


def prove(
    mail: ParsedMail,
    *,
    secret: str,
    ticket_key: str,
    recipients: Iterable[str],
    trusted_authserv_ids: Iterable[str],
) -> Proof:
    sender = mail.from_addr
    msgids = [*parse_msgids(mail.in_reply_to), *reversed(mail.references)]
    first = token_proof(secret, ticket_key, sender, recipients, msgids)
    if first.proven:
        return first
    second = auth_results_proof(mail, sender, trusted_authserv_ids)
    if second.proven:
        return second
    return Proof(False, f"{first.how}; {second.how}")
