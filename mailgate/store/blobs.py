"""Attachment contents on disk, stored once per SHA-256 content hash under a root directory.

Layout `<root>/ab/cd/abcd…` (two levels of sharding keep directories small). A blob is written
once, atomically: temp file in the same directory, fsync, os.replace, fsync of the directory, so a
crash never leaves a half-written blob under its final name. Paths are built only from a validated
hex digest, never from a filename in the mail. This module knows nothing of tickets or messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")


class BlobError(ValueError):
    """A digest that is not 64 lowercase hex characters, or a blob whose content does not match it."""


class BlobStore:
    """Content-addressed storage: `put` returns the digest, `get` returns the bytes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, digest: str) -> Path:
        """Where the blob with this digest lives. Raises BlobError for anything but a SHA-256 hex digest."""
        if not isinstance(digest, str) or not _DIGEST_RE.fullmatch(digest):
            raise BlobError(f"not a sha256 hex digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    def put(self, content: bytes) -> str:
        """Store `content` (once) and return its sha256 hex digest."""
        digest = hashlib.sha256(content).hexdigest()
        path = self.path_for(digest)
        if path.exists():
            return digest  # same hash, same bytes: nothing to write
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            # Leave no temp file behind; the final name only ever holds complete content.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(path.parent)
        return digest

    def get(self, digest: str) -> bytes:
        """The stored bytes. FileNotFoundError if absent; BlobError if the file does not match its digest."""
        data = self.path_for(digest).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise BlobError(f"blob {digest} is corrupt on disk")
        return data

    def exists(self, digest: str) -> bool:
        return self.path_for(digest).exists()


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX needs the directory entry synced too)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)
