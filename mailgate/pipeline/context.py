"""The typed context one message carries through the stages (instead of a dict of flags)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mailgate.config import Desk
from mailgate.domain.threading import ThreadHit
from mailgate.mail.model import ParsedMail
from mailgate.pipeline.membership import FanOut
from mailgate.pipeline.outcomes import Disposition
from mailgate.store.models import InboxItem, Ticket


@dataclass
class Context:
    item: InboxItem
    desk: Desk
    raw: bytes = b""  # the message as received (store.models.InboxRaw)
    mail: ParsedMail = field(default_factory=ParsedMail)
    auto_reason: str | None = None  # screen: why we must not auto-answer this
    hit: ThreadHit | None = None
    ticket: Ticket | None = None
    disposition: Disposition | None = None
    rejected: list[str] = field(default_factory=list)  # attachments over the limits, described
    stored: list[dict[str, object]] = field(default_factory=list)  # attachments kept (store_message)
    fanout: FanOut | None = None  # who this event mailed, and who the cap left out (handlers.common.tell)
    # The first inbox row of this desk with this Message-ID, when it is an earlier one than this
    # message's (looked up for the whole batch by the runner: inbox.first_copies).
    earlier_copy: int | None = None
    # Attachment bytes by digest, kept from parsing: the mail that forwards them to agents
    # need not read them back from the blob store (handlers.common.travelling).
    contents: dict[str, bytes] = field(default_factory=dict)
    stage: str = "start"
    # Steps {"stage", "decision"}; a stage's timing step also has "ms" (a number), see `timed`.
    trace: list[dict[str, Any]] = field(default_factory=list)

    def note(self, stage: str, decision: str) -> None:
        """Record what a stage decided and why: `mailgate inbox show` prints these lines."""
        self.trace.append({"stage": stage, "decision": decision})

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Time one stage and record it as a trace step with `ms` (also when the stage raises):
        /metrics builds its per-stage latency histograms from these steps (web/metrics.py), and
        `mailgate inbox show` prints them like any other decision."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            ms = (time.perf_counter() - t0) * 1000
            self.trace.append({"stage": stage, "decision": f"took {ms:.1f} ms", "ms": round(ms, 3)})

    @property
    def recipients(self) -> list[str]:
        return [*self.item.rcpt_tos, *self.mail.to_addrs, *self.mail.cc_addrs]
