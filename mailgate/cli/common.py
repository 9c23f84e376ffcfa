"""What every subcommand needs: the loaded config and an open database.

Commands that only read what the daemon stored (tickets, inbox, outbox, status) never create a
database: run in the wrong directory, or with the wrong config, they say which configuration and
state directory they looked at and that nothing was ever received there, instead of answering
"no tickets" from an empty database they just made. Only `init`, `run`, `ingest` and
`db upgrade` (and `imap check`, which records what it finds) create state.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mailgate.config import Config, ConfigError, load_config
from mailgate.mail.decode import visible

if TYPE_CHECKING:  # the import costs half a second; `mailgate ingest` may hand over without it
    from mailgate.store.db import Database

# The commands that may create the state directory and the database.
CREATES_STATE = frozenset({"init", "run", "ingest", "db", "imap"})


class NoDatabase(ConfigError):
    """A command that reads state found no database where this configuration points."""


def config_of(args: argparse.Namespace) -> Config:
    return load_config(
        getattr(args, "config", None), create_state=getattr(args, "command", None) in CREATES_STATE
    )


def missing_database(config: Config) -> str | None:
    """Why there is no database for `config` yet (None: there is one). Looked at without creating
    anything: the SQLite file must exist; a PostgreSQL database must have mailgate's tables."""
    url = config.database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if not path or path == ":memory:":
            return None
        from pathlib import Path

        return None if Path(path).is_file() else f"no database at {path}"
    from sqlalchemy import create_engine, inspect

    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    engine = create_engine(url)
    try:
        has = inspect(engine).has_table("inboxitem")
    finally:
        engine.dispose()
    return None if has else "the database has no mailgate tables"


@contextmanager
def open_db(config: Config, *, create: bool = False) -> Iterator[Database]:
    """The database for one command, its connections closed at the end: a command run in-process
    (tests, `mailgate.cli.main`) leaves no PostgreSQL connection open behind it.

    Without `create`, a database that does not exist yet is refused (`NoDatabase`) rather than
    made empty."""
    from mailgate.store.db import Database

    if not create:
        missing = missing_database(config)
        if missing:
            raise NoDatabase(
                f"{missing}: nothing was ever received with this configuration ({config.described}). "
                "Run the command in the desk's directory (where its config.toml is), or name the "
                "config: --config FILE or MAILGATE_CONFIG"
            )
    db = Database(config.database_url)
    try:
        yield db
    finally:
        db.dispose()


def cut(value: str, width: int) -> str:
    """`value` in exactly `width` characters: padded, or cut with an ellipsis, so the columns
    after it stay where they are whatever its length. What it shows is what is there: a subject
    or a name of a row stored before they were cleaned at intake cannot reorder or hide text on
    the terminal (decode.visible)."""
    value = visible(value)
    return value.ljust(width) if len(value) <= width else value[: width - 1] + "…"
