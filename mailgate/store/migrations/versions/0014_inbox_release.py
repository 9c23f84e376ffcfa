"""Held mail can be let through: `released_by` and `released_at` on the inbox row

`mailgate inbox release ID` puts a message the pipeline held (held:auto-reply, held:flood) back
in the queue; the pipeline reads who released it to skip the hold and to name them on the
ticket's audit trail. Rows from before the upgrade were never released: NULL.

Revision ID: 0014_inbox_release
Revises: 0013_spent_links
Create Date: 2026-12-07 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0014_inbox_release"
down_revision: str | None = "0013_spent_links"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inboxitem") as batch:
        batch.add_column(sa.Column("released_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inboxitem") as batch:
        batch.drop_column("released_at")
        batch.drop_column("released_by")
