"""SLA and periodic jobs: the jobs' marks on each ticket, and per-desk job state

Revision ID: 0003_sla
Revises: 0002_imap
Create Date: 2026-11-23 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003_sla"
down_revision: str | None = "0002_imap"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MARKS = (
    "first_response_warned_at",
    "first_response_escalated_at",
    "resolution_warned_at",
    "resolution_escalated_at",
    "triage_reminded_at",
    "customer_reminded_at",
    "last_review_at",
)


def upgrade() -> None:
    # Nullable columns only: existing tickets simply have no marks yet.
    with op.batch_alter_table("ticket") as batch:
        for name in MARKS:
            batch.add_column(sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "jobstate",
        sa.Column("job", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("desk", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_digest_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_actions", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job", "desk"),
    )


def downgrade() -> None:
    op.drop_table("jobstate")
    with op.batch_alter_table("ticket") as batch:
        for name in reversed(MARKS):
            batch.drop_column(name)
