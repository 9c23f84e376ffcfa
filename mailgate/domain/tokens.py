"""Reply tokens: a short signed word that says "issued for ticket SUP-20 to this address, for this use".

A token rides only in the plus-address of the Reply-To (support+sup-20-k3j...@) of the one mail
sent to that address, so a reply finds its ticket even with the subject mangled, and proves its
author: the MAC binds ticket, recipient address and purpose. It never rides in a Message-ID or
References (every header is public: STYLE.md habit 13), so it is never copied into anyone else's
mail. A reply token is not an unsubscribe token: each purpose has its own MAC, so a token seen in
one place cannot be replayed for another (DESIGN.md "Agents by mail", docs/security.md).

Stateless: nothing to store. Keys rotate: tokens made under the previous key are accepted while a
grace period runs, and recognised afterwards, so the sender can be told why they stopped working.
Pure: no clock, no database; the caller says which keys are live.
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass
from enum import StrEnum

TOKEN_RE = re.compile(r"^([a-z][a-z0-9]{0,15})-(\d{1,9})-([a-z2-7]{13})$")


class Purpose(StrEnum):
    """What a token may be used for. Part of the MAC: a token proves one purpose only."""

    REPLY = "reply"  # answer the ticket; for an agent, run commands
    UNSUBSCRIBE = "unsubscribe"  # support+<token>-off@: stop this ticket's mail to that address


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


def read_token(word: str) -> TokenClaim | None:
    """Parse a token; None if it is not one of ours in shape. Says nothing yet about who sent it."""
    m = TOKEN_RE.match(word.lower())
    if not m:
        return None
    return TokenClaim(m.group(1).upper(), int(m.group(2)), m.group(3))


def verify_token(secret: str, claim: TokenClaim, address: str, purpose: Purpose = Purpose.REPLY) -> bool:
    """True when the token was issued under `secret` to `address` for the ticket it names."""
    return TokenKeys(secret).verify(claim, address, purpose) is KeyState.CURRENT
