"""Alembic, driven from code: `Database` upgrades at open and `mailgate db upgrade` does it explicitly.

Several processes may open one PostgreSQL at once; the upgrade takes an advisory lock there so
only one of them migrates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Table, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from mailgate.store.search import create_search

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only when a migration is to run or be inspected: importing it is slow, and
# a process per piped message opens an up-to-date database every time.

MIGRATIONS = Path(__file__).with_name("migrations")
ADVISORY_LOCK_ID = 0x6D61696C  # "mail"


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


# The newest revision, written down so that opening an up-to-date database costs one SELECT, not
# a parse of every migration script (an MTA pipe opens the database once per message).
# tests/test_migrations.py checks it equals Alembic's head.
HEAD = "0015_pg_subject_search"


def _stored_revision(engine: Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # noqa: BLE001 - no table yet: a new database
        return None


def schema_tables() -> list[Table]:
    """mailgate's tables in dependency order: SQLModel's metadata is shared with whatever else
    the process defines (a host application, a benchmark's own table)."""
    from mailgate.store import imap_state, models

    mine = {
        obj.__table__
        for module in (models, imap_state)
        for obj in vars(module).values()
        if isinstance(obj, type) and obj.__module__ == module.__name__ and hasattr(obj, "__table__")
    }
    return [t for t in SQLModel.metadata.sorted_tables if t in mine]


# The large values compressed with lz4, several times cheaper to write than the default pglz
# (migration 0014); a server built without lz4 keeps pglz.
POSTGRES_LZ4 = (
    "DO $$ BEGIN "
    "ALTER TABLE message ALTER COLUMN text SET COMPRESSION lz4, ALTER COLUMN reply_text SET COMPRESSION lz4, "
    "ALTER COLUMN search SET COMPRESSION lz4; "
    "ALTER TABLE outboxitem ALTER COLUMN raw SET COMPRESSION lz4; "
    "ALTER TABLE inboxraw ALTER COLUMN raw SET COMPRESSION lz4; "
    "ALTER TABLE inboxitem ALTER COLUMN trace SET COMPRESSION lz4; "
    "EXCEPTION WHEN feature_not_supported THEN NULL; END $$"
)


def _create_fresh(engine: Engine) -> bool:
    """Make an empty database at HEAD in one transaction: the tables from the models and
    Alembic's version row, as Alembic's cookbook ("building an up to date database from
    scratch") and Airflow's initdb do. Running the five migrations instead, on SQLite with their
    batch table copies, is a visible part of a small benchmark, and every new desk pays it once.
    tests/test_migrations.py checks that the migrations give exactly this schema, on SQLite and
    PostgreSQL, so a database made either way takes the next migration the same.
    Returns False, touching nothing, if the database has any table already."""
    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, so two processes never both create
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_ID})
        if inspect(conn).get_table_names():
            return False
        SQLModel.metadata.create_all(conn, tables=schema_tables())
        create_search(conn)  # the full-text index: plain DDL, no model declares it
        if conn.dialect.name == "postgresql":
            conn.execute(text(POSTGRES_LZ4))
        conn.execute(
            text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": HEAD})
    return True


def pending_revisions(engine: Engine) -> list[str]:
    """The migrations an upgrade to head would run, oldest first ([] for an empty database,
    which is made at head in one step, or an up-to-date one)."""
    from alembic.script import ScriptDirectory

    current = current_revision(engine)
    if current is None:
        return []
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.iterate_revisions("heads", current)))]


def upgrade_to_head(
    engine: Engine, revision: str = "head", on_step: Callable[[str], None] | None = None
) -> None:
    """Bring the database to `revision`; `on_step(revision)` after each migration applied (the
    progress bar of `mailgate db upgrade`)."""
    # Alembic's INFO lines would end up in an MTA's delivery status for every piped message.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if revision == "head":
        stored = _stored_revision(engine)
        if stored == HEAD or (stored is None and _create_fresh(engine)):
            return
        if current_revision(engine) == head_revision():
            return
    from alembic import command

    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_ID})
        cfg = alembic_config(conn)
        if on_step is not None:
            cfg.attributes["on_version_apply"] = lambda **kw: on_step(kw["step"].up_revision_id or "")
        command.upgrade(cfg, revision)
