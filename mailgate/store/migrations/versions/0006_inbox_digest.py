"""Dedup by Message-ID plus a digest of the content: a reused Message-ID never erases a mail

Until now one inbox row per desk and Message-ID: whoever sent a Message-ID first made every later
message with it a "duplicate", dropped at the door (issue 18, Message-ID pre-emption). The key
becomes (desk, Message-ID, digest), the digest being store.inbox.content_digest of the message.
Rows already stored get their digest computed from their bytes, so a redelivery of a message
received before the upgrade is still recognised.

Revision ID: 0006_inbox_digest
Revises: 0005_inbox_raw
Create Date: 2026-12-07 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

from mailgate.store.inbox import content_digest

revision: str = "0006_inbox_digest"
down_revision: str | None = "0005_inbox_raw"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500


def upgrade() -> None:
    with op.batch_alter_table("inboxitem") as batch:
        batch.add_column(sa.Column("digest", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    conn = op.get_bind()
    after = 0
    while True:
        rows = conn.execute(
            sa.text(
                "SELECT i.id, r.raw FROM inboxitem i JOIN inboxraw r ON r.id = i.id"
                " WHERE i.id > :after ORDER BY i.id LIMIT :n"
            ),
            {"after": after, "n": _BATCH},
        ).all()
        if not rows:
            break
        conn.execute(
            sa.text("UPDATE inboxitem SET digest = :d WHERE id = :id"),
            [{"id": row_id, "d": content_digest(bytes(raw))} for row_id, raw in rows],
        )
        after = rows[-1][0]
    with op.batch_alter_table("inboxitem") as batch:
        batch.drop_constraint("uq_inbox_desk_msgid", type_="unique")
        batch.create_unique_constraint("uq_inbox_desk_msgid_digest", ["desk", "message_id", "digest"])


def downgrade() -> None:
    # Rows sharing a Message-ID (reused ones) cannot all keep it under the old key: later copies
    # lose the id, never their row (the message is kept; the threading tables are untouched).
    op.execute(
        "UPDATE inboxitem SET message_id = NULL WHERE message_id IS NOT NULL AND id > ("
        "SELECT MIN(o.id) FROM inboxitem o WHERE o.desk = inboxitem.desk AND o.message_id = inboxitem.message_id)"
    )
    with op.batch_alter_table("inboxitem") as batch:
        batch.drop_constraint("uq_inbox_desk_msgid_digest", type_="unique")
        batch.create_unique_constraint("uq_inbox_desk_msgid", ["desk", "message_id"])
        batch.drop_column("digest")
