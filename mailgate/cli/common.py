"""What every subcommand needs: the loaded config and an open database."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mailgate.config import Config, load_config

if TYPE_CHECKING:  # the import costs half a second; `mailgate ingest` may hand over without it
    from mailgate.store.db import Database


def config_of(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


@contextmanager
def open_db(config: Config) -> Iterator[Database]:
    """The database for one command, its connections closed at the end: a command run in-process
    (tests, `mailgate.cli.main`) leaves no PostgreSQL connection open behind it."""
    from mailgate.store.db import Database

    db = Database(config.database_url)
    try:
        yield db
    finally:
        db.dispose()


def cut(value: str, width: int) -> str:
    """`value` in exactly `width` characters: padded, or cut with an ellipsis, so the columns
    after it stay where they are whatever its length."""
    return value.ljust(width) if len(value) <= width else value[: width - 1] + "…"
