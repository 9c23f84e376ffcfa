"""Ways to hand a finished message to the world: an SMTP relay, or files for development.

A transport either returns (delivered), raises `TemporaryFailure` (try again later) or
`PermanentFailure` (a 5xx: record it against the recipient, never retry). It never decides
about retries itself: the sender does.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from mailgate.config import Relay


def _said(reply: bytes | str) -> str:
    """The relay's reply text as a person reads it in `mailgate outbox list` (not `b'...'`), with
    control characters shown escaped: a relay's words never reach a log or terminal raw."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class TemporaryFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


class Transport(Protocol):
    """Contract: deliver `raw` from `mail_from` to every address in `recipients`, or raise."""

    def send(self, mail_from: str, recipients: Sequence[str], raw: bytes, message_id: str) -> None: ...

    def close(self) -> None: ...


class FileTransport:
    """Writes each message as `<directory>/<message-id>.eml`, atomically (temp file + rename).

    The file name is derived from our own Message-ID (never from mail content), made filename-safe.
    Sending the same message twice overwrites the same file: idempotent.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def send(self, mail_from: str, recipients: Sequence[str], raw: bytes, message_id: str) -> None:
        safe = "".join(c if c.isalnum() or c in "-_.@" else "_" for c in message_id)[:200]
        final = self.directory / f"{safe}.eml"
        tmp = self.directory / f".{safe}.tmp"
        envelope = (
            f"X-Envelope-From: <{mail_from}>\r\nX-Envelope-To: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        )
        try:
            with open(tmp, "wb") as fh:
                fh.write(envelope.encode() + raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            raise TemporaryFailure(f"cannot write {final}: {exc}") from exc

    def close(self) -> None:
        pass


class SmtpTransport:
    """Relays through an SMTP server, keeping one connection open between messages."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        r = self.relay
        try:
            if r.ssl:
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    r.host, r.port, timeout=r.timeout, context=ssl.create_default_context()
                )
            else:
                conn = smtplib.SMTP(r.host, r.port, timeout=r.timeout)
                if r.starttls:
                    conn.starttls(context=ssl.create_default_context())
            if r.username:
                conn.login(r.username, r.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise TemporaryFailure(
                f"relay refused our login: {exc.smtp_code} {_said(exc.smtp_error)}"
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporaryFailure(f"cannot reach relay {r.host}:{r.port}: {exc}") from exc
        return conn

    def send(self, mail_from: str, recipients: Sequence[str], raw: bytes, message_id: str) -> None:
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = self._connect()
            try:
                refused = self._conn.sendmail(mail_from, list(recipients), raw)
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _ in exc.recipients.values()]
                detail = "; ".join(f"{a}: {c} {_said(m)}" for a, (c, m) in exc.recipients.items())
                if all(500 <= c < 600 for c in codes):
                    raise PermanentFailure(detail) from exc
                raise TemporaryFailure(detail) from exc
            except smtplib.SMTPResponseException as exc:
                self.close()
                if 500 <= exc.smtp_code < 600:
                    raise PermanentFailure(f"{exc.smtp_code} {_said(exc.smtp_error)}") from exc
                raise TemporaryFailure(f"{exc.smtp_code} {_said(exc.smtp_error)}") from exc
            except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
                self.close()
                if attempt == 2:
                    raise TemporaryFailure(f"relay connection lost: {exc}") from exc
                continue  # a kept-alive connection the relay closed: reconnect once
            if refused:
                raise PermanentFailure("; ".join(f"{a}: {c} {m!r}" for a, (c, m) in refused.items()))
            return

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._conn.quit()
            self._conn = None


def make_transport(relay: Relay) -> Transport:
    if relay.transport == "smtp":
        return SmtpTransport(relay)
    return FileTransport(relay.directory)
