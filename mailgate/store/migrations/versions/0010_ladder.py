"""Bounced addresses, the SLA ladder's last step, admin notices (issue 19, items 7, 8 and 9)

`bouncedaddress`: an address whose mail failed permanently gets no automatic mail, desk-wide,
until `quiet_until`. On the ticket, `first_response_admins_at` and `resolution_admins_at` mark
the escalation to the desk's admins, as the other marks of 0003 do. `adminnotice`: what the
admins must hear of, sent at once or collected into the next digest.

Revision ID: 0010_ladder
Revises: 0009_reports
Create Date: 2026-12-07 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0010_ladder"
down_revision: str | None = "0009_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKS = ("first_response_admins_at", "resolution_admins_at")


def upgrade() -> None:
    # Nullable columns only: existing tickets simply have no marks yet.
    with op.batch_alter_table("ticket") as batch:
        for name in MARKS:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "bouncedaddress",
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("quiet_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("diagnostic", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("bounced_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "adminnotice",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_adminnotice_kind_sent", "adminnotice", ["kind", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_adminnotice_kind_sent", table_name="adminnotice")
    op.drop_table("adminnotice")
    op.drop_table("bouncedaddress")
    with op.batch_alter_table("ticket") as batch:
        for name in reversed(MARKS):
            batch.drop_column(name)
