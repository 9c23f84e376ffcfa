"""Building the mail we send, with the stdlib `email` API — never by gluing strings.

Every header value that may carry user input (a subject, a name) goes through `clean_header`,
which folds CR/LF and control characters to spaces, so no mail can inject a header
(CWE-93). Every automatic mail carries Auto-Submitted (RFC 3834) and our loop header.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import quoprimime
from email.charset import QP, Charset
from email.header import Header
from email.utils import format_datetime, formataddr, localtime

from mailgate.mail.model import ParsedMail

LOOP_HEADER = "X-Mailgate-Loop"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HEADER_NAME = re.compile(r"[^!-9;-~]")  # RFC 5322 2.2: printable ASCII except the colon


def clean_header(value: str, limit: int = 900) -> str:
    """A header value safe to set: no line breaks or control characters, bounded length."""
    return _CONTROL.sub(" ", value or "").strip()[:limit]


def new_message_id(domain: str, token: str | None = None) -> str:
    """A fresh Message-ID (bare). A reply token in front lets a reply find its ticket by itself."""
    rand = secrets.token_hex(8)
    left = f"{token}.{rand}" if token else f"mg.{rand}"
    return f"{left}@{domain}"


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


_UTF8_QP = Charset("utf-8")
_UTF8_QP.header_encoding = QP  # RFC 2047 Q-encoding: names and subjects stay half readable


def _fold(name: str, value: str) -> str:
    """One header line, folded at spaces to stay near 78 characters (RFC 5322 2.2.3).

    Values are already free of CR/LF (`clean_header`); non-ASCII text becomes RFC 2047 encoded
    words, folded by the stdlib's Header.
    """
    if not value.isascii():
        return f"{name}: " + Header(value, _UTF8_QP, maxlinelen=78, header_name=name).encode(linesep="\r\n")
    line = f"{name}: {value}"
    if len(line) <= 78:
        return line
    out: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if len(current) + 1 + len(word) > 78 and current.strip() and current != f"{name}:":
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
    if not name.isascii():
        return f"{Header(name, _UTF8_QP).encode()} <{addr}>"
    return formataddr((name, addr))


def _part(text: str, subtype: str) -> tuple[list[str], str]:
    """Headers and CRLF body of one text part: 7bit when ASCII, else quoted-printable UTF-8."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text.isascii() and all(len(line) <= 998 for line in text.split("\n")):
        return [
            f'Content-Type: text/{subtype}; charset="us-ascii"',
            "Content-Transfer-Encoding: 7bit",
        ], text.replace("\n", "\r\n")
    # quoprimime encodes code points below 256 as bytes: hand it the UTF-8 bytes as latin-1 text.
    body = quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=76, eol="\r\n")
    return [
        f'Content-Type: text/{subtype}; charset="utf-8"',
        "Content-Transfer-Encoding: quoted-printable",
    ], body


def build(out: Outgoing) -> bytes:
    """The finished message as bytes with CRLF line ends (RFC 5321 2.3.8).

    Written directly rather than through EmailMessage: this runs for every mail sent and the
    stdlib's generic header folding cost ten times more. Every value passes `clean_header` first,
    so no header can be injected; encoded words and quoted-printable come from the stdlib.
    """
    headers = [
        _fold("From", _address(out.from_addr, out.from_name)),
        _fold("To", ", ".join(_address(a) for a in out.to)),
    ]
    if out.cc:
        headers.append(_fold("Cc", ", ".join(_address(a) for a in out.cc)))
    if out.reply_to:
        headers.append(_fold("Reply-To", _address(out.reply_to, out.from_name)))
    headers.append(_fold("Subject", clean_header(out.subject, 900)))
    headers.append(f"Message-ID: <{clean_header(out.message_id, 500)}>")
    headers.append("Date: " + format_datetime(out.date if out.date is not None else localtime()))  # type: ignore[arg-type]
    if out.in_reply_to:
        headers.append(f"In-Reply-To: <{clean_header(out.in_reply_to, 500)}>")
    refs = [clean_header(r, 500) for r in out.references if r]
    if refs:
        # Keep the first and the newest ids when long (RFC 5322 3.6.4 allows trimming the middle).
        if len(refs) > 20:
            refs = refs[:1] + refs[-19:]
        headers.append(_fold("References", " ".join(f"<{r}>" for r in refs)))
    headers.append(f"Auto-Submitted: {clean_header(out.auto_submitted, 40)}")
    headers.append("X-Auto-Response-Suppress: All")  # Exchange: do not send OOF replies to this
    headers.append(_fold(LOOP_HEADER, clean_header(out.loop_id or out.from_addr)))
    for name, value in out.extra_headers.items():
        headers.append(_fold(_HEADER_NAME.sub("", name)[:76], clean_header(value)))
    headers.append("MIME-Version: 1.0")
    text_headers, text_body = _part(out.text or "", "plain")
    if not out.html:
        lines = [*headers, *text_headers, "", text_body]
    else:
        boundary = f"=_mailgate_{secrets.token_hex(12)}"
        html_headers, html_body = _part(out.html, "html")
        lines = [
            *headers,
            f'Content-Type: multipart/alternative; boundary="{boundary}"',
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
    raw = "\r\n".join(lines)
    if not raw.endswith("\r\n"):
        raw += "\r\n"
    return raw.encode("ascii")


def reply_references(original: ParsedMail) -> list[str]:
    """References for a reply: the original's References plus its Message-ID (RFC 5322 3.6.4)."""
    refs = list(original.references)
    if not refs and original.in_reply_to:
        refs = [original.in_reply_to]
    if original.message_id:
        refs.append(original.message_id)
    return refs
