"""Reply tokens: a short signed word that says "issued for ticket SUP-20 to this address, for this use".

A token rides only in the plus-address of the Reply-To (support+sup-20-k3j...@) of the one mail
sent to that address, so a reply finds its ticket even with the subject mangled, and proves its
author: the MAC binds ticket, recipient address and purpose. It never rides in a Message-ID or
References (every header is public: STYLE.md habit 13), so it is never copied into anyone else's
mail. A reply token is not an unsubscribe token: each purpose has its own MAC, so a token seen in
one place cannot be replayed for another (DESIGN.md "Agents by mail", docs/security.md). The
bounce token (support+<token>-b@) rides in the envelope sender of that same mail, so the receiving
MTA writes it into that recipient's Return-Path and a delivery report for the mail comes back to
it: it proves the report is about that address (VERP).

Stateless: nothing to store. Keys rotate: tokens made under the previous key are accepted while a
grace period runs, and recognised afterwards, so the sender can be told why they stopped working.
Pure: no clock, no database; the caller says which keys are live.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

TOKEN_RE = re.compile(r"^([a-z][a-z0-9]{0,15})-(\d{1,9})-([a-z2-7]{13})$")
# The plus-tag suffixes that say what a token in an address is for: support+<token>-off@ turns a
# ticket's mail off (Purpose.UNSUBSCRIBE), support+<token>-b@ is the envelope sender a delivery
# report comes back to (Purpose.BOUNCE). A bare token is a reply token.
UNSUBSCRIBE_SUFFIX = "-off"
BOUNCE_SUFFIX = "-b"


class Purpose(StrEnum):
    """What a token may be used for. Part of the MAC: a token proves one purpose only."""

    REPLY = "reply"  # answer the ticket; for an agent, run commands
    UNSUBSCRIBE = "unsubscribe"  # support+<token>-off@ and the https one-click link (RFC 8058)
    VIEW = "view"  # the requester's request page (web): read, rate, reopen, mute
    RATE = "rate"  # a rating link of the resolution mail: a preselected form, POST records
    SIGNIN = "signin"  # an agent's magic sign-in link, minutes long
    SESSION = "session"  # an agent's signed-in browser (the session cookie)
    CSRF = "csrf"  # the hidden field of every form, bound to the link or session it came with
    BOUNCE = "bounce"  # support+<token>-b@, the envelope sender (VERP): a report sent there is real


class KeyState(StrEnum):
    """Which key a token verified under."""

    CURRENT = "current"
    OLD = "old"  # the previous key, inside its grace period
    RETIRED = "retired"  # the previous key after its grace period: refused, with a clear reply


@dataclass(frozen=True)
class TokenClaim:
    desk_key: str
    number: int
    mac: str

    @property
    def ticket_key(self) -> str:
        return f"{self.desk_key}-{self.number}"


@dataclass(frozen=True)
class TokenKeys:
    """The token key now, earlier keys still accepted (grace period), and earlier keys whose grace
    period ended (recognised only to say so)."""

    current: str
    old: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()

    def verify(self, claim: TokenClaim, address: str, purpose: Purpose = Purpose.REPLY) -> KeyState | None:
        """Which key made this token for `address` and `purpose`; None when none did (the token
        was issued to someone else, for something else, or is made up)."""
        for state, keys in (
            (KeyState.CURRENT, (self.current,)),
            (KeyState.OLD, self.old),
            (KeyState.RETIRED, self.retired),
        ):
            for key in keys:
                if key and hmac.compare_digest(claim.mac, _mac(key, claim.ticket_key, address, purpose)):
                    return state
        return None


def _mac(secret: str, ticket_key: str, address: str, purpose: Purpose = Purpose.REPLY) -> str:
    """The first 65 bits of HMAC-SHA256, in base32: 13 characters come from the first 9 bytes,
    so only 10 are encoded (the stdlib's base32 is pure Python, and this runs for every mail).
    A reply token's input has no purpose prefix, so tokens issued before purposes existed verify."""
    head = "" if purpose is Purpose.REPLY else f"{purpose.value}:"
    digest = hmac.digest(secret.encode(), f"{head}{ticket_key.upper()}:{address.lower()}".encode(), "sha256")
    return base64.b32encode(digest[:10]).decode("ascii")[:13].lower()


def make_token(secret: str, ticket_key: str, address: str, purpose: Purpose = Purpose.REPLY) -> str:
    """The token issued to `address` for `ticket_key` (e.g. "SUP-20") and `purpose`."""
    key, num = ticket_key.rsplit("-", 1)
    return f"{key.lower()}-{int(num)}-{_mac(secret, ticket_key, address, purpose)}"


def bounce_word(secret: str, ticket_key: str, address: str) -> str:
    """The plus-tag of the envelope sender (VERP) of one mail about `ticket_key` to `address`:
    a delivery report for that mail comes back to it, and only that proves `address` bounced.
    Every header is public, but this one is written by the receiving MTA into the recipient's own
    copy (Return-Path), never into anyone else's, and no reply carries it."""
    return f"{make_token(secret, ticket_key, address, Purpose.BOUNCE)}{BOUNCE_SUFFIX}"


def read_bounce_word(tag: str) -> TokenClaim | None:
    """The claim of a bounce plus-tag (`<token>-b`); None for any other tag."""
    if not tag.lower().endswith(BOUNCE_SUFFIX):
        return None
    return read_token(tag[: -len(BOUNCE_SUFFIX)])


def read_token(word: str) -> TokenClaim | None:
    """Parse a token; None if it is not one of ours in shape. Says nothing yet about who sent it."""
    m = TOKEN_RE.match(word.lower())
    if not m:
        return None
    return TokenClaim(m.group(1).upper(), int(m.group(2)), m.group(3))


def verify_token(secret: str, claim: TokenClaim, address: str, purpose: Purpose = Purpose.REPLY) -> bool:
    """True when the token was issued under `secret` to `address` for the ticket it names."""
    return TokenKeys(secret).verify(claim, address, purpose) is KeyState.CURRENT


# --- signed links (the web side) -------------------------------------------------------------------
# A reply token is short because it rides in an address; a link has room for more: the address it
# was issued to and an expiry are part of the signed payload, so a link forwarded, guessed or
# kept past its time proves nothing. `<payload>.<mac>`: payload is urlsafe base64 of
# "purpose|ticket key|address|expiry (unix seconds)", mac 128 bits of HMAC-SHA256 over "link:"
# and the payload (the prefix keeps link MACs apart from reply-token MACs under the same key).

LINK_RE = re.compile(r"^([A-Za-z0-9_-]{8,400})\.([A-Za-z0-9_-]{22})$")


class LinkState(StrEnum):
    """What checking a link found; anything but VALID is refused."""

    VALID = "valid"
    EXPIRED = "expired"  # signed by us, for this purpose, but past its time
    INVALID = "invalid"  # forged, altered, another purpose, a retired key, or not a link at all


@dataclass(frozen=True)
class Link:
    """A checked link: who it was issued to, about what, until when."""

    purpose: Purpose
    ticket_key: str  # "" for links about no ticket (sign-in, session)
    address: str
    expires: int
    state: LinkState


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _link_mac(secret: str, payload: str) -> str:
    return _b64(hmac.digest(secret.encode(), f"link:{payload}".encode(), "sha256")[:16])


def make_link(
    secret: str, purpose: Purpose, ticket_key: str, address: str, expires: int, nonce: str = ""
) -> str:
    """A signed link word for `address`, about `ticket_key`, good for `purpose` until `expires`.

    `nonce` makes each link of a single-use kind its own (two sign-in links asked for in one
    second would otherwise be one word, and spending one would spend both); it is signed with
    the rest, after the expiry, and only when given, so links made without one read as before."""
    if "|" in ticket_key or "|" in address or "|" in nonce:
        raise ValueError("a ticket key, address or nonce with '|' cannot be signed into a link")
    text = f"{purpose.value}|{ticket_key.upper()}|{address.lower()}|{int(expires)}"
    payload = _b64((f"{text}|{nonce}" if nonce else text).encode())
    return f"{payload}.{_link_mac(secret, payload)}"


def read_link(keys: TokenKeys, word: str, purpose: Purpose, now: int) -> Link:
    """Check a link word for `purpose` at time `now` under the live keys (current and old, never
    retired). The purpose is checked before anything is believed: a VIEW link is no RATE link."""
    bad = Link(purpose, "", "", 0, LinkState.INVALID)
    m = LINK_RE.match(word or "")
    if not m:
        return bad
    payload, mac = m.groups()
    if not any(
        key and hmac.compare_digest(mac, _link_mac(key, payload)) for key in (keys.current, *keys.old)
    ):
        return bad
    try:
        kind, ticket_key, address, expires, *_nonce = _unb64(payload).decode().split("|")
        when = int(expires)
    except ValueError:  # also binascii.Error and UnicodeDecodeError: a MAC we made never gets here
        return bad
    if kind != purpose.value:
        return bad
    state = LinkState.VALID if now < when else LinkState.EXPIRED
    return Link(purpose, ticket_key, address, when, state)


def form_token(secret: str, bearer: str) -> str:
    """The CSRF field of a form shown to whoever holds `bearer` (a link word or a session): a
    page of another site cannot read it, so it cannot make a browser POST with it."""
    return _link_mac(secret, f"{Purpose.CSRF.value}:{bearer}")


def check_form_token(keys: TokenKeys, bearer: str, field: str) -> bool:
    return bool(bearer) and any(
        key and hmac.compare_digest(field or "", form_token(key, bearer)) for key in (keys.current, *keys.old)
    )


# --- someone else's proofs, in text people wrote ---------------------------------------------------
# A person who forwards our mail into their ticket (inline, or quoting it without ">") hands on
# the links and the reply address we made for them alone. Shown to anyone else on the thread, the
# request page's View link would let them read, rate, reopen and turn off that person's mail; a
# reply address, answer as them. Every mail we send and the request page pass what they show
# through `without_proofs`, keeping only what was made for the person reading it.
_LINK_IN_TEXT = re.compile(
    r"/(r|u|rate|agent/signin)/([A-Za-z0-9_-]{8,400}\.[A-Za-z0-9_-]{22})(?![A-Za-z0-9_-])"
)
_LINK_PURPOSE = {
    "r": Purpose.VIEW,
    "u": Purpose.UNSUBSCRIBE,
    "rate": Purpose.RATE,
    "agent/signin": Purpose.SIGNIN,
}
# "+tag@domain"; the local part in front is read back from the "+" (`_local_before`). A pattern
# that began with the local part was tried at every letter of every word, and this runs over
# every mail we send (Notifier): one that begins with the "+" is a fast literal search.
_PLUS_IN_TEXT = re.compile(r"\+([A-Za-z0-9-]+)@([A-Za-z0-9.-]+)")
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%-")
_TAG_PURPOSE = ((UNSUBSCRIBE_SUFFIX, Purpose.UNSUBSCRIBE), (BOUNCE_SUFFIX, Purpose.BOUNCE))
REMOVED_LINK = "(a personal link, removed)"


def without_proofs(
    text: str, keys: TokenKeys, own_addresses: Iterable[str], now: int, keep_for: str | None = None
) -> str:
    """`text` with every signed link of ours (valid or expired) and every reply, unsubscribe or
    bounce token in one of our own plus-addresses blanked out: what one person's mail carried, for
    showing to another. Links of other sites and other plus-addresses are left as written.

    `keep_for`: the one person the text is for (the recipient of a mail, the holder of the
    request page's link). What was issued to that address is theirs already and stays, so their
    own mail keeps its working links and reply address, and their own forward reads as they wrote
    it; everyone else's is blanked. None blanks them all."""
    own = {a.lower() for a in own_addresses}
    reader = (keep_for or "").strip().lower()
    # A mail repeats its words (five rating links, the reply address in each mailto): each MAC
    # is checked once.
    links: dict[str, str] = {}
    theirs: dict[tuple[str, Purpose], bool] = {}

    def link(m: re.Match[str]) -> str:
        if m.group(0) not in links:
            found = read_link(keys, m.group(2), _LINK_PURPOSE[m.group(1)], now)
            keep = found.state is LinkState.INVALID or (reader and found.address == reader)
            links[m.group(0)] = m.group(0) if keep else f"/{m.group(1)}/{REMOVED_LINK}"
        return links[m.group(0)]

    def address(m: re.Match[str]) -> str:
        tag, domain = m.groups()
        local = _local_before(m.string, m.start())
        if not local or f"{local}@{domain}".lower() not in own:
            return m.group(0)
        word, purpose = tag, Purpose.REPLY
        for suffix, meant in _TAG_PURPOSE:
            if tag.lower().endswith(suffix):
                word, purpose = tag[: -len(suffix)], meant
        claim = read_token(word)
        if claim is None:
            return m.group(0)
        if reader and (word.lower(), purpose) not in theirs:
            theirs[word.lower(), purpose] = keys.verify(claim, reader, purpose) is not None
        if reader and theirs[word.lower(), purpose]:
            return m.group(0)
        return f"@{domain}"  # the local part before it stays as written

    return _PLUS_IN_TEXT.sub(address, _LINK_IN_TEXT.sub(link, text))


def _local_before(text: str, end: int) -> str:
    """The local part of an address that ends at `end` (the "+" of its tag) in `text`."""
    start = end
    while start > 0 and text[start - 1] in _LOCAL_CHARS:
        start -= 1
    return text[start:end]
