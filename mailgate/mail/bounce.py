"""Bounces: which recipient failed, why, and which of our messages it was about.

Reads RFC 3464 delivery status notifications (multipart/report; report-type=delivery-status) and
the common non-standard formats that predate or ignore it: qmail, Exim, Postfix without DSN and
Exchange/Office 365 NDR text. Returns None for anything else, including success DSNs. It must not
decide what happens to the ticket or the address; that is the pipeline's job.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message

from mailgate.literals import required_literals
from mailgate.mail.decode import bare_address, decode_header_value
from mailgate.mail.model import Bounce, ParsedMail
from mailgate.mail.msgid import parse_msgids

_STATUS_RE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_SMTP_CODE_RE = re.compile(r"\b([45])\d\d[ -]")
_ADDR_RE = re.compile(r"[A-Za-z0-9._%+'=/!#$&*?^`{|}~-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_MSGID_LINE_RE = re.compile(r"^\s*message-id\s*:\s*(.+)$", re.IGNORECASE | re.MULTILINE)

# Where a non-standard bounce starts quoting the original message: addresses below are not
# failed recipients, and the first Message-ID below is the original's.
_COPY_MARKERS = re.compile(
    r"^(?:--- below this line is a copy of the message\.|"  # qmail
    r"------ this is a copy of the message, including all the headers\. ------|"  # exim
    r"------ this is a copy of the message's headers\. ------|"  # exim, headers only
    r"-{2,} ?original message ?-{2,}|"
    r"original message headers:|"  # Exchange / Office 365
    r"----- original message -----|"
    r"-----\s*the following addresses had permanent fatal errors\s*-----)",
    re.IGNORECASE | re.MULTILINE,
)
# The wording of the well-known non-standard formats, each with its name for the diagnostic. Each
# wording is its own regex, so that the plain text every match needs (`required_literals`) is
# looked for in the lowered text first: the four case-blind scans of 20 KB were a tenth of parsing
# an ordinary message.
_TEXT_FORMATS: list[tuple[str, re.Pattern[str], tuple[str, ...]]] = [
    (name, rx, required_literals(rx))
    for name, wording in (
        ("qmail", r"Hi\. This is the qmail-send program"),
        ("exim", r"This message was created automatically by mail delivery software"),
        ("postfix", r"This is the mail system at host"),
        ("postfix", r"I'm sorry to have to inform you that your message"),
        ("exchange", r"Delivery has failed to these recipients or groups"),
        ("exchange", r"Your message to .{1,200} couldn't be delivered"),
        ("exchange", r"Diagnostic information for administrators"),
    )
    for rx in (re.compile(wording, re.IGNORECASE),)
]
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered mail returned to sender|delivery status notification \(failure\)|"
    r"mail delivery failed|failure notice|returned mail|delivery failure|non remis|unzustellbar|"
    r"nicht zustellbar|no se puede entregar|non recapitabile|não entregue|onbestelbaar|kunde inte levereras",
    re.IGNORECASE,
)
_ROBOT_FROM_RE = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)


def detect_bounce(msg: Message, mail: ParsedMail | None = None) -> Bounce | None:
    """A `Bounce` if `msg` reports a failed (or delayed) delivery, else None.

    `mail` is the already-parsed form (from, subject, body text) used by the text heuristics.
    """
    report = _find_report(msg, 0)
    if report is not None:
        bounce = _from_dsn(report)
        if bounce is not None:
            return bounce
        # A multipart/report whose status part says "delivered" is not a failure.
        if _has_status_part(report):
            return None
    if mail is None:
        return None
    return _from_text(mail, msg)


def _find_report(part: Message, depth: int) -> Message | None:
    if depth > 10:
        return None
    if part.get_content_type() == "multipart/report":
        report_type = part.get_param("report-type")
        if isinstance(report_type, str) and report_type.lower() == "delivery-status":
            return part
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        children = part.get_payload()
        if isinstance(children, list):
            for child in children:
                if isinstance(child, Message):
                    found = _find_report(child, depth + 1)
                    if found is not None:
                        return found
    return None


def _has_status_part(report: Message) -> bool:
    children = report.get_payload()
    return isinstance(children, list) and any(
        isinstance(c, Message) and c.get_content_type() == "message/delivery-status" for c in children
    )


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """RFC 3464 field blocks: the per-message block first, then one per recipient."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):  # the stdlib parses delivery-status into one Message per block
        for block in payload:
            if isinstance(block, Message):
                blocks.append({k.lower(): decode_header_value(v) for k, v in block.items()})
        return blocks
    text = _decoded(part)
    for chunk in re.split(r"\r?\n\s*\r?\n", text.decode("utf-8", "replace")):
        fields: dict[str, str] = {}
        for line in re.sub(r"\r?\n[ \t]+", " ", chunk).splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        if fields:
            blocks.append(fields)
    return blocks


def _typed_value(value: str) -> str:
    """RFC 3464 typed fields look like "rfc822; user@example.com" or "smtp; 550 5.1.1 ..."."""
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


def _from_dsn(report: Message) -> Bounce | None:
    children = [c for c in report.get_payload() if isinstance(c, Message)]
    blocks: list[dict[str, str]] = []
    original_id: str | None = None
    for child in children:
        ctype = child.get_content_type()
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            blocks.extend(_status_blocks(child))
        elif ctype in ("message/rfc822", "message/global") and original_id is None:
            inner = child.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                ids = parse_msgids(decode_header_value(inner[0].get("Message-ID", "")))
                original_id = ids[0] if ids else None
        elif ctype in ("text/rfc822-headers", "message/global-headers") and original_id is None:
            headers = email.message_from_bytes(_decoded(child), policy=email.policy.compat32)
            ids = parse_msgids(decode_header_value(headers.get("Message-ID", "")))
            original_id = ids[0] if ids else None
    envelope_id = None
    failed: list[str] = []
    status = diagnostic = None
    permanent = True
    for block in blocks:
        if "original-envelope-id" in block and envelope_id is None:
            envelope_id = block["original-envelope-id"].strip() or None
        action = block.get("action", "").strip().lower()
        recipient = block.get("final-recipient") or block.get("original-recipient")
        if not recipient or action not in ("failed", "delayed"):
            continue
        addr = bare_address(_typed_value(recipient))
        if addr and addr not in failed:
            failed.append(addr)
        if status is None:
            found = _STATUS_RE.search(block.get("status", ""))
            status = found.group(1) if found else None
            diagnostic = _typed_value(block["diagnostic-code"]) if block.get("diagnostic-code") else None
            # RFC 3464 section 2.3.3: "delayed" is transient; a 4.x.x status is a temporary failure.
            permanent = action == "failed" and not (status or "").startswith("4")
    if not failed:
        return None
    return Bounce(
        failed_recipients=tuple(failed),
        original_message_id=original_id,
        status=status,
        diagnostic=diagnostic,
        permanent=permanent,
        original_envelope_id=envelope_id,
    )


def _from_text(mail: ParsedMail, msg: Message) -> Bounce | None:
    """Non-standard bounces: recognised by their well-known wording (or a robot sender + bounce subject)."""
    body = mail.body_text or ""
    head = body[:20000]
    lowered = head.lower()
    fmt = next(
        (
            name
            for name, pattern, needs in _TEXT_FORMATS
            if all(n in lowered for n in needs) and pattern.search(head)
        ),
        None,
    )
    if fmt is None:
        robot = bool(_ROBOT_FROM_RE.match(mail.from_addr or ""))
        if not (robot and _BOUNCE_SUBJECT_RE.search(mail.subject or "")):
            return None
        fmt = "unknown format"
    marker = _COPY_MARKERS.search(body)
    notice = body[: marker.start()] if marker else body
    copy = body[marker.end() :] if marker else ""
    own = {mail.from_addr} | set(mail.to_addrs)
    failed: list[str] = []
    for match in _ADDR_RE.finditer(notice):
        addr = bare_address(match.group(0).strip(".'"))
        if addr and addr not in own and addr not in failed and not _ROBOT_FROM_RE.match(addr):
            failed.append(addr)
    if not failed:
        return None
    original_id = None
    for match in _MSGID_LINE_RE.finditer(copy or body):
        ids = parse_msgids(match.group(1))
        if ids:
            original_id = ids[0]
            break
    if original_id is None:
        # The original may be attached as message/rfc822 even when the notice is not a DSN.
        for part in msg.walk() if msg.is_multipart() else ():
            if part.get_content_type() == "message/rfc822":
                inner = part.get_payload()
                if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                    ids = parse_msgids(decode_header_value(inner[0].get("Message-ID", "")))
                    original_id = ids[0] if ids else None
                    break
    status_match = _STATUS_RE.search(notice)
    status = status_match.group(1) if status_match else None
    code = _SMTP_CODE_RE.search(notice)
    temporary = (status or "").startswith("4") or (
        status is None and code is not None and code.group(1) == "4"
    )
    diagnostic = _diagnostic_line(notice) or fmt
    return Bounce(
        failed_recipients=tuple(failed),
        original_message_id=original_id,
        status=status,
        diagnostic=diagnostic,
        permanent=not temporary,
    )


_DIAG_RE = re.compile(
    r"^.*(?:\b[45]\d\d[ -]|said:|smtp error|remote server returned|user unknown|does not exist|mailbox).*$",
    re.IGNORECASE | re.MULTILINE,
)


def _diagnostic_line(notice: str) -> str | None:
    match = _DIAG_RE.search(notice)
    return match.group(0).strip()[:300] if match else None


def _decoded(part: Message) -> bytes:
    """A leaf part's body with its transfer encoding undone (`get_payload(decode=True)` is bytes
    for a non-multipart part; anything else reads as empty)."""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""
