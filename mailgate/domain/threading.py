"""Which ticket does a message belong to? An ordered chain of small finders, first hit wins.

1. a reply token of ours in a recipient plus-address (support+<token>@); our Message-IDs carry
   none (they are opaque ids we store: every header is public, STYLE.md habit 13)
2. In-Reply-To naming a message we stored or sent
3. References naming one (tolerating commas between ids, as Exchange and iOS send them)
4. a subject tag of this desk, [SUP-20] or (SUP-20), anywhere in the subject
5. a bare key of this desk, "RE: SUP-20", leading the subject after any reply/forward prefixes

Why a bare key only where it leads the subject: Zammad threads on its ticket hook anywhere in the
subject, but its hook ("Ticket#31001") reads like nothing else; RT needs its tag in brackets. Our
keys are short words ("SUP-1", like "COVID-19" or "ISO-9001") that people write in the middle of a
new request — "Same as SUP-1 but for printers" is a new ticket. Where the key leads the subject
("RE: SUP-1", "AW: SUP-1 – Drucker", "SUP-1: any news?") the mail is about that ticket, as a
client that dropped the brackets or a person typing the key writes it. Inside a word
("XSUP-1", "SUP-12a") or another desk's key is never a hit, and who may join the ticket is still
decided by the membership rules (pipeline/membership.py): a stranger's mail is held.

Each finder is a pure function; lookups of stored Message-IDs and ticket keys are passed in, so
this module never touches the database (RFC 5322 section 3.6.4 for the threading headers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mailgate.domain.tokens import TokenClaim, read_token
from mailgate.mail.decode import plus_parts
from mailgate.mail.msgid import parse_msgids

# [SUP-20], (SUP-20), [JIRA] (SUP-20), "SUP-20:" is not a tag: brackets or parentheses are required.
TAG_RE = re.compile(r"[\[(]\s*([A-Za-z][A-Za-z0-9]{0,15})-(\d{1,9})\s*[\])]")
_SPACES = re.compile(r"\s{2,}")
# A key with no brackets at the very start (of the subject without prefixes), ending at a word's
# end: "SUP-1", "SUP-1: x", "SUP-1 - x", not "SUP-12a", "SUP-1-2" or "SUP-1.5".
BARE_KEY_RE = re.compile(r"([A-Za-z][A-Za-z0-9]{0,15})-(\d{1,9})(?![\w-]|[.,]\d)")
# Reply and forward prefixes as clients write them: Re, RE, Fwd, FW, AW, WG (de), SV, VS (nordic),
# TR (fr), RIF (it), Antw (nl), RES/ENC (pt), R (it), Odp (pl), 回复/回覆/转发/答复 (zh), 返信 (ja),
# and the rest of Outlook's localised ones: RV (es forward), PD (pl), Doorst (nl), VL (fi),
# FS (is), BLS/TRS (id), ΑΠ/ΣΧΕΤ/ΠΡΘ (el), Vá/Tov/Továbbítás (hu), İLT (tr), ATB/YML (cy).
PREFIX_RE = re.compile(
    r"^\s*(?:(?:re|fwd?|aw|wg|sv|vs|tr|rif|antw|antwort|res|enc|r|odp|ynt|vb|ref|réf|"
    r"rv|pd|doorst|vl|fs|bls|trs|απ|σχετ|πρθ|vá|tov|továbbítás|ilt|atb|yml|"
    r"回复|回覆|转发|轉寄|答复|返信|転送)\s*(?:\[\d+\])?\s*[:：]\s*)+",
    re.IGNORECASE,
)


def bare_subject_key(subject: str) -> tuple[str, int] | None:
    """The key leading the subject after its reply/forward prefixes, as (KEY, number): "RE: SUP-1"
    and "SUP-1: printer" give ("SUP", 1); "Same as SUP-1" and "XSUP-1" give None."""
    m = BARE_KEY_RE.match(strip_prefixes(subject))
    return (m.group(1).upper(), int(m.group(2))) if m else None


def subject_tags(subject: str) -> list[tuple[str, int]]:
    """All ticket tags in a subject, in order, as (KEY, number)."""
    return [(key.upper(), int(num)) for key, num in TAG_RE.findall(subject or "")]


def strip_prefixes(subject: str) -> str:
    """The subject without any number of reply/forward prefixes in any language."""
    return PREFIX_RE.sub("", subject or "").strip()


def strip_tag(subject: str, ticket_key: str) -> str:
    """The subject without the tag of `ticket_key` (e.g. SUP-20), so it can be put back in front once."""
    if "[" not in subject and "(" not in subject:
        return subject.strip()
    wanted = ticket_key.upper()

    def drop(m: re.Match[str]) -> str:
        return " " if f"{m.group(1).upper()}-{int(m.group(2))}" == wanted else m.group(0)

    return _SPACES.sub(" ", TAG_RE.sub(drop, subject)).strip()


class Lookup(Protocol):
    """What the finders may ask of the store. Both return a ticket key such as "SUP-20" or None."""

    def key_for_message_id(self, message_id: str) -> str | None: ...

    def key_exists(self, key: str) -> bool: ...


@dataclass(frozen=True)
class ThreadHit:
    key: str
    finder: str  # which finder decided: token, in-reply-to, references, subject-tag
    detail: str  # the evidence, for `mailgate inbox show`
    claim: TokenClaim | None = None


def key_from_token(recipients: Sequence[str], desk_key: str) -> ThreadHit | None:
    """A token of ours in a recipient plus-address. Threading only: who may act on the ticket is
    decided later, by checking the token against the sender (pipeline/identity.py)."""
    for addr in recipients:
        _, tag = plus_parts(addr)
        if tag is not None:
            claim = read_token(tag)
            if claim and claim.desk_key == desk_key:
                return ThreadHit(claim.ticket_key, "token", f"reply token in recipient {addr}", claim)
    return None


def key_from_in_reply_to(in_reply_to: Iterable[str], lookup: Lookup) -> ThreadHit | None:
    for mid in in_reply_to:
        key = lookup.key_for_message_id(mid)
        if key:
            return ThreadHit(key, "in-reply-to", f"In-Reply-To <{mid}> is a message of {key}")
    return None


def key_from_references(references: Sequence[str], lookup: Lookup) -> ThreadHit | None:
    # Newest reference first: the end of the list is the message replied to (RFC 5322 3.6.4).
    for mid in reversed(references):
        key = lookup.key_for_message_id(mid)
        if key:
            return ThreadHit(key, "references", f"References <{mid}> is a message of {key}")
    return None


def key_from_subject_tag(subject: str, desk_key: str, lookup: Lookup) -> ThreadHit | None:
    for key, num in subject_tags(subject):
        if key != desk_key:
            continue
        candidate = f"{key}-{num}"
        if lookup.key_exists(candidate):
            return ThreadHit(candidate, "subject-tag", f"subject tag [{candidate}]")
    return None


def key_from_bare_subject_key(subject: str, desk_key: str, lookup: Lookup) -> ThreadHit | None:
    """A bare key of this desk leading the subject ("RE: SUP-1"), when that ticket exists."""
    found = bare_subject_key(subject)
    if found is None or found[0] != desk_key:
        return None
    candidate = f"{found[0]}-{found[1]}"
    if lookup.key_exists(candidate):
        return ThreadHit(candidate, "subject-key", f"subject starts with the key {candidate} (no brackets)")
    return None


Finder = Callable[[], ThreadHit | None]


def find_ticket(
    *,
    desk_key: str,
    subject: str,
    recipients: Sequence[str],
    in_reply_to: str | None,
    references: Sequence[str],
    lookup: Lookup,
) -> tuple[ThreadHit | None, list[str]]:
    """Run the finders in order. Returns the hit (or None) and a line per finder tried, for the trace."""
    irt = parse_msgids(in_reply_to) if in_reply_to else []
    refs = list(references)
    finders: list[tuple[str, Finder]] = [
        ("token", lambda: key_from_token(recipients, desk_key)),
        ("in-reply-to", lambda: key_from_in_reply_to(irt, lookup)),
        ("references", lambda: key_from_references(refs, lookup)),
        ("subject-tag", lambda: key_from_subject_tag(subject, desk_key, lookup)),
        ("subject-key", lambda: key_from_bare_subject_key(subject, desk_key, lookup)),
    ]
    tried: list[str] = []
    for name, finder in finders:
        hit = finder()
        if hit:
            tried.append(f"{name}: hit, {hit.detail}")
            return hit, tried
        tried.append(f"{name}: no match")
    return None, tried
