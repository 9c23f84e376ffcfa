"""Who wrote the mail an agent forwards: the From of an inline "Forwarded message" block, or of
an attached message/rfc822 (an agent opening a ticket for a customer, seed 004).

Clients word the inline block differently (Gmail "---------- Forwarded message ---------",
Thunderbird "-------- Forwarded Message --------", Apple Mail "Begin forwarded message:",
Outlook "-----Original Message-----" with "From: Name [mailto:a@b]"); the first From line after
the marker names the writer. Pure: reads text and bytes, decides nothing about trust (the
pipeline does, docs/security.md "On behalf of a customer").
"""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser
from email.policy import default
from email.utils import parseaddr

from mailgate.mail.reply import header_block_sender

_MARKER = re.compile(
    r"^[>\s]*(?:-{2,}\s*(?:forwarded message|original message|weitergeleitete nachricht"
    r"|message transf[ée]r[ée]|mensaje reenviado)\s*-{2,}|begin forwarded message:)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
_FROM = re.compile(r"^[>\s]*(?:from|von|de)\s*:\s*(.+?)\s*$", re.IGNORECASE)
_MAILTO = re.compile(r"\[mailto:([^\]]+)\]", re.IGNORECASE)
_ADDRESS = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")
_LINES_AFTER_MARKER = 12  # the header block a client quotes is a handful of lines


def _address(value: str) -> tuple[str, str] | None:
    """(address, name) of a From value as a client quotes it, or None when it holds none."""
    name, addr = parseaddr(_MAILTO.sub(r"<\1>", value))
    addr = addr.strip().lower()
    return (addr, name.strip()) if _ADDRESS.match(addr) else None


def inline_sender(text: str) -> tuple[str, str] | None:
    """The writer of the first inline forwarded block in `text`, or None. Without a marker line,
    the first Outlook header block ("From:/Sent:/To:/Subject:", localised) is the forwarded mail,
    as Outlook since 2013 writes a forward."""
    marker = _MARKER.search(text or "")
    if marker is None:
        value = header_block_sender(text or "")
        return _address(value) if value else None
    for line in text[marker.end() :].splitlines()[:_LINES_AFTER_MARKER]:
        found = _FROM.match(line)
        if found:
            return _address(found.group(1))
    return None


def attached_sender(raw: bytes) -> tuple[str, str] | None:
    """The From of an attached message (message/rfc822), or None."""
    try:
        headers = BytesHeaderParser(policy=default).parsebytes(raw)
        value = str(headers.get("From", "") or "")
    except Exception:  # a broken attachment names nobody
        return None
    return _address(value) if value else None
