"""Raw bytes of one inbound message → `ParsedMail`: headers, addresses, body text, attachments, flags.

Uses the stdlib `email` parser with the compat32 policy for the MIME tree and decodes headers and
text itself (see decode.py): compat32 never raises on a malformed header when it is read, and it
skips building the header objects of `policy.default` that we would not use, which is most of the
parse time. `parse_message` must never raise: whatever goes wrong is recorded in `errors` and the
rest of the message is still read. It must not touch the database, the network or the disk.
"""

from __future__ import annotations

import binascii
import contextlib
import email
import email.parser
import email.policy
import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC
from email.message import Message
from email.utils import parsedate_to_datetime

from mailgate.mail.attachments import (
    attachment_filename,
    referenced_cids,
    shown_inline,
    tnef_content_type,
    unique_filename,
    unnamed_filename,
    unpack_tnef,
)
from mailgate.mail.bounce import detect_bounce
from mailgate.mail.decode import (
    decode_bytes,
    decode_header_value,
    parse_addresses,
    unarmor_clearsigned,
    unflow,
)
from mailgate.mail.html import cut_quote, html_to_text
from mailgate.mail.model import Attachment, ParsedMail
from mailgate.mail.msgid import parse_msgids
from mailgate.mail.reply import FORWARD_SUBJECT_RE, extract_reply
from mailgate.mail.screen import auto_reply_reason, is_own_address, is_robot_address

# Nesting deeper than any client produces is an attack or a broken generator; stop descending.
MAX_DEPTH = 30
MAX_PARTS = 500
# Bytes fed to the MIME parser at a time (see _tree).
_FEED = 65536
_ANGLE_RE = re.compile(r"[<>\s]")
_CID_PLACEHOLDER_RE = re.compile(r"\[cid:([^\]@\s]{1,200})(?:@[^\]\s]{0,200})?\]", re.IGNORECASE)


class _Walk:
    """Collects body pieces and attachments while descending the MIME tree once."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[Attachment] = []
        self.tnef_text: list[str] = []  # the body a winmail.dat carried (see _tnef)
        self.tnef_html: list[str] = []
        self.parts = 0

    def visit(self, part: Message, depth: int, in_related: bool = False) -> None:
        self.parts += 1
        if depth > MAX_DEPTH or self.parts > MAX_PARTS:
            if depth > MAX_DEPTH:
                self.errors.append(f"MIME nesting deeper than {MAX_DEPTH}; inner parts ignored")
            else:
                self.errors.append(f"more than {MAX_PARTS} MIME parts; the rest ignored")
            self.parts = MAX_PARTS + 2  # report once
            raise _Stop
        ctype = _content_type(part)
        maintype = ctype.split("/", 1)[0]
        if part.is_multipart() and maintype == "multipart":
            payload = part.get_payload()
            if not isinstance(payload, list):
                return
            children = [c for c in payload if isinstance(c, Message)]  # a multipart holds parts
            if ctype == "multipart/alternative":
                self._alternative(children, depth)
            elif ctype == "multipart/signed" and len(children) == 2 and _is_signature(children[1]):
                # RFC 1847 2.1: the second part only verifies the first (Outlook's smime.p7s,
                # Thunderbird's and Mutt's OpenPGP signature.asc); the agent reads the first.
                self.visit(children[0], depth + 1)
            else:
                related = ctype == "multipart/related"
                for i, child in enumerate(children):
                    # In multipart/related only the first part is the body; the rest are resources
                    # it references (RFC 2387), such as inline images.
                    self.visit(child, depth + 1, in_related=related and i > 0)
            return
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            # RFC 3464 status fields are readable text an agent wants to see beside the bounce; the
            # stdlib parses them into one header block per recipient.
            blocks = part.get_payload()
            if isinstance(blocks, list):
                text = "\n".join(_block_text(b) for b in blocks)
                self.plain.append(text)
            else:
                self.plain.append(self._text(part, ctype))
            return
        if maintype == "multipart":
            # Declared multipart but no boundary found (StartBoundaryNotFoundDefect): the stdlib
            # leaves the raw body as a string. Show it as text rather than lose it.
            self.plain.append(self._text(part, "text/plain"))
            return
        if ctype == "message/rfc822" or (part.is_multipart() and maintype == "message"):
            self._forwarded(part, depth)
            return
        if _is_attachment(part, ctype) or (in_related and maintype != "text"):
            self._attachment(part, ctype, in_related)
            return
        if ctype == "text/html":
            self.html.append(self._text(part, ctype))
            return
        if ctype in ("text/plain", "text/rfc822-headers"):
            self.plain.append(self._text(part, ctype))
            return
        self._attachment(part, ctype, in_related)

    def _alternative(self, children: list[Message], depth: int) -> None:
        # RFC 2046 5.1.4: alternatives in increasing faithfulness; we prefer plain text (what the
        # writer typed) and fall back to the richest other alternative.
        plain = [
            c for c in children if _content_type(c) == "text/plain" and not _is_attachment(c, "text/plain")
        ]
        if plain:
            self.visit(plain[0], depth + 1)
            # Attachments nested in a richer alternative (Apple Mail puts images in related) still count.
            for child in children:
                if child is not plain[0] and child.is_multipart():
                    sub = _Walk(self.errors)
                    sub.parts = self.parts
                    sub.visit(child, depth + 1)
                    self.parts = sub.parts
                    self.attachments.extend(sub.attachments)
                    if not self.html:
                        self.html.extend(sub.html)
                elif child is not plain[0] and _content_type(child) == "text/html" and not self.html:
                    self.html.append(self._text(child, "text/html"))
            return
        for child in reversed(children):
            before = (len(self.plain), len(self.html))
            self.visit(child, depth + 1)
            if (len(self.plain), len(self.html)) != before:
                return

    def _forwarded(self, part: Message, depth: int) -> None:
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(inner, Message):
            self._attachment(part, "message/rfc822", False)
            return
        raw = _as_bytes(inner)
        subject = decode_header_value(_raw_header(inner, "Subject"))
        name = attachment_filename(part) or f"{subject or 'forwarded message'}.eml"
        self.attachments.append(Attachment(filename=name, content_type="message/rfc822", content=raw))
        # The forwarded text is part of what the writer sent us: show it in the body, under the
        # header block mail clients print for an inline forward.
        sub = _Walk(self.errors)
        sub.parts = self.parts
        sub.visit(inner, depth + 1)
        self.parts = sub.parts
        self.attachments.extend(sub.attachments)
        text = "\n\n".join(p for p in sub.plain if p.strip()) or (
            html_to_text("\n".join(sub.html)) if sub.html else ""
        )
        head = ["---------- Forwarded message ----------"]
        for label in ("From", "Date", "Subject", "To"):
            value = decode_header_value(_raw_header(inner, label))
            if value:
                head.append(f"{label}: {value}")
        self.plain.append("\n".join(head) + "\n\n" + text)

    def _attachment(self, part: Message, ctype: str, inline_resource: bool) -> None:
        try:
            content = _decoded(part)
        except Exception as exc:
            self.errors.append(f"attachment could not be decoded: {exc}")
            content = None
        if not isinstance(content, bytes):  # bytes for every leaf part; None for a multipart
            payload = part.get_payload()
            content = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
        filename = attachment_filename(part)
        ctype = tnef_content_type(filename, ctype)
        if ctype == "application/ms-tnef" and self._tnef(content):
            return
        cid = part.get("Content-ID")
        cid_text = decode_header_value(cid).strip("<> ") if cid else None
        disposition = (part.get_content_disposition() or "") if _safe_disp(part) else ""
        inline = disposition == "inline" or (inline_resource and disposition != "attachment")
        if not filename:
            filename = unnamed_filename(ctype, cid_text, _raw_header(part, "Content-Description") or None)
        self.attachments.append(
            Attachment(
                filename=filename,
                content_type=ctype,
                content=content,
                content_id=cid_text or None,
                inline=inline,
            )
        )

    def _tnef(self, content: bytes) -> bool:
        """Outlook's winmail.dat replaced by the files it holds; True when nothing else of it is
        worth keeping. Its message text is kept aside for a mail that has no other."""
        unpacked = unpack_tnef(content)
        if unpacked is None:
            return False
        self.attachments.extend(unpacked.attachments)
        if unpacked.text:
            self.tnef_text.append(unpacked.text.replace("\r\n", "\n").replace("\x00", ""))
        elif unpacked.html:
            self.tnef_html.append(unpacked.html)
        return unpacked.complete

    def _text(self, part: Message, ctype: str) -> str:
        try:
            data = _decoded(part)
        except Exception as exc:
            self.errors.append(f"{ctype} part could not be decoded: {exc}")
            data = None
        if not isinstance(data, bytes):  # bytes for every leaf part; None for a multipart
            payload = part.get_payload()
            data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
        try:
            charset = part.get_content_charset()
        except Exception:
            charset = None
        text = decode_bytes(data, charset, self.errors, f" in {ctype} part")
        # NUL cannot be stored in PostgreSQL text and is never meant by a writer.
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
        if ctype == "text/plain" and _param(part, "format") == "flowed":
            text = unflow(text, delsp=_param(part, "delsp") == "yes")
        if ctype == "text/plain" and "-----BEGIN PGP SIGNED MESSAGE-----" in text[:200]:
            text = unarmor_clearsigned(text)
        return text


class _Stop(Exception):
    """Raised to stop descending a MIME tree that is too large or too deep."""


def _block_text(block: object) -> str:
    if not isinstance(block, Message):
        return ""
    return "".join(f"{k}: {decode_header_value(v)}\n" for k, v in block.items())


def _raw_header(msg: Message, name: str) -> str:
    """A header's first value as sent. `Message.get` under compat32 replaces each raw 8-bit byte
    with U+FFFD (a forwarded mail's UTF-8 subject would read "Pr��sentation");
    `decode_header_value` decodes the raw value as the top-level headers are decoded."""
    low = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == low:
            return value if isinstance(value, str) else str(value)
    return ""


def _param(part: Message, name: str) -> str:
    """A Content-Type parameter, lowercased, "" when absent or unreadable."""
    try:
        value = part.get_param(name)
    except Exception:
        return ""
    return value.strip().lower() if isinstance(value, str) else ""


_SIGNATURE_TYPES = frozenset(
    {"application/pkcs7-signature", "application/x-pkcs7-signature", "application/pgp-signature"}
)


def _is_signature(part: Message) -> bool:
    return _content_type(part) in _SIGNATURE_TYPES


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _safe_disp(part: Message) -> bool:
    try:
        part.get_content_disposition()
        return True
    except Exception:
        return False


def _is_attachment(part: Message, ctype: str) -> bool:
    """A part shown as a file rather than as body text (RFC 2183 disposition, or a named non-text part)."""
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    if disposition == "attachment":
        return True
    if ctype.startswith("text/") and disposition != "inline":
        # A named text part with no disposition is a file Outlook attached (notes.txt).
        return bool(attachment_filename(part)) and ctype != "text/html"
    return False


def _decoded(part: Message) -> bytes | None:
    """The part's content, transfer-decoded. A base64 part is decoded in one step: the stdlib
    splits the encoded text into lines and joins them again first (about five times an
    attachment's size at once); binascii skips the line breaks itself. Anything it refuses
    (bad padding, 8-bit bytes) takes the stdlib's lenient path, with its repairs."""
    if not part.is_multipart() and str(part.get("Content-Transfer-Encoding", "")).strip().lower() == "base64":
        payload = part.get_payload()
        if isinstance(payload, str):
            try:
                return binascii.a2b_base64(payload.encode("ascii"))
            except (UnicodeEncodeError, binascii.Error):
                pass
    content = part.get_payload(decode=True)
    return content if isinstance(content, bytes) else None


def _tree(raw: bytes) -> Message:
    """The MIME tree of `raw`, fed to the parser in pieces: `email.message_from_bytes` decodes
    the whole message to one string and reads it back through a StringIO, several times the
    message's size at once (a 25 MB attachment took the worker past 300 MB)."""
    parser = email.parser.BytesFeedParser(policy=email.policy.compat32)
    for start in range(0, len(raw), _FEED):
        parser.feed(raw[start : start + _FEED])
    return parser.close()


def _as_bytes(msg: Message) -> bytes:
    try:
        return msg.as_bytes(policy=email.policy.compat32)
    except Exception:
        try:
            return str(msg).encode("utf-8", "surrogateescape")
        except Exception:
            return b""


def parse_message(raw: bytes, *, own_addresses: Iterable[str] = (), null_sender: bool = False) -> ParsedMail:
    """Everything mailgate understands of one message. Never raises; problems go to `errors`.

    `null_sender`: the envelope's reverse path was null (MAIL FROM:<>). mailgate is the final
    delivery of mail it takes by SMTP, LMTP or a pipe, and a final delivery writes the reverse path
    into a Return-Path on top (RFC 5321 4.4): read so, the screen and the bounce detector see a
    delivery report the same whichever way it came (not the stored bytes, which stay as sent)."""
    mail = ParsedMail()
    errors = mail.errors
    if isinstance(raw, str):  # tolerate a caller handing us text
        raw = raw.encode("utf-8", "surrogateescape")
    if not isinstance(raw, bytes | bytearray | memoryview):
        errors.append(f"input is {type(raw).__name__}, not bytes")
        return mail
    try:
        msg = _tree(bytes(raw))
    except Exception as exc:  # the feed parser is lenient; this is a last resort
        errors.append(f"message could not be parsed: {type(exc).__name__}")
        return _headers_only(mail, bytes(raw), tuple(own_addresses), null_sender)
    for step in (_fill_headers, _fill_body, _fill_flags):
        try:
            if step is _fill_flags and null_sender:
                mail.headers.insert(0, ("Return-Path", "<>"))
            step(mail, msg, tuple(own_addresses))
        except RecursionError:
            errors.append(f"{step.__name__[6:]}: message structure too deep")
        except Exception as exc:  # never lose the message over one broken part
            errors.append(f"{step.__name__[6:]}: {type(exc).__name__}: {exc}")
    return mail


def _headers_only(
    mail: ParsedMail, raw: bytes, own: tuple[str, ...], null_sender: bool = False
) -> ParsedMail:
    """When the body cannot be parsed (e.g. MIME nested thousands deep): keep who sent it and
    what it is about, and the start of the raw body as text, so it can still be ticketed."""
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        _fill_headers(mail, headers, own)
        if null_sender:
            mail.headers.insert(0, ("Return-Path", "<>"))
    except Exception as exc:  # noqa: BLE001 - nothing more to be had from this message
        mail.errors.append(f"headers could not be parsed either: {type(exc).__name__}")
        return mail
    parts = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)
    body = parts[1] if len(parts) == 2 else b""
    mail.body_text = body[:65536].decode("utf-8", "replace").replace("\x00", "")
    mail.reply_text = mail.body_text
    mail.errors.append("body kept as raw text: the MIME structure could not be read")
    return mail


def _text_charset(msg: Message) -> str | None:
    """The charset the message declares for its first text part: what raw 8-bit headers are
    most likely written in when they are not UTF-8 (see decode.unsurrogate)."""
    stack = [msg]
    for _ in range(20):  # a text part sits near the top of any mail a person writes
        if not stack:
            break
        part = stack.pop(0)
        if part.is_multipart():
            payload = part.get_payload()
            if isinstance(payload, list):
                stack.extend(p for p in payload if isinstance(p, Message))
            continue
        if _content_type(part).startswith("text/"):
            try:
                return part.get_content_charset()
            except Exception:
                return None
    return None


def _fill_headers(mail: ParsedMail, msg: Message, own: tuple[str, ...]) -> None:
    hint = _text_charset(msg)
    raw_items = msg.raw_items() if hasattr(msg, "raw_items") else msg.items()
    raw_by_name: dict[str, list[str]] = {}
    for name, value in raw_items:
        name = decode_header_value(name)
        value = value if isinstance(value, str) else str(value)
        raw_by_name.setdefault(name.lower(), []).append(value)
        mail.headers.append((name, decode_header_value(value, hint)))
    if not mail.headers and msg.defects:
        mail.errors.append("no headers found")

    def first(name: str) -> str | None:
        values = raw_by_name.get(name)
        return values[0] if values else None

    mail.subject = decode_header_value(first("subject") or "", hint)
    sender = parse_addresses(raw_by_name.get("from", []), hint)
    if not sender:
        # Some bulk senders only have Sender: or a Return-Path; better than no requester at all.
        sender = parse_addresses(raw_by_name.get("sender", []), hint)
    if sender:
        mail.from_name, mail.from_addr = sender[0]
    else:
        mail.errors.append("no From address")
    mail.to_addrs = [a for _, a in parse_addresses(raw_by_name.get("to", []))]
    mail.cc_addrs = [a for _, a in parse_addresses(raw_by_name.get("cc", []))]
    reply_to = parse_addresses(raw_by_name.get("reply-to", []), hint)
    mail.reply_to = [a for _, a in reply_to]
    author = _relayed_author(mail, raw_by_name, reply_to, own)
    if author is not None:
        mail.from_name, mail.from_addr = author
    ids = _msgids(decode_header_value(first("message-id") or ""))
    mail.message_id = ids[0] if ids else None
    irt = _msgids(decode_header_value(first("in-reply-to") or ""))
    mail.in_reply_to = irt[0] if irt else None
    refs: list[str] = []
    for value in raw_by_name.get("references", []):
        refs.extend(_msgids(decode_header_value(value)))
    mail.references = list(dict.fromkeys(refs))
    date = first("date")
    if date:
        try:
            parsed = parsedate_to_datetime(decode_header_value(date))
            mail.date = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except Exception:
            mail.errors.append(f"unreadable Date: {decode_header_value(date)[:80]!r}")


# "'Carl Customer' via Support" (Google Groups), "Carl Customer via Support-list" (Mailman's
# DMARC munging): a list that put its own address in From names the author in the display name.
_VIA_RE = re.compile(r"^\s*'?(?P<name>.*?)'?\s+via\s+\S.*$", re.IGNORECASE)
# A no-reply sender (not mailer-daemon or postmaster: a bounce's Reply-To names no author).
_NOREPLY_RE = re.compile(r"no[-_.]?reply|do[-_.]?not[-_.]?reply", re.IGNORECASE)
_LIST_MARKS = ("list-id", "x-google-group-id", "x-beenthere", "mailing-list", "list-post")


def _relayed_author(
    mail: ParsedMail, raw: dict[str, list[str]], reply_to: list[tuple[str, str]], own: tuple[str, ...]
) -> tuple[str, str] | None:
    """The person who wrote a mail that a relay sent under its own From, or None.

    - A list or group that rewrites From for DMARC (a domain with p=reject cannot be sent in
      From by anyone else): Google Groups puts the group in From and the author in
      X-Original-Sender and Reply-To; Mailman puts the list in From and the author in Reply-To
      (or Cc). The requester is the author, not the group every answer would go to.
    - A no-reply sender naming one person in Reply-To (a web form, a shop or booking system
      passing on a customer's message): RFC 5322 section 3.6.2 says answers go to Reply-To.
    Never one of our own addresses: a desk's address in Reply-To is an agent's setting, not an author.
    """
    if not mail.from_addr:
        return None
    people = [(n, a) for n, a in reply_to if a != mail.from_addr and not is_own_address(a, own)]
    relay = any(raw.get(mark) for mark in _LIST_MARKS)
    via = _VIA_RE.match(mail.from_name) if relay else None
    if via is not None:
        original = parse_addresses(raw.get("x-original-sender", []))
        found = original[0] if original else (people[0] if len(people) == 1 else None)
        if found is None and not people:
            # Mailman with Reply-To set to the list puts the author in Cc instead.
            copied = [(n, a) for n, a in parse_addresses(raw.get("cc", [])) if not is_own_address(a, own)]
            found = copied[0] if len(copied) == 1 else None
        if found is not None and not is_own_address(found[1], own):
            return (via.group("name").strip() or found[0], found[1])
        return None
    noreply = _NOREPLY_RE.search(mail.from_addr.rpartition("@")[0])
    if noreply and len(people) == 1 and not is_robot_address(people[0][1]):
        return people[0]
    return None


def _fill_body(mail: ParsedMail, msg: Message, own: tuple[str, ...]) -> None:
    walk = _Walk(mail.errors)
    with contextlib.suppress(_Stop):
        walk.visit(msg, 0)
    plain = [p for p in walk.plain if p.strip()]
    if not plain and not any(h.strip() for h in walk.html):
        # Outlook sent the message in Rich Text only: the text is in its winmail.dat.
        plain = [t for t in walk.tnef_text if t.strip()]
        walk.html.extend(walk.tnef_html)
    if walk.html:
        mail.body_html = "\n".join(walk.html)
    mail.attachments = _as_shown(walk.attachments, mail.body_html)
    sender = f"{mail.from_name} {mail.from_addr}"
    forward = bool(FORWARD_SUBJECT_RE.match(mail.subject or ""))
    if plain:
        mail.body_text = "\n\n".join(plain)
        if "[cid:" in mail.body_text:
            # Outlook writes an inline image into its text alternative as its Content-ID,
            # "[cid:image001.png@01DA47B2.5C3E1F30]"; the image is an attachment, named as Gmail
            # names it in its own text part.
            mail.body_text = _CID_PLACEHOLDER_RE.sub(r"[image: \1]", mail.body_text)
    elif mail.body_html:
        mail.body_text = html_to_text(mail.body_html)
        # HTML-only mail: its client marked where the history starts; cut there first.
        above = None if forward else cut_quote(mail.body_html)
        if above is not None:
            mail.reply_text = extract_reply(
                html_to_text(above), sender, forward=forward, subject=mail.subject
            )
    if not mail.reply_text:
        mail.reply_text = extract_reply(mail.body_text, sender, forward=forward, subject=mail.subject)
    defects = {type(d).__name__ for part in _parts(msg) for d in getattr(part, "defects", ())}
    for name in sorted(defects):
        mail.errors.append(f"MIME defect: {name}")


def _as_shown(attachments: list[Attachment], html: str | None) -> list[Attachment]:
    """Inline or listed as clients show them (attachments.shown_inline), no two with one name."""
    shown = referenced_cids(html)
    out: list[Attachment] = []
    names: list[str] = []
    for att in attachments:
        inline = shown_inline(att.content_type, att.inline, att.content_id, shown)
        name = unique_filename(att.filename, names)
        names.append(name)
        same = inline == att.inline and name == att.filename
        out.append(att if same else replace(att, inline=inline, filename=name))
    return out


def _msgids(value: str) -> list[str]:
    """Bare Message-IDs (RFC 5322 3.6.4); ids sent without brackets never keep a stray "<" or ">"."""
    ids = (_ANGLE_RE.sub("", i) for i in parse_msgids(value))
    return [i for i in ids if i]


def _parts(msg: Message) -> list[Message]:
    found: list[Message] = []
    stack = [(msg, 0)]
    while stack and len(found) < MAX_PARTS:
        part, depth = stack.pop()
        found.append(part)
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list) and depth < MAX_DEPTH:
            stack.extend((p, depth + 1) for p in payload if isinstance(p, Message))
    return found


def _fill_flags(mail: ParsedMail, msg: Message, own: tuple[str, ...]) -> None:
    mail.bounce = detect_bounce(msg, mail)
    mail.is_bounce = mail.bounce is not None
    mail.auto_reply_reason = auto_reply_reason(mail, own)
    if mail.is_bounce and not mail.auto_reply_reason:
        mail.auto_reply_reason = "delivery status notification (bounce)"
    mail.is_auto_reply = mail.auto_reply_reason is not None
