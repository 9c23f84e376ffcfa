"""flufl.bounce (GNU Mailman's bounce detectors) as one guarded layer of bounce understanding.

Mailman's seventeen detectors have read list bounces for twenty years; they know formats we do
not (Yale, LLNL, SMTP32, Sina, CAI Wireless, old Microsoft and Netscape servers). They are
heuristics, and some raise on mail that is not a bounce, so they only run on a message that
already looks machine-made (the caller decides), and any exception means "no answer", never a
failed parse. This module only reads the message; it must not decide what a bounce means.
"""

from __future__ import annotations

import logging
from email.message import Message

from mailgate.mail.decode import bare_address

# The library logs every detector exception with its traceback before re-raising it. We catch
# and expect those (a heuristic meeting a non-bounce), so they must not reach the daemon's log or,
# with no logging set up, stderr of `mailgate parse`.
_log = logging.getLogger("flufl.bounce")
_log.addHandler(logging.NullHandler())
_log.propagate = False


def flufl_failures(msg: Message) -> tuple[list[str], list[str]] | None:
    """(temporary, permanent) failed addresses as Mailman's detectors see them, or None when they
    find nothing or fail. Addresses are bare and lowercase; anything that is not one is dropped."""
    try:
        from flufl.bounce import all_failures
    except ImportError:  # the layer is optional at run time: the other detectors still work
        return None
    try:
        temporary, permanent = all_failures(msg)
    except (Exception, RecursionError):  # noqa: BLE001 - a heuristic meeting a non-bounce
        return None
    temp = _addresses(temporary)
    perm = _addresses(permanent)
    if not temp and not perm:
        return None
    return temp, perm


def _addresses(found: object) -> list[str]:
    out: list[str] = []
    for value in found if isinstance(found, frozenset | set | list | tuple) else ():
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        addr = bare_address(text.strip().strip("'\".,;:"))
        if addr and "." in addr.rpartition("@")[2] and addr not in out:
            out.append(addr)
    return sorted(out)
