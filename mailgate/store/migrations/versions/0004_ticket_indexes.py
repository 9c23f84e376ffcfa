"""Indexes for the per-sender flood check and least-open assignment (both ran full table scans)

Revision ID: 0004_ticket_indexes
Revises: 0003_sla
Create Date: 2026-11-23 18:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004_ticket_indexes"
down_revision: str | None = "0003_sla"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_ticket_requester_created", "ticket", ["requester", "created_at"])
    op.create_index("ix_ticket_assignee_category", "ticket", ["assignee", "status_category"])


def downgrade() -> None:
    op.drop_index("ix_ticket_assignee_category", table_name="ticket")
    op.drop_index("ix_ticket_requester_created", table_name="ticket")
