"""Opening an authenticated IMAP connection for one [[imap]] account, and naming what went wrong.

TLS is verified against the system CA store (plus `ca_file` when set): implicit TLS on 993
(RFC 8314 recommends it over STARTTLS), STARTTLS on 143 (RFC 3501 6.2.1), or none for a
loopback server. Login is LOGIN with a password from the environment, or XOAUTH2 (Gmail,
Microsoft 365) with an access token printed by `token_command` or read from `token_file` on
every connect — tokens live an hour, so they are never cached here.

This module only connects and authenticates; it never selects a folder or touches a message, and
never logs a password or token.
"""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailgate.config import ImapAccount

TOKEN_COMMAND_TIMEOUT = 30.0


class ImapError(Exception):
    """A connection or login problem, with a `kind` a caller can act on and a plain message.

    kind: host (name does not resolve), refused (nothing listens), timeout, certificate, tls,
    auth (server refused the login), token (could not get an OAuth token), network (other).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Where:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def ssl_context(account: ImapAccount) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=account.ca_file or None)


def oauth_token(account: ImapAccount) -> str:
    """The current XOAUTH2 access token: the stdout of token_command, or the token_file."""
    if account.token_command:
        try:
            done = subprocess.run(
                account.token_command,
                shell=True,  # an admin-written command line from config.toml, like a cron entry
                capture_output=True,
                text=True,
                timeout=TOKEN_COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            raise ImapError("token", f"token_command did not finish in {TOKEN_COMMAND_TIMEOUT:.0f}s") from exc
        if done.returncode != 0:
            detail = (done.stderr or "").strip().splitlines()[-1:] or ["no error output"]
            raise ImapError("token", f"token_command exited {done.returncode}: {detail[0]}")
        token = done.stdout.strip()
    else:
        try:
            token = Path(account.token_file).read_text().strip()
        except OSError as exc:
            raise ImapError("token", f"cannot read token_file {account.token_file}: {exc.strerror}") from exc
    if not token:
        raise ImapError("token", "the OAuth token is empty")
    return token


def classify(exc: BaseException, account: ImapAccount) -> ImapError:
    """Turn a low-level failure into an ImapError whose message an admin can act on."""
    where = Where(account.host, account.port)
    if isinstance(exc, ImapError):
        return exc
    if isinstance(exc, LoginError):
        text = (
            exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        )
        return ImapError("auth", f"login refused for {account.user} at {where}: {text}")
    if isinstance(exc, socket.gaierror):
        return ImapError("host", f"unknown host {account.host!r}: {exc.strerror}")
    if isinstance(exc, ConnectionRefusedError):
        return ImapError("refused", f"connection refused at {where}: nothing listens on that port")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ImapError(
            "certificate",
            f"the certificate of {where} is not trusted: {exc.verify_message} "
            "(set ca_file for a private CA; check host matches the certificate)",
        )
    if isinstance(exc, ssl.SSLError):
        return ImapError(
            "tls",
            f"TLS failed with {where}: {exc.reason or exc} (security = tls needs an imaps port, e.g. 993)",
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return ImapError("timeout", f"{where} did not answer in time")
    if isinstance(exc, OSError):
        return ImapError("network", f"cannot reach {where}: {exc.strerror or exc}")
    if isinstance(exc, imaplib.IMAP4.error):
        return ImapError("network", f"{where}: {exc}")
    return ImapError("network", f"{where}: {type(exc).__name__}: {exc}")


def connect(account: ImapAccount, timeout: float = 60.0) -> IMAPClient:
    """A logged-in client. Raises ImapError (classified) on any failure."""
    client: IMAPClient | None = None
    try:
        context = ssl_context(account)
        client = IMAPClient(
            account.host,
            port=account.port,
            ssl=account.security == "tls",
            ssl_context=context if account.security == "tls" else None,
            timeout=timeout,
        )
        if account.security == "starttls":
            client.starttls(context)
        if account.auth == "xoauth2":
            client.oauth2_login(account.user, oauth_token(account))
        else:
            client.login(account.user, account.password)
        return client
    except Exception as exc:  # noqa: BLE001 - every failure is classified for the caller
        if client is not None:
            with contextlib.suppress(Exception):  # already failing; the original error matters
                client.shutdown()
        raise classify(exc, account) from exc
