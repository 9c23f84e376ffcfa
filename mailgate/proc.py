"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (prctl PR_SET_PDEATHSIG), so a
    killed daemon leaves no worker or helper behind to race its successor."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: callers also watch their parent's pid
        pass


MMAP_THRESHOLD = 1 << 20  # bytes: blocks this large get their own mapping (see below)


def return_large_blocks() -> None:
    """Have glibc's malloc give every block of 1 MiB or more its own mapping, returned to the
    system as soon as it is freed (mallopt M_MMAP_THRESHOLD, libc's public interface).

    Left alone, glibc raises that threshold to the size of the largest block freed so far (up to
    32 MiB): once the first large message has come and gone, the next ones — the listener's
    joined DATA, the pieces the commit and the digest take of it — are carved from the heap, and
    the heap keeps what is freed in it. A long-running process that sees large mail now and then
    then stays at the size of its worst moment (bench/README.md, "A burst of large mail").
    Setting the threshold also fixes it (no more raising). Where there is no mallopt (macOS),
    or it ignores the option (musl), nothing changes."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
