"""Message-IDs as they appear in threading headers (RFC 5322 3.6.4), and nothing else.

Parsing only: which ids a header names. Deciding what a reply belongs to is domain/threading.py's
job; this module sits in mail/ so that mail/, the intake and the domain can all read ids without
mail/ importing the domain.
"""

from __future__ import annotations

import re

MSGID_RE = re.compile(r"<([^<>\s]+)>")


def parse_msgids(value: str | None) -> list[str]:
    """Message-IDs in a header value, without brackets, in order.

    Tolerates commas and any whitespace between ids (Exchange, iOS) and bare ids without brackets.
    """
    if not value:
        return []
    found = MSGID_RE.findall(value)
    if found:
        return found
    return [p for p in re.split(r"[\s,]+", value.strip()) if "@" in p]
