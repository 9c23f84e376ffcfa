"""Building the mail we send, with the stdlib `email` API — never by gluing strings.

Every header value that may carry user input (a subject, a name) goes through `clean_header`,
which folds CR/LF and control characters to spaces, so no mail can inject a header
(CWE-93), and drops bidi overrides and invisible formatting characters (decode.visible). Every automatic mail carries Auto-Submitted (RFC 3834) and our loop header.
"""

from __future__ import annotations

import binascii
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime, formataddr
from urllib.parse import quote

from mailgate.mail.attachments import safe_filename
from mailgate.mail.decode import visible
from mailgate.mail.model import ParsedMail

LOOP_HEADER = "X-Mailgate-Loop"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HEADER_NAME = re.compile(r"[^!-9;-~]")  # RFC 5322 2.2: printable ASCII except the colon


def clean_header(value: str, limit: int = 900) -> str:
    """A header value safe to set: no line breaks or control characters, bounded length, and
    nothing that changes how it is shown without being seen (decode.visible: a bidi override in
    a subject of an older ticket, or a name, cannot reverse "[SUP-1]" in a mail client)."""
    return visible(_CONTROL.sub(" ", value or "")).strip()[:limit]


def new_message_id(domain: str) -> str:
    """A fresh Message-ID (bare): opaque and random, carrying no secret and no ticket key. Every
    header is public (STYLE.md habit 13); replies thread because we store the id we sent."""
    return f"mg.{secrets.token_hex(12)}@{domain}"


@dataclass(frozen=True)
class OutAttachment:
    """A file that travels with a mail we send: the bytes and the name it came with (shown only)."""

    filename: str
    content_type: str
    content: bytes


@dataclass
class Outgoing:
    """What to send. Addresses bare; names optional."""

    from_addr: str
    from_name: str
    to: Sequence[str]
    subject: str
    text: str
    message_id: str
    html: str | None = None
    cc: Sequence[str] = ()
    reply_to: str | None = None
    in_reply_to: str | None = None
    references: Sequence[str] = ()
    auto_submitted: str = "auto-generated"  # auto-replied for acknowledgements (RFC 3834 5)
    loop_id: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)
    date: object = None
    attachments: Sequence[OutAttachment] = ()


# RFC 2047 5(3): what may stand for itself inside a Q-encoded word in a phrase.
_Q_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q_CHAR = {b: chr(b) if b in _Q_SAFE else "_" if b == 0x20 else f"={b:02X}" for b in range(256)}
_WORD_ROOM = 75 - len("=?utf-8?q??=")  # RFC 2047 2: an encoded word is at most 75 characters


def _encoded_words(text: str) -> Iterator[str]:
    """`text` as Q-encoded UTF-8 words (RFC 2047), each within 75 characters and never splitting
    a character's bytes. Spaces inside are encoded, because a decoder drops the white space
    between two adjacent encoded words."""
    word: list[str] = []
    size = 0
    for ch in text:
        enc = "".join(_Q_CHAR[b] for b in ch.encode("utf-8"))
        if size + len(enc) > _WORD_ROOM and word:
            yield f"=?utf-8?q?{''.join(word)}?="
            word, size = [], 0
        word.append(enc)
        size += len(enc)
    if word:
        yield f"=?utf-8?q?{''.join(word)}?="


def _needs_encoding(word: str) -> bool:
    return not word.isascii() or "=?" in word  # "=?" could be read as the start of an encoded word


def _tokens(value: str) -> list[str]:
    """The header value as words to fold between: plain ASCII words stay readable (a subject's
    `[SUP-20]` tag too); each run of words that need encoding becomes encoded words, with the
    spaces of the run inside them."""
    out: list[str] = []
    run: list[str] = []
    for word in value.split(" "):
        # An empty word is a second space: inside a run it must be encoded too, or it would sit
        # between two encoded words, where a decoder drops white space.
        if _needs_encoding(word) or (run and not word):
            run.append(word)
            continue
        if run:
            out.extend(_encoded_words(" ".join(run)))
            run = []
        out.append(word)
    if run:
        out.extend(_encoded_words(" ".join(run)))
    return out


def _fold(name: str, value: str, *, encoded: bool = False) -> str:
    """One header line, folded at spaces to stay within 78 characters where words allow
    (RFC 5322 2.2.3). Values are already free of CR/LF (`clean_header`); `encoded` values (address
    lists from `_address`) are ASCII with their encoded words made already."""
    words = value.split(" ") if encoded or not _needs_encoding(value) else _tokens(value)
    line = f"{name}: {' '.join(words)}"
    if len(line) <= 78:
        return line
    out: list[str] = []
    current = f"{name}:"
    for word in words:
        if len(current) + 1 + len(word) > 78 and current != f"{name}:":
            out.append(current)
            current = " " + word
        else:
            current += " " + word
    out.append(current)
    return "\r\n".join(out)


def _address(addr: str, name: str = "") -> str:
    addr = clean_header(addr, 320)
    name = clean_header(name, 200)
    if not name:
        return addr
    if _needs_encoding(name):
        return f"{' '.join(_encoded_words(name))} <{addr}>"
    return formataddr((name, addr))


def _part(text: str, subtype: str) -> tuple[list[str], str]:
    """Headers and CRLF body of one text part: 7bit when ASCII, else quoted-printable UTF-8
    (binascii's C encoder, much faster than the stdlib's pure-Python one; bench/README.md)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii() and all(len(line) <= 998 for line in text.split("\n")):
        return [
            f'Content-Type: text/{subtype}; charset="us-ascii"',
            "Content-Transfer-Encoding: 7bit",
        ], text.replace("\n", "\r\n")
    # Encoded with LF line ends, then made CRLF: binascii takes its soft breaks' line end from the
    # first line of its input, and a text of one line has none.
    qp = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    body = qp.decode("ascii").replace("\n", "\r\n")
    return [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
    ], body


_date: tuple[int, str] = (0, "")  # the Date of mail made in this second


def _date_now() -> str:
    """The Date header (RFC 5322 3.3) of a mail made now, in local time. Made once a second:
    the header has whole seconds, and finding the local zone took a fifth of building a mail."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, format_datetime(datetime.fromtimestamp(second, UTC).astimezone()))
    return _date[1]


def build(out: Outgoing) -> bytes:
    """The finished message as bytes with CRLF line ends (RFC 5321 2.3.8).

    Written directly rather than through EmailMessage: this runs for every mail sent and the
    stdlib's generic header folding cost ten times more. Every value passes `clean_header` first,
    so no header can be injected; encoded words and quoted-printable come from the stdlib.
    """
    headers = [
        _fold("From", _address(out.from_addr, out.from_name), encoded=True),
        _fold("To", ", ".join(_address(a) for a in out.to), encoded=True),
    ]
    if out.cc:
        headers.append(_fold("Cc", ", ".join(_address(a) for a in out.cc), encoded=True))
    if out.reply_to:
        headers.append(_fold("Reply-To", _address(out.reply_to, out.from_name), encoded=True))
    headers.append(_fold("Subject", clean_header(out.subject, 900)))
    headers.append(f"Message-ID: <{clean_header(out.message_id, 500)}>")
    headers.append("Date: " + (format_datetime(out.date) if out.date is not None else _date_now()))  # type: ignore[arg-type]
    if out.in_reply_to:
        headers.append(f"In-Reply-To: <{clean_header(out.in_reply_to, 500)}>")
    refs = bounded_references([clean_header(r, 500) for r in out.references if r])
    if refs:
        headers.append(_fold("References", " ".join(f"<{r}>" for r in refs)))
    headers.append(f"Auto-Submitted: {clean_header(out.auto_submitted, 40)}")
    headers.append("X-Auto-Response-Suppress: All")  # Exchange: do not send OOF replies to this
    headers.append(_fold(LOOP_HEADER, clean_header(out.loop_id or out.from_addr)))
    for name, value in out.extra_headers.items():
        headers.append(_fold(_HEADER_NAME.sub("", name)[:76], clean_header(value)))
    headers.append("MIME-Version: 1.0")
    text_headers, text_body = _part(out.text or "", "plain")
    if not out.html:
        content = [*text_headers, "", text_body]
    else:
        boundary = f"=_mailgate_{secrets.token_hex(12)}"
        html_headers, html_body = _part(out.html, "html")
        content = [
            "Content-Type: multipart/alternative;",
            f' boundary="{boundary}"',
            "",
            f"--{boundary}",
            *text_headers,
            "",
            text_body,
            f"--{boundary}",
            *html_headers,
            "",
            html_body,
            f"--{boundary}--",
        ]
    if not out.attachments:
        raw = "\r\n".join([*headers, *content])
        if not raw.endswith("\r\n"):
            raw += "\r\n"
        # ASCII but for an internationalized address (RFC 6532) or a stray byte in an id we echo.
        return raw.encode("utf-8")
    mixed = f"=_mailgate_{secrets.token_hex(12)}"
    head = "\r\n".join(
        [*headers, "Content-Type: multipart/mixed;", f' boundary="{mixed}"', "", f"--{mixed}", *content]
    )
    pieces = [head.encode("utf-8")]
    for att in out.attachments:
        pieces += [
            f"\r\n--{mixed}\r\n{_attachment_headers(att)}\r\n\r\n".encode("ascii"),
            _base64_lines(att.content),
        ]
    pieces.append(f"\r\n--{mixed}--\r\n".encode("ascii"))
    return b"".join(pieces)


def _attachment_headers(att: OutAttachment) -> str:
    """The headers of one attached file (RFC 2046 5.1.3 multipart/mixed), written directly: the
    stdlib's parse and generation of the whole mail again cost more than the rest of building it.

    A name is only a display name, made safe (no directory part, no control or bidi
    characters); one that is not short plain ASCII goes as RFC 2231 UTF-8 in continuation
    lines. A type that is not `maintype/subtype`, or a message/* or multipart/* type (which
    would need a parsed body), goes as application/octet-stream, so the bytes arrive as they
    were stored. The body is base64 in one pass."""
    maintype, _, subtype = (att.content_type or "").lower().partition("/")
    if (
        not maintype
        or not subtype
        or maintype in ("message", "multipart")
        or not _TOKEN.fullmatch(f"{maintype}/{subtype}")
    ):
        maintype, subtype = "application", "octet-stream"
    name = safe_filename(att.filename)
    if _PLAIN_NAME.fullmatch(name):
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        disposition = f'Content-Disposition: attachment; filename="{escaped}"'
    else:
        encoded = quote(name, safe="")
        chunks = [m.group(0) for m in _CHUNK.finditer(encoded)]
        chunks[0] = "utf-8''" + chunks[0]
        disposition = "Content-Disposition: attachment;" + ";".join(
            f"\r\n filename*{i}*={chunk}" for i, chunk in enumerate(chunks)
        )
    return "\r\n".join(
        [f"Content-Type: {maintype}/{subtype}", "Content-Transfer-Encoding: base64", disposition]
    )


# A name that goes as it is in a quoted string: printable ASCII, short enough for one line.
_PLAIN_NAME = re.compile(r"[ -~]{1,60}")
# RFC 2231 continuation pieces of a percent-encoded name: never splitting a %XX escape.
_CHUNK = re.compile(r"(?:%[0-9A-F]{2}|[^%]){1,20}")


def _base64_lines(data: bytes) -> bytes:
    """Base64 in CRLF-separated lines of 76 characters (RFC 2045 6.8)."""
    encoded = binascii.b2a_base64(data, newline=False)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


_TOKEN = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


# References on our mail: the first id (the message that opened the conversation) and the newest
# few. RFC 5322 3.6.4 lets a reply's References be trimmed; mail clients and news software (RFC
# 5537 3.4.4: keep the first and the last three at least) drop the middle, and a long ticket's
# References otherwise grow by an id per mail (17 on one care desk ticket, issue 25). Threading
# needs only one id we know: the first is the ticket's own opening message, the last is the one
# answered, and our threading finders look each id up (STYLE.md habit 5).
REFERENCES_FIRST = 1
REFERENCES_LAST = 5


def bounded_references(refs: Sequence[str]) -> list[str]:
    """`refs` without repeats, oldest first, trimmed to the first and the newest few."""
    unique = list(dict.fromkeys(refs))
    if len(unique) <= REFERENCES_FIRST + REFERENCES_LAST:
        return unique
    return unique[:REFERENCES_FIRST] + unique[-REFERENCES_LAST:]


def reply_references(original: ParsedMail) -> list[str]:
    """References for a reply: the original's References plus its Message-ID (RFC 5322 3.6.4)."""
    refs = list(original.references)
    if not refs and original.in_reply_to:
        refs = [original.in_reply_to]
    if original.message_id:
        refs.append(original.message_id)
    return refs
