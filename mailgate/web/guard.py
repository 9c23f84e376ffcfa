"""The web side's defences, in one place: security headers on every response, the CSRF and
same-origin check of every POST, and the sign-in rate limit.

Why each exists is in docs/web.md; the attack tests (tests/test_web_attacks.py) try each one.
Must not: decide anything about tickets (app.py and pipeline/web_actions.py do).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from mailgate.domain.tokens import TokenKeys, check_form_token

# No inline script or style, nothing from another origin; forms post only back to us; no frames.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # A signed link is in the path: no page sends it on to another site in a Referer. Not
    # "no-referrer": with it, browsers send `Origin: null` on our own form POSTs.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SecurityHeaders:
    """ASGI middleware: the headers above on every response; pages are never cached (they carry
    signed links and people's conversations) unless the app said otherwise (static files)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers.extend(h for h in HEADERS if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def same_origin(headers: Any, base_url: str, host_url: str) -> bool:
    """A POST from a page of ours: the browser's Origin (sent on every cross-site POST) names us,
    and Fetch Metadata does not say cross-site. Without either header (curl, an old browser) the
    CSRF field still has to match."""
    if (headers.get("sec-fetch-site") or "").lower() == "cross-site":
        return False
    origin = headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    ours = {_origin(base_url), _origin(host_url)}
    return origin.rstrip("/") in ours


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def csrf_ok(keys: TokenKeys, bearer: str, field: str | None) -> bool:
    """The form's hidden field was made for this bearer (link word, session or pre-session)."""
    return check_form_token(keys, bearer, field or "")


class RateLimit:
    """At most `limit` events per key in a sliding hour. In memory, per process: a second mailgate
    process has its own count (each still caps what one process mails)."""

    def __init__(self, limit: int, window: float = 3600.0) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            if len(self._hits) > 10000:  # forget idle keys so a spray of addresses cannot grow it
                for k in [k for k, v in self._hits.items() if not v]:
                    del self._hits[k]
            return True
