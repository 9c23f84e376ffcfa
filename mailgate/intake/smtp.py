"""SMTP and LMTP intake on aiosmtpd: a thin edge that answers 250 only after the commit.

RCPT TO is checked against the desks (550 for an unknown mailbox); DATA is handed to the group
committer and the reply waits for its commit. A storage failure answers 451 so the sending MTA
keeps the message and retries (RFC 5321 4.2.5). No parsing or business logic runs on the event
loop.

DATA itself is aiosmtpd's, configured through its public options only: SIZE is advertised and
enforced by `data_size_limit` (552 once the whole message was read, RFC 5321 4.2.5, keeping
nothing past the limit), over-long lines answer 500 (4.5.3.1.6), dot-unstuffing is RFC 5321
4.5.2. aiosmtpd reads DATA one line per `await`, which costs the event loop more for a large
attachment than a bulk reader did; mailgate no longer carries its own reader on aiosmtpd's
private stream, so a minor release of aiosmtpd cannot silently break receipt.

aiosmtpd keeps a message in memory until its end (as a list of lines, then joined: about three
times its size), and every session does so at once. Left alone, four clients each sending the
largest message allowed took the listener past 450 MB. `DataBudget` bounds it the way TCP
servers bound memory, by flow control rather than refusal: the session that has held bytes the
longest is always read on (so one message up to `max_message_size` always gets through, and no
set of sessions can wait on each other), and the others together hold at most `[smtp]
max_data_in_flight` bytes not yet committed (give or take one socket read each, up to 256 KB);
past that they are read no further (the client's send simply blocks) until a commit frees room.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from mailgate.config import Config
from mailgate.intake.accept import Envelope, GroupCommitter

log = logging.getLogger(__name__)

# Reply texts, named so tests and code speak of the same thing (aiosmtpd's testing/statuscodes habit).
OK = "250 2.0.0 OK: queued as {id}"
OK_DUPLICATE = "250 2.0.0 OK: already have it"
UNKNOWN_MAILBOX = "550 5.1.1 <{rcpt}>: no such mailbox here"
TOO_MUCH = "552 Error: Too much mail data"  # aiosmtpd's own reply to data_size_limit
TEMP_FAILURE = "451 4.3.0 Temporary failure storing the message, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"


class DataBudget:
    """The bytes the listener's sessions hold before their commit, and who waits for room.

    Used only on the listener's event loop (aiosmtpd calls `data_received`, the hooks and
    `connection_lost` there), so it needs no lock. A session's count grows with every byte it
    receives and drops to zero when its message is committed or refused, when it starts a new
    transaction (MAIL), and when it closes: a count never outlives the bytes aiosmtpd keeps."""

    def __init__(self, limit: int, per_session: int) -> None:
        self.limit = limit
        self.per_session = per_session  # aiosmtpd discards past data_size_limit: no more is held
        self.held: dict[_Budgeted, int] = {}  # insertion order: the first has waited longest
        self.waiting: set[_Budgeted] = set()

    @property
    def total(self) -> int:
        return sum(self.held.values())

    def over(self) -> bool:
        """The sessions after the first (which always goes on) hold more than the limit together."""
        head = next(iter(self.held), None)
        return self.total - (self.held[head] if head is not None else 0) > self.limit

    def received(self, server: _Budgeted, n: int) -> bool:
        """Count `n` bytes the session just read; True if it must wait (it is paused)."""
        self.held[server] = min(self.held.get(server, 0) + n, self.per_session)
        if server in self.waiting or (server is not next(iter(self.held)) and self.over()):
            self.waiting.add(server)
            server.pause()
            return True
        return False

    def release(self, server: _Budgeted) -> None:
        """The session holds nothing now; sessions that waited go on while there is room (the one
        that has waited longest always)."""
        if self.held.pop(server, None) is None:
            return
        self.waiting.discard(server)
        head, over = next(iter(self.held), None), self.over()
        for waiting in [s for s in self.held if s in self.waiting and (s is head or not over)]:
            self.waiting.discard(waiting)
            waiting.resume()


class _Budgeted(SMTP):
    """The SMTP/LMTP server with its reads counted against the listener's `DataBudget`. Only
    asyncio's public protocol methods are overridden: a session that must wait has its transport
    paused, and what it had read already is kept here, not given to aiosmtpd's stream reader —
    whose own flow control would resume the transport once it has drained."""

    budget: DataBudget
    withheld: list[bytes]

    def data_received(self, data: bytes) -> None:
        if self.budget.received(self, len(data)):
            self.withheld.append(data)
        else:
            super().data_received(data)

    def pause(self) -> None:
        if isinstance(self.transport, asyncio.ReadTransport) and self.transport.is_reading():
            self.transport.pause_reading()

    def resume(self) -> None:
        if isinstance(self.transport, asyncio.ReadTransport) and not self.transport.is_closing():
            self.transport.resume_reading()
        kept, self.withheld = self.withheld, []
        for data in kept:  # counted already
            super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        self.budget.release(self)
        self.withheld = []
        super().connection_lost(error)


class _BudgetedLMTP(_Budgeted, LMTP):
    pass


class IntakeHandler:
    """aiosmtpd handler: hooks for RCPT and DATA (aiosmtpd's handler protocol)."""

    def __init__(self, config: Config, committer: GroupCommitter, source: str = "smtp") -> None:
        self.config = config
        self.committer = committer
        self.source = source
        self.accepting = True
        self.budget = DataBudget(config.smtp.max_data_in_flight, config.smtp.max_message_size + 2**16)

    async def handle_MAIL(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: SmtpEnvelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        # A new transaction: whatever the session's last one held (a message refused as too
        # big, which reaches no DATA hook) is gone.
        if isinstance(server, _Budgeted):
            self.budget.release(server)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: SmtpSession,
        envelope: SmtpEnvelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not self.accepting:
            return SHUTTING_DOWN
        if self.config.desk_for(address) is None:
            return UNKNOWN_MAILBOX.format(rcpt=address.replace("\r", "").replace("\n", ""))
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        try:
            return await self._store(envelope)
        finally:
            if isinstance(server, _Budgeted):  # committed or refused: aiosmtpd lets go of it now
                self.budget.release(server)

    async def _store(self, envelope: SmtpEnvelope) -> str:
        if not self.accepting:
            return SHUTTING_DOWN
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        env = Envelope(
            mail_from=envelope.mail_from or "",  # "<>" for the null reverse path (Envelope normalises)
            rcpt_tos=tuple(r.lower() for r in envelope.rcpt_tos),
            source=self.source,
        )
        try:
            result = await asyncio.wrap_future(self.committer.submit(raw, env))
        except Exception as exc:  # noqa: BLE001 - the sender must retry, never lose it
            log.warning("temporary failure storing a message from %s: %s", env.mail_from, exc)
            if self.source == "lmtp":
                return "\r\n".join(TEMP_FAILURE for _ in env.rcpt_tos)
            return TEMP_FAILURE
        status = OK_DUPLICATE if not result.stored else OK.format(id=",".join(str(i) for i in result.stored))
        if self.source == "lmtp":
            # LMTP (RFC 2033 4.2): one reply per accepted recipient, in RCPT order.
            return "\r\n".join(status for _ in env.rcpt_tos)
        return status


class _Controller(Controller):
    """aiosmtpd's Controller serving the budgeted SMTP or LMTP server: `factory` is the documented
    place to choose the server."""

    def __init__(self, handler: IntakeHandler, *, lmtp: bool, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.lmtp = lmtp

    def factory(self) -> _Budgeted:
        server = (_BudgetedLMTP if self.lmtp else _Budgeted)(self.handler, **self.SMTP_kwargs)
        server.budget = self.handler.budget
        server.withheld = []
        return server


def start_listener(config: Config, committer: GroupCommitter) -> tuple[Controller, IntakeHandler]:
    """Start the SMTP (or LMTP) listener in its own thread; returns the controller to stop it."""
    handler = IntakeHandler(config, committer, source="lmtp" if config.smtp.lmtp else "smtp")
    kwargs: dict[str, Any] = {
        "data_size_limit": config.smtp.max_message_size,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "ident": "mailgate ESMTP",
    }
    controller = _Controller(
        handler, lmtp=config.smtp.lmtp, hostname=config.smtp.host, port=config.smtp.port, **kwargs
    )
    controller.start()
    log.info(
        "%s listening on %s:%d", "LMTP" if config.smtp.lmtp else "SMTP", config.smtp.host, controller.port
    )
    return controller, handler
