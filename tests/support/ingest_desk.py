"""A fresh desk fed one message at a time by the installed `mailgate ingest --direct` (the console
script, in a child process), for tests of how real clients' and relays' mail is read: one agent,
Lena, leads the only group and triages; no routing rules."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from conftest import write_config
from sqlalchemy import select

from mailgate.config import load_config
from mailgate.store.db import Database
from mailgate.store.models import InboxItem, Message, OutboxItem, Ticket

MAILGATE = Path(sys.executable).parent / "mailgate"  # the console script pip installed
TEAM = """
triage = "lead@desk.example"
[[agents]]
address = "lead@desk.example"
name = "Lena Lead"
[[groups]]
name = "Helpdesk"
members = ["lead@desk.example"]
lead = "lead@desk.example"
"""


class IngestDesk:
    def __init__(self, root: Path, address: str = "support@localhost", aliases: Sequence[str] = ()) -> None:
        self.address = address
        self.cfg = write_config(root)
        if address != "support@localhost" or aliases:
            listed = ", ".join(f'"{a}"' for a in aliases)
            text = self.cfg.read_text().replace(
                'address = "support@localhost"', f'address = "{address}"\naliases = [{listed}]'
            )
            self.cfg.write_text(text)
        (root / "rules" / "team.toml").write_text(TEAM)
        (root / "rules" / "routing.toml").write_text("")  # every new ticket goes to triage
        self.db = Database(load_config(self.cfg).database_url)

    def ingest(self, raw: bytes, rcpt: str | None = None) -> InboxItem:
        """Hand `raw` to the desk as its MTA would; the inbox row it became, processed."""
        done = subprocess.run(
            [str(MAILGATE), "--config", str(self.cfg), "ingest", "--direct", "-r", rcpt or self.address],
            input=raw,
            capture_output=True,
            env={**os.environ, "MAILGATE_SECRET": "test-secret"},
            timeout=60,
        )
        assert done.returncode == 0, done.stderr.decode()
        with self.db.session() as s:
            item = s.execute(select(InboxItem).order_by(InboxItem.id.desc())).scalars().first()
            assert item is not None and item.state == "done", item
            return item

    def tickets(self) -> list[Ticket]:
        with self.db.session() as s:
            return list(s.execute(select(Ticket).order_by(Ticket.id)).scalars())

    def messages(self, ticket_id: int) -> list[Message]:
        with self.db.session() as s:
            query = select(Message).where(Message.ticket_id == ticket_id).order_by(Message.id)
            return list(s.execute(query).scalars())

    def outbox(self) -> list[OutboxItem]:
        with self.db.session() as s:
            return list(s.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars())

    def mail_to(self, address: str, kind: str | None = None) -> list[EmailMessage]:
        return [
            email.message_from_bytes(r.raw, policy=email.policy.default)  # type: ignore[misc]
            for r in self.outbox()
            if address in r.recipients and (kind is None or r.kind == kind)
        ]
