"""The daemon's heartbeat: one row per running `mailgate run` (pid, host, listeners with the ports
they bound, started at, last beat, last batch), which `mailgate status` reads (issue 25)

Numbered 0008: 0007 is taken by another change made at the same time; whichever merges second
sets its down_revision to the other's.

Revision ID: 0008_daemon_heartbeat
Revises: 0006_inbox_digest
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008_daemon_heartbeat"
down_revision: str | None = "0006_inbox_digest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "daemonbeat",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("host", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("listeners", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_batch_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("daemonbeat")
