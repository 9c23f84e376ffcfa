"""SMTP and LMTP intake on aiosmtpd: a thin edge that answers 250 only after the commit.

RCPT TO is checked against the desks (550 for an unknown mailbox); SIZE is advertised and
enforced (552); DATA is handed to the group committer and the reply waits for its commit. A
storage failure answers 451 so the sending MTA keeps the message and retries (RFC 5321 4.2.5).
No parsing or business logic runs on the event loop, and DATA is read in bulk (smtp_data.py).
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
from mailgate.intake.smtp_data import BulkData

log = logging.getLogger(__name__)

# Reply texts, named so tests and code speak of the same thing (aiosmtpd's testing/statuscodes habit).
OK = "250 2.0.0 OK: queued as {id}"
OK_DUPLICATE = "250 2.0.0 OK: already have it"
UNKNOWN_MAILBOX = "550 5.1.1 <{rcpt}>: no such mailbox here"
TOO_BIG = "552 5.3.4 Message too big for system"
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
        if len(raw) > self.config.smtp.max_message_size:
            return TOO_BIG
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


class _LMTP(BulkData, LMTP):
    """LMTP with the bulk DATA reader (BulkData itself is the SMTP server)."""


class _LMTPController(Controller):
    def factory(self) -> LMTP:
        return _LMTP(self.handler, **self.SMTP_kwargs)


class _SMTPController(Controller):
    def factory(self) -> SMTP:
        return BulkData(self.handler, **self.SMTP_kwargs)


def start_listener(config: Config, committer: GroupCommitter) -> tuple[Controller, IntakeHandler]:
    """Start the SMTP (or LMTP) listener in its own thread; returns the controller to stop it."""
    handler = IntakeHandler(config, committer, source="lmtp" if config.smtp.lmtp else "smtp")
    kwargs: dict[str, Any] = {
        "data_size_limit": config.smtp.max_message_size,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "ident": "mailgate ESMTP",
    }
    cls = _LMTPController if config.smtp.lmtp else _SMTPController
    controller = cls(handler, hostname=config.smtp.host, port=config.smtp.port, **kwargs)
    controller.start()
    log.info(
        "%s listening on %s:%d", "LMTP" if config.smtp.lmtp else "SMTP", config.smtp.host, controller.port
    )
    return controller, handler
