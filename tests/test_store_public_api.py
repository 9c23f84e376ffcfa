"""The store stands on SQLAlchemy's public APIs only (issue 24): no private attribute that a
minor release may change without warning, and the Repo's ticket behaves as the ORM's own object."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from mailgate.store.db import Database
from mailgate.store.models import Ticket
from mailgate.store.repo import Repo

PACKAGE = Path(__file__).resolve().parent.parent / "mailgate"

# The private SQLAlchemy internals an earlier speed round used (store/direct.py, Repo._attach):
# compiled statements' bind and result processors, and ORM instances built by hand.
PRIVATE = re.compile(
    r"_bind_processors|_result_columns|_cached_result_processor|make_transient_to_detached"
    r"|new_instance|set_committed_value|instance_state|class_manager"
)


def test_no_private_sqlalchemy_api_in_mailgate() -> None:
    hits = [
        f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert hits == []


def _ticket_values(number: int) -> dict[str, object]:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return {
        "key": f"SUP-{number}",
        "desk": "SUP",
        "number": number,
        "subject": "printer jammed",
        "requester": "a@acme.com",
        "requester_name": "",
        "status": "open",
        "status_category": "open",
        "priority": None,
        "type": None,
        "category": None,
        "group": None,
        "assignee": None,
        "tags": [],
        "fields": {},
        "created_at": now,
        "updated_at": now,
    }


def test_a_created_ticket_is_the_sessions_object_and_set_ticket_writes_at_once(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    later = datetime(2026, 1, 3, 9, 0, tzinfo=UTC)
    try:
        with db.session() as s:
            repo = Repo(s)
            ticket = repo.create_ticket(**_ticket_values(1))
            assert ticket.id is not None and repo.ticket_by_key("sup-1") is ticket
            ticket.status = "pending"  # an ORM change, flushed later, beside the direct write
            repo.set_ticket(ticket, updated_at=later)
            # Written now: a Core read in the same transaction sees it, before any flush.
            row = s.connection().execute(select(Ticket.updated_at).where(Ticket.id == ticket.id)).one()  # type: ignore[arg-type]
            assert row[0] == later.replace(tzinfo=None)
            assert ticket.updated_at == later.replace(tzinfo=None)  # read back as a load gives it
            assert ticket.status == "pending"
        with db.reading() as s:
            stored = s.execute(select(Ticket)).scalars().one()
            assert (stored.status, stored.updated_at) == ("pending", later.replace(tzinfo=None))
    finally:
        db.dispose()
