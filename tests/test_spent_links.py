"""A sign-in link is spent once, on either backend: the primary key decides between two uses,
whichever process or thread makes them (mailgate/store/spent.py). The web side's attack test
(tests/test_web_attacks.py::test_a_sign_in_link_signs_in_once) drives it through real mail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pg import database_on

from mailgate.store.db import Database
from mailgate.store.models import now_utc
from mailgate.store.spent import is_spent, spend


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with database_on(request.param, tmp_path) as database:
        yield database


def test_a_link_is_spent_once_and_forgotten_after_it_expires(db: Database) -> None:
    soon = now_utc() + timedelta(minutes=15)
    assert not is_spent(db, "mac-one")
    assert spend(db, "mac-one", "angel@localhost", soon)  # the first use
    assert is_spent(db, "mac-one")
    assert not spend(db, "mac-one", "angel@localhost", soon)  # the second is refused
    assert spend(db, "mac-two", "angel@localhost", soon)  # another link is its own
    # a row outlives its link only until the next spending: an expired link is refused anyway
    assert spend(db, "mac-old", "angel@localhost", now_utc() - timedelta(seconds=1))
    spend(db, "mac-three", "angel@localhost", soon)
    assert not is_spent(db, "mac-old") and is_spent(db, "mac-one")
