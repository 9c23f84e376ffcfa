"""The attachment sweep: blob files (store/blobs.py) that no stored message names, once they are
older than a grace period. Run daily by the scheduler and by `mailgate attachments sweep`.

The one place that knows which rows name a blob: `Message.attachments` entries carry the
`sha256` of their blob (pipeline/handlers/common.store_message). Nothing else points into the
blob store — outgoing mail is rendered whole into its outbox row.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import String, cast, select
from sqlmodel import col

from mailgate.store.blobs import BlobStore, Swept
from mailgate.store.db import Database
from mailgate.store.models import Message, now_utc

log = logging.getLogger(__name__)

# The default grace: a blob is written before the transaction that names it commits, normally
# within seconds; a day also covers a worker stopped in a debugger, and a clock set back.
GRACE = timedelta(hours=24)
# Less than this could take a blob from a message still in hand (a batch, a lease's worth).
MIN_GRACE = timedelta(hours=1)


def named_digests(db: Database) -> frozenset[str]:
    """Every blob digest a stored message names, read in one pass (streamed: a big desk's
    messages are not all in memory at once)."""
    names: set[str] = set()
    with db.reading() as session:
        rows = session.execute(
            select(col(Message.attachments))
            .where(cast(col(Message.attachments), String) != "[]")  # most messages have none
            .execution_options(yield_per=2000)
        ).scalars()
        for attachments in rows:
            for entry in attachments or ():
                digest = entry.get("sha256") if isinstance(entry, dict) else None
                if isinstance(digest, str):
                    names.add(digest)
    return frozenset(names)


def sweep_attachments(
    db: Database,
    blobs: BlobStore,
    *,
    grace: timedelta = GRACE,
    now: datetime | None = None,
    dry_run: bool = False,
) -> Swept:
    """Remove the blobs older than `grace` that no message names (see BlobStore.sweep)."""
    if grace < MIN_GRACE:
        raise ValueError(f"a grace under {MIN_GRACE} could remove a blob a message in hand is about to name")
    cutoff = ((now or now_utc()) - grace).timestamp()
    swept = blobs.sweep(lambda: named_digests(db), cutoff, dry_run=dry_run)
    if swept.removed and not dry_run:
        log.info(
            "attachment sweep: removed %d blob(s) no message names (%d bytes); kept %d old ones still named",
            swept.removed,
            swept.removed_bytes,
            swept.kept,
        )
    return swept
