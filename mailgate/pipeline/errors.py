"""Expected outcomes that stop a message's processing, as one typed tree (STYLE.md habit 3).

Each becomes a recorded disposition on the inbox row; nothing here is a crash. Anything that is
not a ProcessingError is unexpected: the runner quarantines the message with its traceback.
"""

from __future__ import annotations

from mailgate.pipeline.outcomes import Disposition


class ProcessingError(Exception):
    """Stop here; record `disposition` and `reason`."""

    disposition = Disposition.REJECTED

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        # (subject, text) for the admin, queued by the runner with the disposition: a notice
        # queued inside the handler would be rolled back with the message's savepoint.
        self.admin_notice: tuple[str, str] | None = None


class Unattributable(ProcessingError):
    """Mail with nobody to attribute it to: empty, or without a From address. Not an expected
    outcome a desk can leave alone (it was accepted with a 250, and its sender may be waiting), so
    it is quarantined like a crash — `mailgate inbox failed` lists it and `status` counts it — but
    with its reason and no traceback."""

    disposition = Disposition.QUARANTINED


class LoopDetected(ProcessingError):
    disposition = Disposition.IGNORED_LOOP


class SystemMailAnswer(ProcessingError):
    """Mail to the no-reply system sender, or answering a system mail (an admin notice, a digest):
    never ticketed, so an auto-responding admin mailbox cannot open tickets or loop."""

    disposition = Disposition.IGNORED_SYSTEM_MAIL


class BounceUnmatched(ProcessingError):
    disposition = Disposition.BOUNCE_UNMATCHED


class FloodHeld(ProcessingError):
    disposition = Disposition.HELD_FLOOD


class AutoReplyHeld(ProcessingError):
    """An automatic answer (an out-of-office) that answers no ticket: noise, as RT and Zammad treat
    it, kept in the inbox with its reason instead of opening a ticket and paging triage."""

    disposition = Disposition.HELD_AUTO_REPLY
