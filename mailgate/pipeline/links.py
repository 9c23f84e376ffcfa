"""The web links a mail carries, made for its one recipient (mailgate/web serves them).

Each link is signed for one person, one ticket and one purpose, with an expiry
(domain/tokens.make_link): "View request", the five rating links of the resolution mail, the
RFC 8058 one-click unsubscribe URL, and for agents the ticket's agent page (no secret in that one:
the page asks for a signed-in agent). A mail goes to one recipient (pipeline/notify.py), so a link
issued to one person is never copied into another's mail (STYLE.md habit 13).

Pure of I/O: the caller gives the time. When the web side is off, there are no links and the
templates fall back to mail (reply, mailto).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

from mailgate.config import Config
from mailgate.domain.tokens import Purpose, make_link


class RatingLinks(Mapping[int, str]):
    """Rating n (1..5) -> its one-click link: GET shows the choice preselected, only POST records
    (mail gateways' link scanners open every GET)."""

    def __init__(self, base: str, word: str) -> None:
        self._base = base
        self._word = word

    def __getitem__(self, n: int) -> str:
        if n not in range(1, 6):
            raise KeyError(n)
        return f"{self._base}/rate/{self._word}?n={n}"

    def __iter__(self) -> Iterator[int]:
        return iter(range(1, 6))

    def __len__(self) -> int:
        return 5


@dataclass(frozen=True)
class MailLinks:
    """The links of one mail to one recipient about one ticket."""

    view_url: str
    unsubscribe_url: str
    rating_links: RatingLinks
    agent_url: str

    def as_context(self) -> dict[str, object]:
        return {
            "view_url": self.view_url,
            "unsubscribe_url": self.unsubscribe_url,
            "rating_links": self.rating_links,
            "agent_url": self.agent_url,
        }


# With the web side off the templates see empty links (their mail words fall back to replies and
# mailto): the renderer's StrictUndefined would refuse names that are simply absent.
NO_LINKS: dict[str, object] = {"view_url": "", "unsubscribe_url": "", "rating_links": {}, "agent_url": ""}


def mail_links(config: Config, ticket_key: str, address: str, now: float | None = None) -> MailLinks | None:
    """The signed links for `address` about `ticket_key`; None when the web side is off."""
    web = config.web
    if not web.enabled:
        return None
    base = web.url
    expires = int((time.time() if now is None else now) + timedelta(days=web.link_days).total_seconds())

    def word(purpose: Purpose) -> str:
        return make_link(config.secret, purpose, ticket_key, address, expires)

    return MailLinks(
        view_url=f"{base}/r/{word(Purpose.VIEW)}",
        unsubscribe_url=f"{base}/u/{word(Purpose.UNSUBSCRIBE)}",
        rating_links=RatingLinks(base, word(Purpose.RATE)),
        agent_url=f"{base}/agent/t/{quote(ticket_key.upper())}",
    )
