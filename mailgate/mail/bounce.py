"""Bounces and complaints: which recipient failed (or complained), why, for good or for now, and
which of our messages it was about.

Layers, first answer wins, each a reader of what the field really sends:

1. RFC 3464 delivery status notifications: a `message/delivery-status` part wherever it sits,
   whatever the report-type says (some MTAs omit or misspell it), with missing fields filled from
   what is there (no Action: the Status class; no Final-Recipient: Original-Recipient,
   X-Failed-Recipients, the notice text, the returned message's To).
2. RFC 5965 (ARF) feedback reports, and Microsoft's JMRP: a complaint, permanent, about the
   complaining recipient (Original-Rcpt-To, or the To of the returned message).
3. The plain-text notices of the MTAs and providers that send no RFC 3464 report (bounce_text.py).
4. GNU Mailman's detectors (flufl.bounce), guarded, for what the layers above do not know.

A delay warning (RFC 3464 Action: delayed, a 4.x.x status, "THIS IS A WARNING ONLY") is a bounce
with `permanent=False`: the address is not to be given up on. Success and relay reports and read
receipts (RFC 3798 MDNs) are not bounces. Bounce detection does not look at Precedence or list
headers: a real DSN that carries them is still a DSN. It must not decide what happens to the
ticket or the address; that is the pipeline's job.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import Message

from mailgate.mail import bounce_text as text
from mailgate.mail.bounce_flufl import flufl_failures
from mailgate.mail.decode import bare_address, decode_header_value
from mailgate.mail.model import Bounce, ParsedMail
from mailgate.mail.msgid import parse_msgids

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers")
_MAX_PARTS = 200
_SMTP_REPLY_RE = re.compile(r"\b([245])(\d)(\d)\b")


def detect_bounce(msg: Message, mail: ParsedMail | None = None) -> Bounce | None:
    """A `Bounce` if `msg` reports a failed or delayed delivery or a complaint, else None.

    `mail` is the already-parsed form (from, subject, headers, body text) the text layers read.
    """
    parts = _top_parts(msg)
    types = {_ctype(p) for p in parts}
    if "message/feedback-report" in types:
        report = _from_feedback(parts)
        if report is not None:
            return report
    if "message/disposition-notification" in types:
        return None  # RFC 3798 read receipt: a report, never a delivery failure
    status_parts = [p for p in parts if _ctype(p) in _STATUS_TYPES] if types & set(_STATUS_TYPES) else []
    dsn = _from_dsn(status_parts, parts, mail) if status_parts else None
    if dsn is not None:
        return dsn
    if status_parts and _only_success(status_parts):
        return None  # RFC 3464 "delivered", "relayed" or "expanded": not a failure
    if mail is None:
        return None
    return _from_text(msg, parts, mail)


# --- the MIME tree --------------------------------------------------------------------------------


def _top_parts(msg: Message) -> list[Message]:
    """The parts of the report itself: multiparts are descended, attached messages are not (a
    person forwarding a bounce to the desk sent a message about it, not a bounce)."""
    found: list[Message] = []
    stack = [msg]
    while stack and len(found) < _MAX_PARTS:
        part = stack.pop(0)
        found.append(part)
        if _ctype(part).startswith("multipart/") and part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(c for c in children if isinstance(c, Message))
    return found


def _ctype(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:  # noqa: BLE001 - a broken Content-Type is plain text (RFC 2045 section 5.2)
        return "text/plain"


def _original_headers(parts: list[Message]) -> Message | None:
    """The header block of the returned message (message/rfc822 or text/rfc822-headers)."""
    for part in parts:
        ctype = _ctype(part)
        if ctype not in _ORIGINAL_TYPES:
            continue
        if ctype in ("message/rfc822", "message/global"):
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return inner[0]
            if isinstance(inner, str):  # some gateways label a text copy message/rfc822
                return email.message_from_string(inner, policy=email.policy.compat32)
        else:
            try:
                payload = part.get_payload(decode=True)
            except Exception:  # noqa: BLE001
                payload = None
            data = payload if isinstance(payload, bytes) else b""
            return email.message_from_bytes(data, policy=email.policy.compat32)
    return None


def _msgid_of(headers: Message | None) -> str | None:
    if headers is None:
        return None
    ids = parse_msgids(decode_header_value(headers.get("Message-ID", "") or ""))
    return ids[0].strip("<> ") if ids else None


def _first_msgid(value: str | None) -> str | None:
    if not value:
        return None
    ids = parse_msgids(value)
    return ids[0].strip("<> ") if ids else None


def _header_addresses(headers: Message | None, name: str) -> list[str]:
    if headers is None:
        return []
    out: list[str] = []
    for value in headers.get_all(name) or []:
        for match in text.ADDR_RE.finditer(decode_header_value(value)):
            addr = bare_address(match.group(0))
            if addr and addr not in out:
                out.append(addr)
    return out


def _failed_header(mail: ParsedMail | None) -> list[str]:
    """X-Failed-Recipients (Exim, Gmail, Google Groups): the MTA's own list of who failed."""
    if mail is None:
        return []
    out: list[str] = []
    for value in mail.header_all("X-Failed-Recipients"):
        for match in text.ADDR_RE.finditer(value):
            addr = bare_address(match.group(0))
            if addr and addr not in out:
                out.append(addr)
    return out


# --- RFC 3464 -------------------------------------------------------------------------------------


def _field_blocks(part: Message) -> list[list[tuple[str, str]]]:
    """RFC 3464 field groups, per-message first, then one per recipient, in order. A status part
    the stdlib could not split (no blank lines, or encoded) is split here from its text."""
    payload = part.get_payload()
    raw_blocks: list[list[tuple[str, str]]] = []
    if isinstance(payload, list) and payload:
        for block in payload:
            if isinstance(block, Message):
                raw_blocks.append([(k.lower(), decode_header_value(v)) for k, v in block.items()])
    else:
        try:
            data = part.get_payload(decode=True) or b""
        except Exception:  # noqa: BLE001
            data = b""
        body = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        for chunk in re.split(r"\r?\n\s*\r?\n", body):
            fields: list[tuple[str, str]] = []
            for line in re.sub(r"\r?\n[ \t]+", " ", chunk).splitlines():
                name, sep, value = line.partition(":")
                if sep and name.strip() and " " not in name.strip():
                    fields.append((name.strip().lower(), value.strip()))
            if fields:
                raw_blocks.append(fields)
    # A block holding several recipients (a missing blank line) is split at each new recipient.
    blocks: list[list[tuple[str, str]]] = []
    for fields in raw_blocks:
        current: list[tuple[str, str]] = []
        for name, value in fields:
            if name == "final-recipient" and any(n == "final-recipient" for n, _ in current):
                blocks.append(current)
                current = []
            current.append((name, value))
        if current:
            blocks.append(current)
    return blocks


def _typed(value: str) -> str:
    """RFC 3464 typed fields look like "rfc822; user@example.com" or "smtp; 550 5.1.1 ..."."""
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


def _action_of(fields: dict[str, str]) -> str:
    """The Action, or what Status and Diagnostic-Code imply when a broken DSN leaves it out."""
    action = fields.get("action", "").strip().lower().split(" ", 1)[0].rstrip(";")
    if action:
        return action
    status = text.STATUS_RE.search(fields.get("status", ""))
    klass = status.group(1)[0] if status else None
    if klass is None:
        reply = _SMTP_REPLY_RE.search(fields.get("diagnostic-code", ""))
        klass = reply.group(1) if reply else None
    return {"5": "failed", "4": "delayed", "2": "delivered"}.get(klass or "", "failed")


def _only_success(status_parts: list[Message]) -> bool:
    actions = [
        _action_of(dict(b))
        for p in status_parts
        for b in _field_blocks(p)
        if any(n in ("final-recipient", "original-recipient", "action") for n, _ in b)
    ]
    return bool(actions) and all(a in ("delivered", "relayed", "expanded") for a in actions)


def _from_dsn(status_parts: list[Message], parts: list[Message], mail: ParsedMail | None) -> Bounce | None:
    envelope_id = None
    failed: list[tuple[str, dict[str, str]]] = []
    delayed: list[tuple[str, dict[str, str]]] = []
    anonymous: list[dict[str, str]] = []  # failure blocks with no recipient field at all
    for part in status_parts:
        for block in _field_blocks(part):
            fields = dict(block)
            if envelope_id is None and fields.get("original-envelope-id", "").strip():
                envelope_id = fields["original-envelope-id"].strip()
            recipient = (
                fields.get("final-recipient")
                or fields.get("original-recipient")
                or fields.get("x-actual-recipient")
            )
            is_recipient_block = recipient is not None or "action" in fields or "status" in fields
            if not is_recipient_block:
                continue
            action = _action_of(fields)
            if action not in ("failed", "delayed"):
                continue
            addr = bare_address(_typed(recipient)) if recipient else None
            if addr is None:
                anonymous.append(fields)
                continue
            (failed if action == "failed" else delayed).append((addr, fields))
    chosen = failed or delayed
    original = _original_headers(parts)
    if not chosen:
        if not anonymous:
            return None
        # A DSN that says something failed but not for whom: the MTA's header, the notice, the
        # returned message's recipients.
        human = "\n".join(_text_of(p) for p in parts if _ctype(p) == "text/plain")
        exclude = _own_side(mail)
        names = (
            _failed_header(mail) or text.recipients_in(human, exclude) or _header_addresses(original, "To")
        )
        action = _action_of(anonymous[0])
        chosen = [(a, anonymous[0]) for a in names]
        if not chosen:
            chosen = [("", anonymous[0])]
        if action == "delayed":
            delayed, failed = chosen, []
        else:
            failed = chosen
    first = chosen[0][1]
    status_match = text.STATUS_RE.search(first.get("status", ""))
    status = status_match.group(1) if status_match else None
    diagnostic = _typed(first["diagnostic-code"]) if first.get("diagnostic-code") else None
    if status is None and diagnostic:
        status = text.status_in(diagnostic)
    # RFC 3464 section 2.3.3: "delayed" is transient. A "failed" with a 4.x.x status (Postfix's
    # "delivery time expired") was given up on for this message, but says nothing final about the
    # address: temporary as well.
    permanent = bool(failed) and not (status or "").startswith("4")
    return Bounce(
        failed_recipients=tuple(a for a, _ in chosen if a),
        original_message_id=_msgid_of(original) or _text_msgid(parts),
        status=status,
        diagnostic=diagnostic,
        permanent=permanent,
        original_envelope_id=envelope_id,
        kind="failed" if failed else "delayed",
        detector="rfc3464",
    )


def _text_of(part: Message) -> str:
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        data = None
    if not isinstance(data, bytes):
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        return data.decode(charset, "replace")
    except (LookupError, Exception):  # noqa: BLE001 - an unknown charset is read as UTF-8
        return data.decode("utf-8", "replace")


def _text_msgid(parts: list[Message]) -> str | None:
    """The original's Message-ID when it is quoted as text (a copy pasted below the notice)."""
    for part in parts:
        if _ctype(part) == "text/plain":
            _, copy = text.split_notice(_text_of(part))
            found = _first_msgid(text.message_id_in(copy)) if copy else None
            if found:
                return found
    return None


def _own_side(mail: ParsedMail | None) -> set[str]:
    """Addresses that are the bounce's own sender and addressee: never the failed recipient."""
    if mail is None:
        return set()
    return {a for a in (mail.from_addr, *mail.to_addrs, *mail.cc_addrs, *mail.reply_to) if a}


# --- RFC 5965 feedback reports (ARF) and Microsoft JMRP --------------------------------------------

_COMPLAINT_TYPES = {"abuse", "fraud", "virus", "other", "complaint", "opt-out", "unsubscribe"}


def _from_feedback(parts: list[Message]) -> Bounce | None:
    feedback = next((p for p in parts if _ctype(p) == "message/feedback-report"), None)
    if feedback is None:
        return None
    fields: dict[str, str] = {}
    recipients: list[str] = []
    for block in _field_blocks(feedback):
        for name, value in block:
            fields.setdefault(name, value)
            if name in ("original-rcpt-to", "removal-recipient"):
                addr = bare_address(_typed(value))
                if addr and addr not in recipients:
                    recipients.append(addr)
    kind = fields.get("feedback-type", "abuse").strip().lower()
    if kind not in _COMPLAINT_TYPES:
        return None  # RFC 6591 auth-failure and "not-spam" reports complain of no one
    original = _original_headers(parts)
    if not recipients:
        recipients = _header_addresses(original, "X-HmXmrOriginalRecipient") or _header_addresses(
            original, "To"
        )
    agent = fields.get("user-agent", "").strip()
    mail_from = _typed(fields.get("original-mail-from", "")).strip("<> ")
    return Bounce(
        failed_recipients=tuple(recipients),
        original_message_id=_msgid_of(original),
        status=None,
        diagnostic=f"feedback report: {kind}" + (f" ({agent})" if agent else ""),
        permanent=True,
        kind="complaint",
        detector="arf",
        original_mail_from=bare_address(mail_from) if mail_from else None,
    )


def _jmrp(parts: list[Message], mail: ParsedMail) -> Bounce | None:
    """Microsoft's Junk Mail Reporting Program: a multipart whose returned message names its
    recipient in X-HmXmrOriginalRecipient (Outlook.com's own form of an ARF complaint)."""
    original = _original_headers(parts)
    if original is None:
        return None
    recipients = _header_addresses(original, "X-HmXmrOriginalRecipient")
    if not recipients:
        return None
    return Bounce(
        failed_recipients=tuple(recipients),
        original_message_id=_msgid_of(original),
        diagnostic="feedback report: abuse (Microsoft JMRP)",
        permanent=True,
        kind="complaint",
        detector="jmrp",
    )


# --- non-standard notices ---------------------------------------------------------------------------


def _from_text(msg: Message, parts: list[Message], mail: ParsedMail) -> Bounce | None:
    subject = mail.subject or ""
    robot = text.robot_sender(mail)
    failed_header = _failed_header(mail)
    bounce_subject = bool(subject) and text.bounce_subject(subject)
    null_path = (mail.header("Return-Path") or "x").strip() in ("<>", "", "< >")
    if robot or null_path or bounce_subject:
        jmrp = _jmrp(parts, mail)
        if jmrp is not None:
            return jmrp
    auto = (mail.header("Auto-Submitted") or "no").strip().lower()
    # Signs that no person wrote this. A failure subject is not one: people write "Mail delivery
    # failed" to a help desk, and paste the notice they got below it.
    machine = robot or null_path or bool(failed_header) or not auto.startswith("no") or not mail.from_addr
    body = mail.body_text or ""
    if not machine:
        # No sign of a machine: only a notice in its own words, opening one of its first lines, in
        # a mail that is not a reply or a forward, is a bounce (people quote bounces in sentences,
        # below their own words, and in forwards; a notice says what it is at the top).
        if text.REPLY_PREFIX_RE.match(subject):
            return None
        top = text.first_lines(body, 3)
        wording = text.wording_of(top, strong_only=True)
        if wording is None or not text.opens_a_line(top, wording):
            return None
        notice, copy = text.split_notice(body[:30000])
        recognised = True
    else:
        head = body[:30000]
        notice, copy = text.split_notice(head)
        # The notice is read, not the copy of a message below it; when the notice says nothing
        # known, the whole text is.
        wording = text.wording_of(notice) or text.wording_of(head)
        recognised = (
            (wording is not None and wording.strong)
            or bool(failed_header)
            or (robot and (bounce_subject or wording is not None))
            or (null_path and bounce_subject and wording is not None)
        )
    # Worth asking Mailman's detectors: a mail system's mail, or a failure subject on mail that
    # also came from no one (null reverse path) or says it was generated automatically.
    suspected = robot or (bounce_subject and (null_path or not auto.startswith("no")))
    if not recognised and not suspected:
        return None
    if text.is_success_notice(mail, notice):
        return None
    exclude = _own_side(mail)
    recipients = failed_header or text.recipients_in(notice, exclude)
    detector = wording.name if wording is not None and recognised else None
    flufl = None
    if not recipients or not recognised:
        flufl = flufl_failures(msg)
        if flufl is not None:
            temp, perm = flufl
            found = [a for a in perm + temp if a not in exclude]
            if found:
                recipients = found
                detector = detector or "flufl.bounce"
                recognised = True
    if not recognised:
        return None
    original = _original_headers(parts)
    original_id = (
        _msgid_of(original)
        or _first_msgid(text.message_id_in(copy))
        # No copy marker: a notice never quotes its own Message-ID, so one in the text is the original's.
        or _first_msgid(text.message_id_in(body))
    )
    if not recipients:
        recipients = _header_addresses(original, "To")
    status = text.status_in(notice)
    if flufl is not None and detector == "flufl.bounce":
        temporary = not flufl[1] and bool(flufl[0])
    else:
        temporary = text.is_temporary(notice, subject, status)
    return Bounce(
        failed_recipients=tuple(recipients),
        original_message_id=original_id,
        status=status,
        diagnostic=text.diagnostic_in(notice) or (detector or "delivery failure notice"),
        permanent=not temporary,
        kind="delayed" if temporary else "failed",
        detector=detector or "notice",
    )
