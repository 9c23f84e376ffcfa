"""Single-use links: a link word is spent once, then refused (docs/web.md "Agents").

Signed links are stateless (domain/tokens.make_link); single use needs one row per used link,
kept only until the link would have expired anyway, so the table stays as small as the number of
sign-ins in the last minutes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlmodel import col

from mailgate.store.db import Database, insert_for
from mailgate.store.models import SpentLink, now_utc


def spend(db: Database, mac: str, address: str, expires_at: datetime) -> bool:
    """Mark the link with this MAC used; True when this call spent it, False when it had been
    spent before (by this process or another: the primary key decides)."""
    with db.session() as s:
        s.execute(delete(SpentLink).where(col(SpentLink.expires_at) < now_utc()))
        stmt = (
            insert_for(db.engine.dialect.name)(SpentLink)
            .values(mac=mac, address=address, expires_at=expires_at, spent_at=now_utc())
            .on_conflict_do_nothing(index_elements=["mac"])
            .returning(col(SpentLink.mac))  # psycopg gives no rowcount for ON CONFLICT DO NOTHING
        )
        return s.execute(stmt).first() is not None


def is_spent(db: Database, mac: str) -> bool:
    with db.reading() as s:
        return s.execute(select(col(SpentLink.mac)).where(col(SpentLink.mac) == mac)).first() is not None
