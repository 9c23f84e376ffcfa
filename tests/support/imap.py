"""Talking to the test Dovecot (tests/dovecot.py) and building IMAP pollers, for the IMAP tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dovecot import Dovecot
from imapclient import IMAPClient
from sqlalchemy import func, select

from mailgate.config import Config
from mailgate.intake.accept import Acceptor
from mailgate.intake.imap import ImapPoller
from mailgate.store.db import Database

ENV = {"MAILGATE_SECRET": "test-secret", "ALICE_PW": "alicepw", "BOB_PW": "bobpw", "WRONG_PW": "nope"}


def imap_table(
    d: Dovecot, *, name: str = "alice", user: str = "alice", port: int = 0, security: str = "none", **kw: Any
) -> str:
    """One [[imap]] table for the test Dovecot; keyword arguments become options."""
    opts: dict[str, Any] = {
        "name": name,
        "desk": "SUP",
        "host": "127.0.0.1",
        "port": port or d.port,
        "security": security,
        "user": user,
        "password_env": f"{user.upper()}_PW",
        "poll_seconds": 2,  # IDLE's safety-net re-check, see ImapPoller._wait
        **kw,
    }
    lines = ["[[imap]]"]
    for k, v in opts.items():
        value = f'"{v}"' if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        lines.append(f"{k} = {value}")
    return "\n".join(lines) + "\n"


def client(d: Dovecot, user: str = "alice") -> IMAPClient:
    c = IMAPClient("127.0.0.1", d.port, ssl=False, timeout=10)
    c.login(user, f"{user}pw")
    return c


def append(
    d: Dovecot,
    *mails: bytes,
    folder: str = "INBOX",
    flags: tuple[bytes, ...] = (),
    when: datetime | None = None,
    user: str = "alice",
) -> None:
    with client(d, user) as c:
        for raw in mails:
            c.append(folder, raw, flags=flags, msg_time=when)


def poller(config: Config, db: Database, name: str = "alice", **kw: Any) -> ImapPoller:
    account = next(a for a in config.imap if a.name == name)
    return ImapPoller(account, db, Acceptor(db, config), desk_address="support@localhost", **kw)


def count(db: Database, model: Any) -> int:
    with db.session() as s:
        return s.execute(select(func.count()).select_from(model)).scalar_one()
