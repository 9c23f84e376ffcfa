"""Reply tokens: a short signed word that says "issued for ticket SUP-20 to this address".

A token rides in the plus-address of Reply-To (support+sup-20-k3j...@) and at the front of the
Message-ID of every mail we send, so a reply finds its ticket even with the subject mangled and
the recipient's client dropping References. The MAC binds ticket and recipient address: a reply
proves its author only when the MAC verifies for the address it comes from, which is what lets
agents run commands by mail (DESIGN.md "Agents by mail"). Stateless: nothing to store or expire.
"""

from __future__ import annotations

import base64
import hmac
import re
from dataclasses import dataclass

TOKEN_RE = re.compile(r"^([a-z][a-z0-9]{0,15})-(\d{1,9})-([a-z2-7]{13})$")


@dataclass(frozen=True)
class TokenClaim:
    desk_key: str
    number: int
    mac: str

    @property
    def ticket_key(self) -> str:
        return f"{self.desk_key}-{self.number}"


def _mac(secret: str, ticket_key: str, address: str) -> str:
    """The first 65 bits of HMAC-SHA256, in base32: 13 characters come from the first 9 bytes,
    so only 10 are encoded (the stdlib's base32 is pure Python, and this runs for every mail)."""
    digest = hmac.digest(secret.encode(), f"{ticket_key.upper()}:{address.lower()}".encode(), "sha256")
    return base64.b32encode(digest[:10]).decode("ascii")[:13].lower()


def make_token(secret: str, ticket_key: str, address: str) -> str:
    """The token issued to `address` for `ticket_key` (e.g. "SUP-20")."""
    key, num = ticket_key.rsplit("-", 1)
    return f"{key.lower()}-{int(num)}-{_mac(secret, ticket_key, address)}"


def read_token(secret: str, word: str) -> TokenClaim | None:
    """Parse a token; None if it is not one of ours in shape. Says nothing yet about who sent it."""
    m = TOKEN_RE.match(word.lower())
    if not m:
        return None
    return TokenClaim(m.group(1).upper(), int(m.group(2)), m.group(3))


def verify_token(secret: str, claim: TokenClaim, address: str) -> bool:
    """True when the token was issued to `address` for the ticket it names."""
    return hmac.compare_digest(claim.mac, _mac(secret, claim.ticket_key, address))
