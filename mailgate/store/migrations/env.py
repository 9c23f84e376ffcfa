"""Alembic environment: always run with a connection handed in by mailgate.store.migrate."""

from alembic import context
from sqlmodel import SQLModel

from mailgate.store import imap_state, models  # noqa: F401  (registers the tables)
from mailgate.store.search import is_search_object

target_metadata = SQLModel.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `mailgate db upgrade`")
context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=True,
    # the full-text index is plain DDL (store/search.py): autogenerate must not drop it
    include_name=lambda name, type_, _parent: not is_search_object(name, type_),
    on_version_apply=context.config.attributes.get("on_version_apply"),  # db upgrade's progress bar
)
with context.begin_transaction():
    context.run_migrations()
