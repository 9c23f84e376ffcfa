"""Reports: each ticket's measured figures, so a year's report measures only what changed

`reportfacts` holds, per ticket, what `mailgate report` computed in Python (business-hours
first-response and resolution times, SLA outcomes) with a fingerprint of everything it was
computed from (mailgate/reports/facts.py). A stale row is simply measured again; dropping the
table loses nothing but time.

Revision ID: 0012_report_facts
Revises: 0011_search
Create Date: 2026-12-07 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012_report_facts"
down_revision: str | None = "0011_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reportfacts",
        sa.Column("ticket_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("stable_us", sa.BigInteger(), nullable=False),
        sa.Column("policy", sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column("first_response_us", sa.BigInteger(), nullable=True),
        sa.Column("first_response_s", sa.Float(), nullable=True),
        sa.Column("resolved_us", sa.BigInteger(), nullable=True),
        sa.Column("resolution_s", sa.Float(), nullable=True),
        sa.Column("fr_done_us", sa.BigInteger(), nullable=True),
        sa.Column("fr_breached", sa.Boolean(), nullable=True),
        sa.Column("fr_due_us", sa.BigInteger(), nullable=True),
        sa.Column("res_done_us", sa.BigInteger(), nullable=True),
        sa.Column("res_breached", sa.Boolean(), nullable=True),
        sa.Column("res_due_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("ticket_id"),
    )


def downgrade() -> None:
    op.drop_table("reportfacts")
