"""PostgreSQL: a subject-only tsvector for the similar-tickets look-up; lz4 for the large columns

The similar-tickets look-up (store/search.py) runs for every new ticket and asks for the newest
messages whose subject shares a word with the new one. On `message.search` that is a weight-A
match, which PostgreSQL checks by reading (and decompressing) each message's whole tsvector: on
a desk of a thousand messages that single read was a quarter of PostgreSQL's ingest time
(bench/README.md, "PostgreSQL ingest, second round"). `message.subject_search` holds the subject's
words alone, small enough to stay in the row, with a GIN index of its own.

The large values (raw mail in and out, message texts, the search vector, the processing trace)
are compressed with lz4 instead of the default pglz, several times cheaper to write for the same
size class. A server built without lz4 keeps pglz (the statement is skipped, nothing else).
SQLite: nothing changes (its FTS5 table answers the subject query by its own column filter).
The statements are written out, not imported: a migration stays what it was when it ran.

Revision ID: 0015_pg_subject_search
Revises: 0014_inbox_release
Create Date: 2026-12-07 17:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015_pg_subject_search"
down_revision: str | None = "0014_inbox_release"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POSTGRES = (
    "ALTER TABLE message ADD COLUMN subject_search tsvector GENERATED ALWAYS AS "
    "(to_tsvector('simple'::regconfig, regexp_replace(coalesce(subject, ''), '[\\W_]+', ' ', 'g'))) STORED",
    "CREATE INDEX ix_message_subject_search ON message USING GIN (subject_search) WITH (fastupdate = off)",
    "DO $$ BEGIN "
    "ALTER TABLE message ALTER COLUMN text SET COMPRESSION lz4, ALTER COLUMN reply_text SET COMPRESSION lz4, "
    "ALTER COLUMN search SET COMPRESSION lz4; "
    "ALTER TABLE outboxitem ALTER COLUMN raw SET COMPRESSION lz4; "
    "ALTER TABLE inboxraw ALTER COLUMN raw SET COMPRESSION lz4; "
    "ALTER TABLE inboxitem ALTER COLUMN trace SET COMPRESSION lz4; "
    "EXCEPTION WHEN feature_not_supported THEN NULL; END $$",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_message_subject_search")
        op.execute("ALTER TABLE message DROP COLUMN subject_search")
