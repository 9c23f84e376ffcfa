"""Attachment store: content-addressed, written once, never a path from mail."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mailgate.store.blobs import BlobError, BlobStore


def test_put_get_once_sharded(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"%PDF-1.4 report")
    assert digest == hashlib.sha256(b"%PDF-1.4 report").hexdigest()
    path = store.path_for(digest)
    assert path == tmp_path / digest[:2] / digest[2:4] / digest
    assert store.get(digest) == b"%PDF-1.4 report"
    inode = path.stat().st_ino
    assert store.put(b"%PDF-1.4 report") == digest  # same content: stored once, not written again
    assert path.stat().st_ino == inode  # (only touched: the sweep's grace starts again, store/blobs.py)
    assert [p.name for p in path.parent.iterdir()] == [digest]  # no temp files left behind


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "ab/../../x", "A" * 64, "0" * 63, "", "g" * 64, "0" * 64 + "\n"]
)
def test_digest_is_validated(tmp_path: Path, bad: str) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(BlobError):
        store.path_for(bad)
    with pytest.raises(BlobError):
        store.get(bad)


def test_corruption_is_detected(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    digest = store.put(b"original")
    store.path_for(digest).write_bytes(b"tampered")
    with pytest.raises(BlobError):
        store.get(digest)
