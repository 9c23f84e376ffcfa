"""The inbox's message bytes move to a table of their own (inboxraw), out of the row that changes

SQLite writes a whole row again on every UPDATE, overflow pages and all: each claim and each
outcome of an inbox row wrote its message to the WAL once more. The bytes are copied, then the
column is dropped (on SQLite by Alembic's batch mode, which copies the table).

Revision ID: 0005_inbox_raw
Revises: 0004_ticket_indexes
Create Date: 2026-11-23 23:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_inbox_raw"
down_revision: str | None = "0004_ticket_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inboxraw",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO inboxraw (id, raw) SELECT id, raw FROM inboxitem")
    with op.batch_alter_table("inboxitem") as batch:
        batch.drop_column("raw")


def downgrade() -> None:
    with op.batch_alter_table("inboxitem") as batch:
        batch.add_column(sa.Column("raw", sa.LargeBinary(), nullable=False, server_default=sa.text("''")))
    op.execute("UPDATE inboxitem SET raw = (SELECT raw FROM inboxraw WHERE inboxraw.id = inboxitem.id)")
    op.drop_table("inboxraw")
