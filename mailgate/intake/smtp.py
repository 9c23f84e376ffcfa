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


class IntakeHandler:
    """aiosmtpd handler: hooks for RCPT and DATA (aiosmtpd's handler protocol)."""

    def __init__(self, config: Config, committer: GroupCommitter, source: str = "smtp") -> None:
        self.config = config
        self.committer = committer
        self.source = source
        self.accepting = True

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
        if not self.accepting:
            return SHUTTING_DOWN
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        env = Envelope(
            mail_from=(envelope.mail_from or "").lower(),
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


class _LMTPController(Controller):
    """aiosmtpd's Controller serving LMTP: `factory` is the documented place to choose the server."""

    def factory(self) -> LMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


def start_listener(config: Config, committer: GroupCommitter) -> tuple[Controller, IntakeHandler]:
    """Start the SMTP (or LMTP) listener in its own thread; returns the controller to stop it."""
    handler = IntakeHandler(config, committer, source="lmtp" if config.smtp.lmtp else "smtp")
    kwargs: dict[str, Any] = {
        "data_size_limit": config.smtp.max_message_size,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "ident": "mailgate ESMTP",
    }
    cls = _LMTPController if config.smtp.lmtp else Controller
    controller = cls(handler, hostname=config.smtp.host, port=config.smtp.port, **kwargs)
    controller.start()
    log.info(
        "%s listening on %s:%d", "LMTP" if config.smtp.lmtp else "SMTP", config.smtp.host, controller.port
    )
    return controller, handler
