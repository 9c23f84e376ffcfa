"""Leases on claimed inbox and outbox rows: `claimed_until`

A worker that claims a row now writes until when it holds it, and renews that while it works
(store/lease.py); a row whose time has passed is free for any worker. Until now a worker's
liveness was `kill(pid, 0)` on the PID in `claimed_by`, which a zombie, a reused PID or a fresh
PID namespace answers wrongly (issue 26). Rows claimed before the upgrade get no time, which
reads as "expired": the daemon is stopped for the upgrade, so whatever it held is free.

Revision ID: 0007_claim_lease
Revises: 0006_inbox_digest
Create Date: 2026-12-07 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_claim_lease"
down_revision: str | None = "0006_inbox_digest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("inboxitem", "outboxitem"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in ("inboxitem", "outboxitem"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("claimed_until")
