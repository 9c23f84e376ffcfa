"""Attachment names and limits: decode the names clients send, make them safe to show, apply limits.

A filename from mail is only ever displayed (and offered as a download name); it must never become
a path — storage is by content hash (store/blobs.py). Over-limit attachments are reported back as
descriptions, never silently dropped. This module must not touch the disk.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from email.message import Message

from mailgate.mail.decode import decode_header_value
from mailgate.mail.model import Attachment

MAX_FILENAME_CHARS = 200
_CTRL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_WS_RE = re.compile(r"\s+")


def safe_filename(name: str, default: str = "attachment") -> str:
    """A display name: no directory part, no control or bidi-override characters, no CR/LF.

    Both "/" and "\\" separate directories (Windows clients send "C:\\Users\\x\\report.pdf").
    Bidi overrides are removed because "invoice\u202efdp.exe" would display as "invoiceexe.pdf".
    """
    if not isinstance(name, str):
        return default
    name = unicodedata.normalize("NFC", name)
    name = _CTRL_RE.sub("", name)
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _WS_RE.sub(" ", name).strip().strip(".").strip()
    if name in ("", ".", ".."):
        return default
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and len(ext) <= 10:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


def attachment_filename(part: Message) -> str:
    """The decoded, display-safe filename of a part, or "" if it has none.

    RFC 2231 (filename*=utf-8''...) is decoded by the stdlib; many clients (Outlook, older Gmail)
    instead put RFC 2047 encoded words inside the quoted filename, which RFC 2047 section 5
    forbids but everyone reads, so we decode those too. Falls back to Content-Type's `name`.
    """
    name: object = None
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        try:
            name = part.get_param("name")
        except Exception:
            name = None
        if isinstance(name, tuple):  # an RFC 2231 triple the stdlib did not collapse
            try:
                from email.utils import collapse_rfc2231_value

                name = collapse_rfc2231_value(name)
            except Exception:
                name = str(name[-1])
    if not name:
        return ""
    return safe_filename(decode_header_value(name))


def tnef_content_type(filename: str, content_type: str) -> str:
    """Outlook's TNEF wrapper (winmail.dat) is often sent as application/octet-stream; name it for what it is."""
    if filename.lower() == "winmail.dat" or content_type in ("application/vnd.ms-tnef", "application/x-tnef"):
        return "application/ms-tnef"
    return content_type


def human_size(size: int) -> str:
    """1536 -> "1.5 KB", 31_457_280 -> "30 MB" (binary units, as mail clients show them)."""
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            if unit == "bytes":
                return f"{int(value)} bytes"
            return f"{value:.1f} {unit}".replace(".0 ", " ")
        value /= 1024
    return f"{size} bytes"


def apply_limits(
    attachments: Iterable[Attachment], max_size: int, max_count: int
) -> tuple[list[Attachment], list[str]]:
    """Split attachments into (kept, rejected descriptions) by size and count, in message order.

    A rejected item is described so the sender can be told, e.g.
    "report.pdf (31 MB) over the 20 MB limit". Limits <= 0 mean "no limit".
    """
    kept: list[Attachment] = []
    rejected: list[str] = []
    for att in attachments:
        name = safe_filename(att.filename)
        if max_size > 0 and att.size > max_size:
            rejected.append(f"{name} ({human_size(att.size)}) over the {human_size(max_size)} limit")
        elif max_count > 0 and len(kept) >= max_count:
            rejected.append(f"{name} ({human_size(att.size)}) over the limit of {max_count} attachments")
        else:
            kept.append(att)
    return kept, rejected
