"""Full-text search over tickets: SQLite FTS5, PostgreSQL tsvector, one meaning on both.

What is indexed is every stored message's subject and text (the first message's subject is the
ticket's). Messages are append-only, so the index is kept by the database itself, in the very
transaction that stores the message: on SQLite a trigger writes the FTS5 row (an external-content
table over `message`, nothing stored twice); on PostgreSQL `message.search` is a generated
tsvector column with a GIN index (and `message.subject_search`, the subject's alone, for the
similar-tickets look-up). No pipeline code maintains it, and a crash never leaves it
behind the messages. Both index the first `MAX_CHARS` of the text, lower-cased words split at
anything not a letter or digit, accents kept (FTS5 `unicode61 remove_diacritics 0`; PostgreSQL
`simple` over the text with non-word runs replaced by spaces), so both engines find the same
tickets for the same words; the order among them is each engine's own ranking (bm25, ts_rank).

A user's query never reaches either engine's query syntax: `words()` keeps only runs of letters
and digits, and each becomes a quoted prefix term ("word"* / word:*). Quotes, `*`, `NEAR`, `OR`,
`-`, parentheses and SQL quotes are at most words to look for. The objects are made by plain DDL
(migration 0011 and `create_search`), not the models: `is_search_object` tells Alembic's
comparison to leave them alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import DateTime, text
from sqlalchemy.engine import Connection
from sqlmodel import Session

from mailgate.store import deferred
from mailgate.store.models import utc

MAX_CHARS = 100_000  # of a message's text: a 25 MB log pasted into a mail is not worth indexing
MAX_MATCHES = 100_000  # messages ranked per query on SQLite: bounds a search for a word in every mail
MAX_TERMS = 12  # words of one query: a pasted paragraph must not become a 500-term OR
NEIGHBOUR_MESSAGES = 20  # newest messages looked at for a new ticket's similar tickets
_WORD = re.compile(r"[^\W_]+")
# Words too common to tell tickets apart: dropped from "similar to this subject" queries (a
# user's own search keeps every word they typed).
_COMMON = """
a an and are as at be but by can could do does for from has have help hi hello how i if in
is it its me my no not of on or our please re fw fwd aw sv so that the their there this to
too up us was we what when where which who why will with you your
"""
STOPWORDS = frozenset(_COMMON.split())

FTS_TABLE = "message_search"
SQLITE_DDL = (
    f"CREATE VIRTUAL TABLE {FTS_TABLE} USING fts5(subject, text, content='message', "
    "content_rowid='id', detail=column, tokenize='unicode61 remove_diacritics 0')",
    f"CREATE TRIGGER message_search_ai AFTER INSERT ON message BEGIN "
    f"INSERT INTO {FTS_TABLE}(rowid, subject, text) "
    f"VALUES (new.id, new.subject, substr(new.text, 1, {MAX_CHARS})); END",
    f"CREATE TRIGGER message_search_ad AFTER DELETE ON message BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, subject, text) "
    f"VALUES ('delete', old.id, old.subject, substr(old.text, 1, {MAX_CHARS})); END",
    f"CREATE TRIGGER message_search_au AFTER UPDATE OF subject, text ON message BEGIN "
    f"INSERT INTO {FTS_TABLE}({FTS_TABLE}, rowid, subject, text) "
    f"VALUES ('delete', old.id, old.subject, substr(old.text, 1, {MAX_CHARS})); "
    f"INSERT INTO {FTS_TABLE}(rowid, subject, text) "
    f"VALUES (new.id, new.subject, substr(new.text, 1, {MAX_CHARS})); END",
)
SQLITE_BACKFILL = f"INSERT INTO {FTS_TABLE}(rowid, subject, text) SELECT id, subject, substr(text, 1, {MAX_CHARS}) FROM message"
_PG_DOC = (
    "setweight(to_tsvector('simple'::regconfig, regexp_replace(coalesce(subject, ''), '[\\W_]+', ' ', 'g')), 'A')"
    " || to_tsvector('simple'::regconfig, regexp_replace(left(coalesce(text, ''), "
    f"{MAX_CHARS}), '[\\W_]+', ' ', 'g'))"
)
# The subject's words alone, for the similar-tickets look-up: small enough to stay in the row,
# where a weight-A match on `search` reads and decompresses every message's whole vector.
_PG_SUBJECT = "to_tsvector('simple'::regconfig, regexp_replace(coalesce(subject, ''), '[\\W_]+', ' ', 'g'))"
POSTGRES_DDL = (
    f"ALTER TABLE message ADD COLUMN search tsvector GENERATED ALWAYS AS ({_PG_DOC}) STORED",
    "CREATE INDEX ix_message_search ON message USING GIN (search)",
    f"ALTER TABLE message ADD COLUMN subject_search tsvector GENERATED ALWAYS AS ({_PG_SUBJECT}) STORED",
    "CREATE INDEX ix_message_subject_search ON message USING GIN (subject_search) WITH (fastupdate = off)",
)


def create_search(conn: Connection) -> None:
    """Make the index on a database whose tables exist (a new one, or migration 0011)."""
    ddl = POSTGRES_DDL if conn.dialect.name == "postgresql" else SQLITE_DDL
    for statement in ddl:
        conn.execute(text(statement))


def is_search_object(name: str | None, type_: str) -> bool:
    """Whether Alembic's comparison should skip this object: the FTS5 table and its shadow
    tables, PostgreSQL's generated column and its index, which no model declares."""
    if not name:
        return False
    if type_ == "table":
        return name == FTS_TABLE or name.startswith(FTS_TABLE + "_")
    return name in ("search", "ix_message_search", "subject_search", "ix_message_subject_search")


def words(query: str, *, significant: bool = False) -> list[str]:
    """The words of a query, lower-cased, each once, at most MAX_TERMS: nothing else of it
    reaches the engine. `significant` drops common words and single letters (for "tickets like
    this subject", where "the" would match everything)."""
    found: list[str] = []
    for w in _WORD.findall(query.lower()):
        if significant and (len(w) < 2 or w in STOPWORDS):
            continue
        if w not in found:
            found.append(w)
    return found[:MAX_TERMS]


@dataclass(frozen=True)
class Hit:
    """A ticket that matched, best first: enough to list it and to decide who may see it."""

    key: str
    desk: str
    subject: str
    status: str
    status_category: str
    group: str | None
    assignee: str | None
    requester: str
    created_at: datetime
    resolved_at: datetime | None


_COLUMNS = (
    't.key, t.desk, t.subject, t.status, t.status_category, t."group", t.assignee, t.requester, '
    "t.created_at, t.resolved_at"
)


def search(
    session: Session | Connection,
    query: str,
    *,
    desk: str | None = None,
    statuses: Sequence[str] = (),
    group: str | None = None,
    exclude: Sequence[str] = (),
    open_or_resolved_since: datetime | None = None,
    any_word: bool = False,
    limit: int = 20,
) -> list[Hit]:
    """Tickets whose messages hold the query's words, best match first.

    Every word must occur in one message (its subject or text), as a word or the start of one;
    with `any_word` one is enough, and more matching words rank higher.
    `statuses` (each a status or a category) / `group` / `desk` narrow it; `exclude` leaves keys out;
    `open_or_resolved_since` keeps tickets not closed, or resolved or closed after that time,
    and not merged into another (suggestions to merge into).
    A query with no word in it finds nothing."""
    terms = words(query, significant=any_word)
    if not terms:
        return []
    conn = session.connection() if isinstance(session, Session) else session
    postgres = conn.dialect.name == "postgresql"
    params: dict[str, Any] = {"limit": limit}
    if postgres:
        params["q"] = (" | " if any_word else " & ").join(f"{w}:*" for w in terms)
        matched = (
            "SELECT m.ticket_id AS tid, max(ts_rank(m.search, q.query)) AS score "
            "FROM message m, to_tsquery('simple', :q) q(query) WHERE m.search @@ q.query "
            "GROUP BY m.ticket_id"
        )
        order = "score DESC, t.id DESC"
    else:
        params["q"] = (" OR " if any_word else " AND ").join(f'"{w}"*' for w in terms)
        # bm25 is lower for better matches; a subject word weighs as much as three in the text.
        # bm25 may not be used inside an aggregate: the matches are ranked first (a subquery
        # with a LIMIT, which SQLite does not flatten into the GROUP BY), then grouped.
        matched = (
            f"SELECT m.ticket_id AS tid, min(f.rank) AS score FROM (SELECT rowid AS id, "
            f"bm25({FTS_TABLE}, 3.0, 1.0) AS rank FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :q "
            f"LIMIT {MAX_MATCHES}) f JOIN message m ON m.id = f.id GROUP BY m.ticket_id"
        )
        order = "score ASC, t.id DESC"
    where = _filters(params, desk, group, statuses, exclude, open_or_resolved_since)
    sql = (
        f"SELECT {_COLUMNS} FROM ({matched}) hits JOIN ticket t ON t.id = hits.tid"
        + (f" WHERE {' AND '.join(where)}" if where else "")
        + f" ORDER BY {order} LIMIT :limit"
    )
    return _hits(conn, sql, params)


def ask_similar(
    session: Session | Connection,
    subject: str,
    *,
    requester: str,
    desk: str,
    exclude: str | None,
    since: datetime,
    opened_since: datetime,
    messages: int = NEIGHBOUR_MESSAGES,
) -> Callable[[], list[Hit]]:
    """The candidates for a new ticket's similar tickets, unranked (pipeline/similar.py ranks
    these few, the same way on both engines): the tickets of the newest `messages` messages
    whose subject shares a significant word with `subject` (exact words), open or resolved since
    `since`; and the tickets `requester` opened since `opened_since` (the likely duplicates).
    Both of `desk`, neither `exclude` nor merged into another.

    It runs for every new ticket, so it is one prebuilt statement, and it asks the index for
    row ids in id order only: ranking every match (bm25, ts_rank) cost several times more on a
    desk where many subjects share a word (bench/README.md, "Similar tickets").

    Asked now, read when called: on PostgreSQL the statement goes into the transaction's open
    pipeline (store/deferred.py `ask`) and is answered with the next statement that waits, so,
    asked before the new ticket is made, it costs no wait of its own. SQLite answers at once."""
    terms = words(subject, significant=True)
    conn = session.connection() if isinstance(session, Session) else session
    postgres = conn.dialect.name == "postgresql"
    if not terms:
        query = ""  # matches nothing: only the requester's own tickets can be candidates
    elif postgres:
        query = " | ".join(terms)  # on message.subject_search: the subject's words alone
    else:
        query = "{subject} : (" + " OR ".join(f'"{w}"' for w in terms) + ")"
    params = {
        "q": query or ("x" if postgres else "{subject} : x"),
        "any": bool(query),
        "n": messages,
        "desk": desk.upper(),
        "key": exclude or "",
        "since": since,
        "requester": requester,
        "opened": opened_since,
    }
    stmt = _similar_statement(conn.dialect.name)
    if postgres:
        asked = deferred.ask(conn, stmt, params)
        return lambda: [_hit(r) for r in asked.rows()]
    hits = _hits(conn, stmt, params)
    return lambda: hits


@cache
def _similar_statement(dialect: str) -> Any:
    if dialect == "postgresql":
        # The messages are found through the subject's own small vector (migration 0014), by its
        # GIN index or, for common words, newest first; their tickets by primary key (`= ANY` of
        # the array the sub-select makes once): a join here let a plan made while the tables
        # were small walk every ticket of the desk for each hit.
        recent = (
            "SELECT m.ticket_id FROM message m WHERE :any AND m.subject_search @@ to_tsquery('simple', :q) "
            "ORDER BY m.id DESC LIMIT :n"
        )
        found = f"FROM ticket t WHERE t.id = ANY(ARRAY({recent}))"
    else:
        recent = (
            f"SELECT m.id, m.ticket_id FROM (SELECT rowid AS id FROM {FTS_TABLE} WHERE {FTS_TABLE} "
            "MATCH :q ORDER BY rowid DESC LIMIT :n) f JOIN message m ON m.id = f.id WHERE :any"
        )
        found = (
            f"FROM ticket t JOIN (SELECT ticket_id AS tid FROM ({recent}) r GROUP BY ticket_id) hits "
            "ON t.id = hits.tid WHERE true"
        )
    mine = "t.desk = :desk AND t.key != :key AND t.merged_into IS NULL"
    sql = (
        f"SELECT {_COLUMNS} {found} AND {mine} AND "
        "(t.status_category != 'closed' OR t.resolved_at > :since OR t.closed_at > :since) "
        f"UNION SELECT {_COLUMNS} FROM ticket t WHERE t.requester = :requester AND t.created_at > :opened "
        f"AND {mine}"
    )
    return text(sql).columns(created_at=DateTime(timezone=True), resolved_at=DateTime(timezone=True))


def _filters(
    params: dict[str, Any],
    desk: str | None,
    group: str | None,
    statuses: Sequence[str],
    exclude: Sequence[str],
    open_or_resolved_since: datetime | None,
) -> list[str]:
    """The WHERE terms on ticket `t`, their values put into `params`."""
    where: list[str] = []
    if desk:
        where.append("t.desk = :desk")
        params["desk"] = desk.upper()
    if group:
        where.append('lower(t."group") = :group')
        params["group"] = group.lower()
    if statuses:  # a workflow status or a category (open, waiting, closed), as `tickets list`
        marks = ", ".join(f":s{i}" for i in range(len(statuses)))
        where.append(f"(t.status IN ({marks}) OR t.status_category IN ({marks}))")
        params.update({f"s{i}": v for i, v in enumerate(statuses)})
    if exclude:
        marks = ", ".join(f":x{i}" for i in range(len(exclude)))
        where.append(f"t.key NOT IN ({marks})")
        params.update({f"x{i}": k for i, k in enumerate(exclude)})
    if open_or_resolved_since is not None:
        where.append(
            "(t.status_category != 'closed' OR t.resolved_at > :since OR t.closed_at > :since)"
            " AND t.merged_into IS NULL"
        )
        params["since"] = open_or_resolved_since
    return where


def _hits(conn: Connection, sql: str | Any, params: dict[str, Any]) -> list[Hit]:
    stmt = (
        text(sql).columns(created_at=DateTime(timezone=True), resolved_at=DateTime(timezone=True))
        if isinstance(sql, str)
        else sql
    )
    return [
        _hit(r)
        for r in (
            # the prebuilt statements on PostgreSQL: on psycopg's cursor, compiled once
            deferred.read_on(conn, stmt, params).fetchall()
            if conn.dialect.name == "postgresql" and not isinstance(sql, str)
            else conn.execute(stmt, params).all()
        )
    ]


def _hit(r: Any) -> Hit:
    return Hit(
        key=r[0],
        desk=r[1],
        subject=r[2],
        status=r[3],
        status_category=r[4],
        group=r[5],
        assignee=r[6],
        requester=r[7],
        created_at=utc(r[8]),
        resolved_at=utc(r[9]),
    )
