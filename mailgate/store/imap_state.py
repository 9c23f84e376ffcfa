"""Where each IMAP poller is in its folder: UIDVALIDITY, the last UID handled, and bad UIDs.

A UID means something only together with the folder's UIDVALIDITY (RFC 3501 2.3.1.1), so the
position is kept per (account, folder) with the UIDVALIDITY it belongs to; when the server
announces another UIDVALIDITY the old position is worthless and the poller starts over
(`reset`). `horizon_uid` is the highest UID that existed when the poller first saw the folder:
below it only the first-run selection (UNSEEN / SINCE) is taken, so a crash half-way through the
first run never turns into an avalanche of last year's mail on restart.

This module only reads and writes these rows; it never talks IMAP and never decides policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Column, CursorResult, DateTime, select, update
from sqlmodel import Field, Session, col

from mailgate.store.models import TableModel, now_utc

# UIDs and UIDVALIDITY are unsigned 32-bit numbers (RFC 3501 9, nz-number): too big for a signed
# INTEGER on PostgreSQL, hence BIGINT.


class ImapFolderState(TableModel, table=True):
    """One row per polled (account, folder)."""

    __tablename__ = "imap_folder_state"

    account: str = Field(primary_key=True)
    folder: str = Field(primary_key=True)
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_uid: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    horizon_uid: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    updated_at: datetime = Field(
        default_factory=now_utc, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ImapFailure(TableModel, table=True):
    """A message the poller could not fetch or store; given up after a few tries, left on the server."""

    __tablename__ = "imap_failure"

    account: str = Field(primary_key=True)
    folder: str = Field(primary_key=True)
    uidvalidity: int = Field(sa_column=Column(BigInteger, primary_key=True))
    uid: int = Field(sa_column=Column(BigInteger, primary_key=True))
    attempts: int = 0
    given_up: bool = False
    last_error: str = ""
    updated_at: datetime = Field(
        default_factory=now_utc, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


def get_state(session: Session, account: str, folder: str) -> ImapFolderState | None:
    return session.get(ImapFolderState, (account, folder))


def reset(session: Session, account: str, folder: str, uidvalidity: int, horizon_uid: int) -> ImapFolderState:
    """Start (or start over) in a folder: nothing handled yet under this UIDVALIDITY."""
    state = get_state(session, account, folder) or ImapFolderState(
        account=account, folder=folder, uidvalidity=uidvalidity
    )
    state.uidvalidity = uidvalidity
    state.last_uid = 0
    state.horizon_uid = horizon_uid
    state.updated_at = now_utc()
    session.add(state)
    session.flush()
    return state


def advance(session: Session, account: str, folder: str, uidvalidity: int, uid: int) -> bool:
    """Record that every selected UID up to `uid` is handled. Never moves backwards, and does
    nothing if the row meanwhile belongs to another UIDVALIDITY."""
    result = session.execute(
        update(ImapFolderState)
        .where(
            col(ImapFolderState.account) == account,
            col(ImapFolderState.folder) == folder,
            col(ImapFolderState.uidvalidity) == uidvalidity,
            col(ImapFolderState.last_uid) < uid,
        )
        .values(last_uid=uid, updated_at=now_utc())
    )
    return bool(cast("CursorResult[Any]", result).rowcount)  # an UPDATE's result is a CursorResult


def record_failure(
    session: Session, account: str, folder: str, uidvalidity: int, uid: int, error: str, max_tries: int
) -> ImapFailure:
    """Count one failed try for a UID; `given_up` is set on the `max_tries`-th."""
    row = session.get(ImapFailure, (account, folder, uidvalidity, uid)) or ImapFailure(
        account=account, folder=folder, uidvalidity=uidvalidity, uid=uid
    )
    row.attempts += 1
    row.last_error = error[:2000]
    row.given_up = row.attempts >= max_tries
    row.updated_at = now_utc()
    session.add(row)
    session.flush()
    return row


def failures(session: Session, account: str | None = None) -> list[ImapFailure]:
    stmt = select(ImapFailure).order_by(
        col(ImapFailure.account), col(ImapFailure.folder), col(ImapFailure.uid)
    )
    if account is not None:
        stmt = stmt.where(col(ImapFailure.account) == account)
    return list(session.execute(stmt).scalars())
