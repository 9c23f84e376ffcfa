"""Whether a participant or a thread reference was new is read the same on both backends.

On PostgreSQL the driver reported -1 rows for `INSERT … ON CONFLICT DO NOTHING`, which read as
"added": `#cc add` of an address already watching said it was added, and a Message-ID the ticket
had was counted new. The answer now comes from RETURNING (store/repo.py `_upserts`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import database_on

from mailgate.store.db import Database
from mailgate.store.kinds import Role
from mailgate.store.models import Ticket
from mailgate.store.repo import Repo


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_on(request.param, tmp_path) as database:
        yield database


def test_an_address_or_message_id_already_on_the_ticket_is_not_added_again(db: Database) -> None:
    with db.session() as s:
        ticket = Ticket(desk="SUP", number=1, key="SUP-1", subject="printer", requester="ann@acme.com")
        s.add(ticket)
        s.flush()
        assert ticket.id is not None
        repo = Repo(s)
        assert repo.add_participant(ticket.id, "Bob@Acme.com", Role.WATCHER)  # new
        assert not repo.add_participant(ticket.id, "bob@acme.com", Role.WATCHER)  # already there
        assert repo.add_participant(ticket.id, "cy@acme.com", Role.WATCHER)  # the control
        repo.add_thread_ref("SUP", "<m1@acme.com>", ticket.id)
        assert repo.thread_ids(ticket.id, "ann@acme.com") == ["<m1@acme.com>"]  # read, and kept
        repo.add_thread_ref("SUP", "<m1@acme.com>", ticket.id)  # a redelivery names it again
        repo.add_thread_ref("SUP", "<m2@acme.com>", ticket.id)
        assert repo.thread_ids(ticket.id, "ann@acme.com") == ["<m1@acme.com>", "<m2@acme.com>"]
    with db.session() as s:
        people = sorted(p.address for p in Repo(s).participants(ticket.id))
        assert people == ["bob@acme.com", "cy@acme.com"]
