"""Attachment names and limits: decode the names clients send, make them safe to show, apply limits.

A filename from mail is only ever displayed (and offered as a download name); it must never become
a path — storage is by content hash (store/blobs.py). Over-limit attachments are reported back as
descriptions, never silently dropped. This module must not touch the disk.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message

from mailgate.mail.decode import decode_bytes, decode_header_value, unsurrogate
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
    if isinstance(name, str) and "\ufffd" in name:
        name = _raw_8bit_filename(part) or name
    return safe_filename(decode_header_value(name))


def _raw_8bit_filename(part: Message) -> str | None:
    """The name of a part whose header carries raw 8-bit bytes (`filename="Präsentation.pdf"` in
    UTF-8, as Apple Mail, Gmail and most webmails send it: RFC 6532 allows UTF-8 headers).

    compat32 hands such a header out with every 8-bit byte replaced by U+FFFD; the raw value
    (`raw_items`) still has them, so it is decoded as header text is (UTF-8, else windows-1252)
    and its parameters read again."""
    for key, value in part.raw_items():
        kind = key.strip().lower()
        if kind not in ("content-disposition", "content-type") or not isinstance(value, str):
            continue
        header = Message()
        header[key] = unsurrogate(value)
        try:
            found = header.get_filename() if kind == "content-disposition" else header.get_param("name")
        except Exception:  # noqa: BLE001 - a broken parameter list: the caller keeps what it had
            continue
        if isinstance(found, str) and found and "\ufffd" not in found:
            return found
    return None


def tnef_content_type(filename: str, content_type: str) -> str:
    """Outlook's TNEF wrapper (winmail.dat) is often sent as application/octet-stream; name it for what it is."""
    if filename.lower() == "winmail.dat" or content_type in ("application/vnd.ms-tnef", "application/x-tnef"):
        return "application/ms-tnef"
    return content_type


# tnefparse logs at INFO on every stream it reads ("Skipping checksum") and at ERROR on broken
# MAPI blocks it then skips; a broken winmail.dat is kept as it came, so neither belongs in the
# daemon's log.
_tnef_log = logging.getLogger("tnefparse")
_tnef_log.addHandler(logging.NullHandler())
_tnef_log.propagate = False


@dataclass(frozen=True)
class Unpacked:
    """What an Outlook winmail.dat held: its files, and the message text when it carried one."""

    attachments: list[Attachment]
    text: str | None
    html: str | None
    complete: bool  # every part was taken out: the winmail.dat itself tells the agent nothing more


def unpack_tnef(content: bytes) -> Unpacked | None:
    """The files inside a TNEF stream (MS-OXTNEF: Outlook's winmail.dat), by their long names.

    Outlook in Rich Text mode, and Exchange set to keep rich text for the internet, put every
    attachment inside one winmail.dat that no client outside Outlook opens: an agent reading it
    as "winmail.dat" has nothing. tnefparse reads the stream; None when it is no TNEF or broken.
    An attached Outlook item (an embedded message) is not unpacked, and leaves `complete` False.
    """
    if not _plausible_tnef(content):
        return None
    try:
        from tnefparse import TNEF
    except ImportError:  # the layer is optional at run time: the winmail.dat is still kept
        return None
    try:
        stream = TNEF(content)
    except Exception:  # noqa: BLE001 - not TNEF, or truncated: keep the file as it came
        return None
    files: list[Attachment] = []
    complete = True
    for att in stream.attachments:
        data = att.data if isinstance(att.data, bytes) else b""
        if getattr(att, "embed", None) is not None or not data:
            complete = False
            continue
        try:
            name = att.long_filename() or att.name
        except Exception:  # noqa: BLE001 - a name in an unknown code page
            name = ""
        name = safe_filename(name if isinstance(name, str) else "", "")
        mime = next((str(a.data) for a in att.mapi_attrs if a.name == _MAPI_ATTACH_MIME_TAG), "")
        ctype = _mime_of(mime.strip("\x00 ").lower(), name)
        files.append(
            Attachment(filename=name or unnamed_filename(ctype, None, None), content_type=ctype, content=data)
        )
    text = stream.body if isinstance(stream.body, str) else _bytes_text(stream.body)
    html = stream.htmlbody if isinstance(stream.htmlbody, str) else _bytes_text(stream.htmlbody)
    if not files and not text and not html:
        return None
    return Unpacked(files, text or None, html or None, complete)


_MAPI_ATTACH_MIME_TAG = 0x370E
_TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"
# Outlook writes a handful of attributes per attachment; a stream of more is no mail client's.
MAX_TNEF_ATTRIBUTES = 5000


def _plausible_tnef(content: bytes) -> bool:
    """The stream walks as TNEF attributes (MS-OXTNEF 2.1.3: level, id, length, data, checksum)
    and has no more than MAX_TNEF_ATTRIBUTES of them. tnefparse copies the rest of the stream
    for every attribute it reads, so a crafted winmail.dat of a million empty attributes would
    hold the worker for hours; this walk reads only the headers."""
    if not content.startswith(_TNEF_SIGNATURE):
        return False
    offset, count, end = 6, 0, len(content)
    while offset + 11 <= end:
        count += 1
        if count > MAX_TNEF_ATTRIBUTES:
            return False
        length = int.from_bytes(content[offset + 5 : offset + 9], "little")
        offset += 9 + length + 2
    return count > 0


def _mime_of(declared: str, name: str) -> str:
    if "/" in declared and " " not in declared:
        return declared
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def _bytes_text(value: object) -> str:
    if not isinstance(value, bytes):
        return ""
    return decode_bytes(value.rstrip(b"\x00"), "cp1252")


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


# --- names for parts that have none, and inline versus attachment -------------------------------

# What a part without a name is called, by type, as a mature help desk (Zammad's email parser)
# stores it: "<Content-Description>.<ext>" when the sender described the part, else "<kind>.<ext>".
_UNNAMED: dict[str, tuple[str, str]] = {
    "message/delivery-status": ("txt", "delivery-status"),
    "text/plain": ("txt", "document"),
    "text/html": ("html", "document"),
    "video/quicktime": ("mov", "video"),
    "image/jpeg": ("jpg", "image"),
    "image/jpg": ("jpg", "image"),
    "image/pjpeg": ("jpg", "image"),
    "image/png": ("png", "image"),
    "image/gif": ("gif", "image"),
    "image/webp": ("webp", "image"),
    "image/bmp": ("bmp", "image"),
    "image/tiff": ("tif", "image"),
    "text/calendar": ("ics", "calendar"),
    "text/rfc822-headers": ("txt", "headers"),
    "message/rfc822": ("eml", "message"),
}
_EXTENSIONS = {
    "application/pdf": "pdf",
    "application/zip": "zip",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/pgp-signature": "asc",
    "application/pkcs7-signature": "p7s",
    "application/x-pkcs7-signature": "p7s",
    "text/csv": "csv",
    "text/x-vcard": "vcf",
    "text/vcard": "vcf",
    "audio/mpeg": "mp3",
    "video/mp4": "mp4",
}
# Outlook names inline images in their Content-ID: <image001.png@01DA47B2.5C3E1F30>.
_CID_NAME_RE = re.compile(
    r"^([^@\s/\\]+?\.(?:png|jpe?g|gif|bmp|webp|tiff?|svg|heic|emz|wmz|pdf|txt|ics|docx?|xlsx?))@",
    re.IGNORECASE,
)
_CID_LOCAL_RE = re.compile(r"^([^@\s/\\]+)@")
CID_REF_RE = re.compile(r"""cid:([^"'\s>)]+)""", re.IGNORECASE)


def unnamed_filename(content_type: str, content_id: str | None, description: str | None) -> str:
    """A display name for a part that carries none: the name inside an Outlook Content-ID, then
    "<description or kind>.<ext>" by type, then the Content-ID's local part, then "file"."""
    cid = (content_id or "").strip("<> ")
    match = _CID_NAME_RE.match(cid)
    if match:
        return safe_filename(match.group(1), "file")
    known = _UNNAMED.get(content_type)
    if known is not None:
        ext, kind = known
        desc = safe_filename(decode_header_value(description), "") if description else ""
        return f"{desc or kind}.{ext}"
    match = _CID_LOCAL_RE.match(cid)
    if match:
        return safe_filename(match.group(1), "file")
    by_type = _EXTENSIONS.get(content_type)
    return f"file.{by_type}" if by_type else "file"


def unique_filename(name: str, taken: Iterable[str]) -> str:
    """`name`, or "name1.ext", "name2.ext", … when an earlier part already has it."""
    used = set(taken)
    if name not in used:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    for i in range(1, 1000):
        candidate = f"{stem}{i}.{ext}" if ext else f"{stem}{i}"
        if candidate not in used:
            return candidate
    return name


def referenced_cids(html: str | None) -> set[str]:
    """Content-IDs the HTML body shows (`<img src="cid:…">`), lowercased (RFC 2392)."""
    if not html or "cid:" not in html.lower():
        return set()
    return {m.group(1).strip("<>").lower() for m in CID_REF_RE.finditer(html)}


def shown_inline(content_type: str, marked_inline: bool, content_id: str | None, shown: set[str]) -> bool:
    """Does a mail client show this part in the body rather than in the attachment list?

    `marked_inline`: the part says so (Content-Disposition: inline) or is a resource of a
    multipart/related body (RFC 2387). An image the HTML body shows by cid: is in place (RFC 2392)
    whatever its disposition; an image marked inline is too (Apple Mail puts photos in the text
    that way) unless the HTML shows images by cid: and not this one, and an inline PDF or other
    file is listed as an attachment, as Outlook and Thunderbird list them.
    """
    cid = (content_id or "").strip("<> ").lower()
    if cid and cid in shown:
        return True
    if not marked_inline or not content_type.startswith("image/"):
        return False
    return not (shown and cid)
