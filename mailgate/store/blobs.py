"""Attachment contents on disk, stored once per SHA-256 content hash under a root directory.

Layout `<root>/ab/cd/abcd…` (two levels of sharding keep directories small). A blob is written
once, atomically: temp file in the same directory, fsync, os.replace, fsync of the directory, so a
crash never leaves a half-written blob under its final name. Paths are built only from a validated
hex digest, never from a filename in the mail. This module knows nothing of tickets or messages.

Blobs are written before the transaction that names them (pipeline/runner.py `begin`), so a
message that ends up held, bounced or rolled back, or a crash, leaves files no row names.
`sweep` removes them as git's gc does loose objects: only files older than a grace period and
named by no row. A blob's age is its last `put` (a `put` of content already stored touches the
file), so a blob a message in hand is about to name is never old; and a file is renamed aside
before its age is read again, so a `put` racing the sweep either touches it first (it is put
back) or finds it gone and writes it again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
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
            # Same hash, same bytes: nothing to write. Its age starts again, so a sweep leaves
            # it alone while the message in hand is on its way to naming it.
            try:
                os.utime(path)
                return digest
            except FileNotFoundError:
                pass  # swept a moment ago: written again below
            except OSError:
                return digest  # another user's file (a command run as root): it is there
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

    def sweep(self, named: Callable[[], Collection[str]], cutoff: float, *, dry_run: bool = False) -> Swept:
        """Remove the blobs last put before `cutoff` (a POSIX time) that `named()` does not
        name, and temporary files a crashed `put` left. `named` is called after the old files
        are listed, so a row committed before it is seen; a blob named later was put (touched)
        since, which the check after the rename sees. `dry_run` only counts."""
        old: list[tuple[Path, str | None, int]] = []
        for path in self._files():
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if st.st_mtime < cutoff:
                old.append((path, path.name if _DIGEST_RE.fullmatch(path.name) else None, st.st_size))
        keep = named() if old else frozenset()
        removed = size = kept = 0
        for path, digest, bytes_ in old:
            if digest is not None and digest in keep:
                kept += 1
            elif dry_run or _remove_if_old(path, cutoff):
                removed += 1
                size += bytes_
        return Swept(removed, size, kept, dry_run)

    def _files(self) -> Iterator[Path]:
        """Every file under the two shard levels. A `.sweep-` file a crashed sweep left is put
        back under its name first (or dropped when the name is there again): the next sweep
        judges it afresh."""
        if not self.root.is_dir():
            return
        for first in sorted(self.root.iterdir()):
            if not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir():
                    continue
                entries = sorted(second.iterdir())
                aside = [p for p in entries if p.name.startswith(_ASIDE)]
                if aside:
                    for path in aside:
                        _put_back(path)
                    entries = sorted(p for p in second.iterdir() if not p.name.startswith(_ASIDE))
                for path in entries:
                    if path.is_file() and (_DIGEST_RE.fullmatch(path.name) or path.name.startswith(_TEMP)):
                        yield path


@dataclass(frozen=True)
class Swept:
    """What a sweep removed (or, dry, would remove), and the old blobs it kept because a row
    names them."""

    removed: int
    removed_bytes: int
    kept: int
    dry_run: bool = False


_TEMP = ".tmp-"
_ASIDE = ".sweep-"


def _remove_if_old(path: Path, cutoff: float) -> bool:
    """Remove `path` unless a `put` touched it since it was listed. Renamed aside first, then its
    age read again: a `put` before the rename touched the file (it is put back), one after it
    finds the name free and writes the blob anew."""
    if path.name.startswith(_TEMP):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            return True
        return False
    aside = path.with_name(f"{_ASIDE}{path.name}.{secrets.token_hex(4)}")
    try:
        os.rename(path, aside)
        if aside.stat().st_mtime >= cutoff:
            os.replace(aside, path)  # the same bytes, whatever a put wrote there meanwhile
            return False
        aside.unlink()
    except FileNotFoundError:  # gone already, or put back by another sweep: not removed here
        return False
    return True


def _put_back(aside: Path) -> None:
    name = aside.name[len(_ASIDE) :].split(".", 1)[0]
    target = aside.with_name(name)
    if not _DIGEST_RE.fullmatch(name) or target.exists():
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()
        return
    with contextlib.suppress(FileNotFoundError):
        os.replace(aside, target)


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
