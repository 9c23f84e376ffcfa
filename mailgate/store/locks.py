"""Leadership for work only one process may do at a time (polling one IMAP mailbox), using the
database's own lock: a PostgreSQL session advisory lock held on a dedicated connection.

When the holder dies its connection closes and PostgreSQL releases the lock, so a standby that
retries every few seconds takes over within seconds; nothing home-made to expire. On SQLite a
single process is assumed and the lock is always granted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging

from sqlalchemy import text
from sqlalchemy.engine import Connection

from mailgate.store.db import Database

log = logging.getLogger(__name__)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock from a readable name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class SessionLock:
    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name
        self.key = lock_key(name)
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        return self.db.is_sqlite or self._conn is not None

    def acquire(self) -> bool:
        """Try once; True when this process holds the lock (already or now)."""
        if self.db.is_sqlite:
            return True
        if self._conn is not None:
            return self.alive()
        conn = self.db.engine.connect()
        try:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
            conn.commit()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        log.info("holding the lock for %s", self.name)
        return True

    def alive(self) -> bool:
        """Is the connection that holds the lock still there? If not, the lock is gone too."""
        if self.db.is_sqlite:
            return True
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            self._conn.commit()
            return True
        except Exception:  # noqa: BLE001 - a lost connection means a lost lock
            log.warning("lost the database connection holding the lock for %s", self.name)
            self._drop()
            return False

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.commit()
        except Exception:  # noqa: BLE001 - closing the connection releases it anyway
            pass
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
