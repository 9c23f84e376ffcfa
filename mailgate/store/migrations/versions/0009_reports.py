"""Reports: indexes for the figures' GROUP BYs, and the weekly report mail's opt-outs

Revision ID: 0009_reports
Revises: 0008_daemon_heartbeat
Create Date: 2026-12-07 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009_reports"
down_revision: str | None = "0008_daemon_heartbeat"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_event_kind_created", "event", ["kind", "created_at"])
    op.create_index("ix_event_ticket_kind", "event", ["ticket_id", "kind"])
    op.create_table(
        "reportoptout",
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )


def downgrade() -> None:
    op.drop_table("reportoptout")
    op.drop_index("ix_event_ticket_kind", table_name="event")
    op.drop_index("ix_event_kind_created", table_name="event")
