"""Full-text search over tickets (issue 23): similar tickets, `mailgate tickets search`

SQLite: an FTS5 table over `message` (subject, text), kept by triggers in the transaction that
stores each message. PostgreSQL: `message.search`, a generated tsvector column, with a GIN index.
Existing messages are indexed here (the generated column fills itself as it is added).
The statements are written out, not imported: a migration stays what it was when it ran.

Revision ID: 0011_search
Revises: 0010_ladder
Create Date: 2026-12-07 15:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_search"
down_revision: str | None = "0010_ladder"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MAX_CHARS = 100_000
SQLITE = (
    "CREATE VIRTUAL TABLE message_search USING fts5(subject, text, content='message', "
    "content_rowid='id', detail=column, tokenize='unicode61 remove_diacritics 0')",
    "CREATE TRIGGER message_search_ai AFTER INSERT ON message BEGIN "
    "INSERT INTO message_search(rowid, subject, text) "
    f"VALUES (new.id, new.subject, substr(new.text, 1, {MAX_CHARS})); END",
    "CREATE TRIGGER message_search_ad AFTER DELETE ON message BEGIN "
    "INSERT INTO message_search(message_search, rowid, subject, text) "
    f"VALUES ('delete', old.id, old.subject, substr(old.text, 1, {MAX_CHARS})); END",
    "CREATE TRIGGER message_search_au AFTER UPDATE OF subject, text ON message BEGIN "
    "INSERT INTO message_search(message_search, rowid, subject, text) "
    f"VALUES ('delete', old.id, old.subject, substr(old.text, 1, {MAX_CHARS})); "
    "INSERT INTO message_search(rowid, subject, text) "
    f"VALUES (new.id, new.subject, substr(new.text, 1, {MAX_CHARS})); END",
    # the backfill: every message stored before this revision
    f"INSERT INTO message_search(rowid, subject, text) SELECT id, subject, substr(text, 1, {MAX_CHARS}) FROM message",
)
_DOC = (
    "setweight(to_tsvector('simple'::regconfig, regexp_replace(coalesce(subject, ''), '[\\W_]+', ' ', 'g')), 'A')"
    " || to_tsvector('simple'::regconfig, regexp_replace(left(coalesce(text, ''), "
    f"{MAX_CHARS}), '[\\W_]+', ' ', 'g'))"
)
POSTGRES = (
    f"ALTER TABLE message ADD COLUMN search tsvector GENERATED ALWAYS AS ({_DOC}) STORED",
    "CREATE INDEX ix_message_search ON message USING GIN (search)",
)


def upgrade() -> None:
    for statement in POSTGRES if op.get_bind().dialect.name == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_message_search")
        op.execute("ALTER TABLE message DROP COLUMN search")
        return
    for trigger in ("message_search_au", "message_search_ad", "message_search_ai"):
        op.execute(f"DROP TRIGGER {trigger}")
    op.execute("DROP TABLE message_search")
