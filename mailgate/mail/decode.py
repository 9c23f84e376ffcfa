"""Turning the bytes and encoded words of real mail into text: charsets, RFC 2047 headers, addresses.

Everything here falls back instead of failing: an unknown or wrong charset, raw 8-bit header bytes
or a broken encoded word still give readable text (and a note for `ParsedMail.errors` where the
caller passes a list). It must not parse MIME structure or make decisions about the message.
"""

from __future__ import annotations

import codecs
import re
from email.header import decode_header
from email.utils import getaddresses

# Charset labels that real mail declares but Python does not know, or knows under a narrower
# meaning than senders use. WHATWG's encoding standard makes the same substitutions: ISO-8859-1
# and US-ASCII labels are read as windows-1252 (Outlook writes smart quotes into "latin-1"
# mail), GB2312 as GB18030 (its superset, which Chinese clients actually emit), ISO-8859-9 as
# windows-1254, TIS-620 as windows-874, Shift_JIS as Windows' code page 932 (the NEC and IBM
# characters, ① and ㈱, that Japanese Windows mail is full of), EUC-KR as windows-949 and Big5 as
# Big5-HKSCS; the "x-mac-" labels of old Mac clients are the Mac code pages.
CHARSET_ALIASES: dict[str, str] = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "us-ascii": "utf-8",  # 8-bit text labelled ascii is nearly always UTF-8 (and ascii is a subset)
    "ascii": "utf-8",
    "ansi_x3.4-1968": "utf-8",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso-8859-8",
    "windows-874": "cp874",
    "x-unknown": "utf-8",
    "unknown-8bit": "utf-8",
    "x-user-defined": "cp1252",
    "utf8": "utf-8",
    "iso-8859-9": "cp1254",
    "iso8859-9": "cp1254",
    "latin5": "cp1254",
    "tis-620": "cp874",
    "iso-8859-11": "cp874",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "ms_kanji": "cp932",
    "windows-31j": "cp932",
    "csshiftjis": "cp932",
    "euc-kr": "cp949",
    "big5": "big5hkscs",
    "x-mac-roman": "mac-roman",
    "x-mac-cyrillic": "mac-cyrillic",
    "x-mac-ukrainian": "mac-cyrillic",
}

_FOLD_RE = re.compile(r"\r?\n[ \t]*")
_WS_RE = re.compile(r"[ \t]+")
_ADDR_FALLBACK_RE = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Characters that change how a line is shown without being seen (Unicode format characters, and
# the C1 controls a terminal obeys): a subject "Hi \u202e]1-PUS[" shows as "Hi [SUP-1]", an
# isolate or a mark reorders the brackets and digits around a tag, a zero-width space splits a
# tag or a word so it looks whole and is not, ESC (in C1's CSI, U+009B) redraws an admin's
# terminal. Removed from every subject and display name, as mail clients and chat services do
# with the explicit overrides (the "Trojan Source" advisory, CVE-2021-42574): letters carry their
# own direction, so Arabic and Hebrew read the same without them.
_INVISIBLE_RE = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0 and C1 controls (tab and line breaks are folded to spaces)
    "\u00ad"  # soft hyphen
    "\u061c"  # Arabic letter mark
    "\u180e"  # Mongolian vowel separator
    "\u200b\u200e\u200f"  # zero-width space; left-to-right and right-to-left marks
    "\u202a-\u202e"  # embeddings and overrides
    "\u2060-\u2064\u2066-\u206f"  # word joiner, invisible operators, isolates, deprecated formats
    "\ufeff"  # zero-width no-break space (a BOM)
    "\ufff9-\ufffb"  # interlinear annotation
    "\U000e0000-\U000e007f"  # tag characters
    "]"
)
# Zero-width joiners and non-joiners spell words in Persian, Urdu and the Indic scripts and join
# emoji sequences: kept between two characters of such text, removed beside ASCII, where they only
# split a word ("[S\u200dUP-1]" is no tag of ours, but shows as one).
_JOINER_RE = re.compile(r"(?<![^\x00-\x7f])[\u200c\u200d]|[\u200c\u200d](?![^\x00-\x7f])")


def visible(text: str) -> str:
    """`text` (a subject, a display name: one line) with nothing in it that changes how it is
    shown without being seen (`_INVISIBLE_RE`); line breaks and tabs become spaces. What
    mailgate puts in a header, a terminal or a page as a subject or a name passes through here."""
    if text.isascii():
        return _CTRL_RE.sub("", text.replace("\r", " ").replace("\n", " ").replace("\t", " "))
    text = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    return _JOINER_RE.sub("", _INVISIBLE_RE.sub("", text))


def visible_lines(text: str) -> str:
    """`text` of many lines (a message body, a comment) as `visible` makes one line: for a
    terminal, where an ESC sequence in a customer's mail could redraw what the admin reads."""
    return "\n".join(visible(line) for line in text.splitlines())


def normalize_charset(label: str | None) -> str | None:
    """A Python codec name for a declared charset label, or None if unknown or missing."""
    if not label or not isinstance(label, str):
        return None
    name = label.strip().strip("\"'").lower()
    name = CHARSET_ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except (LookupError, ValueError):
        return None


def decode_bytes(data: bytes, charset: str | None, errors: list[str] | None = None, where: str = "") -> str:
    """Text from bytes declared as `charset`, falling back so it never raises.

    Order: UTF-8 when a single-byte Latin label hides UTF-8 text; the declared charset strictly;
    then UTF-8 strictly (the usual truth behind a wrong or unknown label); then, for text that
    is not UTF-8 at all, windows-1252 (or the declared charset) with replacement characters.
    """
    codec = normalize_charset(charset)
    if codec is None and charset and errors is not None:
        errors.append(f"unknown charset {charset!r}{where}, read as UTF-8 / windows-1252")
    if codec in _LATIN_CODECS and not data.isascii():
        # Web forms and PHP mailers label UTF-8 as iso-8859-1: every Latin-1 byte string decodes,
        # so the label cannot be refuted, but a Latin-1 text that is also valid UTF-8 would need
        # a capital accented letter before a symbol ("Ã©") at every non-ASCII character: mojibake.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if codec:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
        if codec == "iso2022_jp":
            try:
                return iso2022jp_windows(data)
            except UnicodeDecodeError:
                pass
    if codec != "utf-8" and not (codec == "iso2022_jp" and data.isascii()):
        # (7-bit ISO-2022-JP always "decodes" as UTF-8, showing its escape sequences as text)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if codec in (None, "utf-8") and not _has_utf8_sequence(data):
        # Labelled UTF-8 (or ascii, or nothing) but not one valid multi-byte UTF-8 character in
        # it: a web form's or an old client's text in the sender's Windows code page, not
        # damaged UTF-8 ("système" sent as cp1252 bytes under charset=utf-8).
        if codec and errors is not None:
            errors.append(f"text not valid {charset}{where}, read as windows-1252")
        return data.decode("cp1252", errors="replace")
    if codec and errors is not None:
        errors.append(f"text not valid {charset}{where}, undecodable bytes replaced")
    # UTF-8 labelled text with a few bad bytes keeps its valid characters.
    return data.decode(codec or "cp1252", errors="replace")


_ISO2022JP_SHIFT = {
    b"\x1b$B": "jis",
    b"\x1b$@": "jis",
    b"\x1b(B": "ascii",
    b"\x1b(J": "ascii",
    b"\x1b(I": "kana",
}


def iso2022jp_windows(data: bytes) -> str:
    """ISO-2022-JP as Windows writes it (code pages 50220/50221: Outlook, Becky!, every mail of
    Japanese Windows): code page 932's characters in the JIS code space, so the NEC row 13 (①,
    ㈱, ㎡) and the IBM extensions (髙, 﨑) that the standard's JIS X 0208 lacks, and half-width
    katakana after ESC ( I. Each two-byte JIS code is moved to its Shift_JIS code and the whole
    read as cp932; raises UnicodeDecodeError on anything else, as a strict codec does."""
    out = bytearray()
    mode = "ascii"
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == 0x1B:
            shift = _ISO2022JP_SHIFT.get(data[i : i + 3])
            if shift is None:
                raise UnicodeDecodeError("iso2022_jp", data, i, i + 1, "unknown escape sequence")
            mode, i = shift, i + 3
            continue
        if mode == "jis" and b not in (0x0A, 0x0D):
            if i + 1 >= n or not (0x21 <= b <= 0x7E and 0x21 <= data[i + 1] <= 0x7E):
                raise UnicodeDecodeError("iso2022_jp", data, i, i + 1, "not a JIS code")
            j2 = data[i + 1]
            s1 = ((b - 0x21) >> 1) + 0x81
            s1 += 0x40 if s1 > 0x9F else 0
            s2 = (j2 + 0x1F + (j2 >= 0x60)) if b & 1 else j2 + 0x7E
            out += bytes((s1, s2))
            i += 2
            continue
        if mode == "kana" and 0x21 <= b <= 0x5F:
            out.append(b | 0x80)
        elif b >= 0x80:
            raise UnicodeDecodeError("iso2022_jp", data, i, i + 1, "8-bit byte in a 7-bit charset")
        else:
            out.append(b)
        i += 1
    return bytes(out).decode("cp932")


# Single-byte Latin charsets whose label is often put on UTF-8 text (see decode_bytes).
_LATIN_CODECS = frozenset({"cp1252", "iso8859-1", "iso8859-15"})
# One valid multi-byte UTF-8 character (RFC 3629 section 4, without overlongs and surrogates).
_UTF8_SEQ_RE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)


def _has_utf8_sequence(data: bytes) -> bool:
    return _UTF8_SEQ_RE.search(data) is not None


def unsurrogate(value: str, fallback: str | None = None) -> str:
    """Header text as read by the stdlib parser keeps raw 8-bit bytes as surrogates; decode them.

    RFC 6532 allows UTF-8 in headers; older clients send their local charset raw, so try UTF-8
    first, then `fallback` (the charset the message declares for its text: a Chinese or Japanese
    client that writes its subject in raw GBK or Shift_JIS writes its body in it too, and
    Thunderbird reads such headers the same way), then windows-1252.
    """
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    codec = normalize_charset(fallback)
    if codec:
        try:
            return raw.decode(codec)
        except UnicodeDecodeError:
            pass
    return raw.decode("cp1252", errors="replace")


def decode_header_value(value: object, fallback: str | None = None) -> str:
    """A header value as a person reads it: unfolded, RFC 2047 encoded words decoded, raw 8-bit
    fixed (`fallback`: the message's text charset, see `unsurrogate`)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = unsurrogate(text, fallback)
    if "\n" in text:
        text = _FOLD_RE.sub(" ", text)
    text = text.replace("\r", " ")
    if "=?" in text:
        # An encoded word may smuggle CR/LF; a decoded header value is always one line.
        text = _decode_encoded_words(text).replace("\r", " ").replace("\n", " ")
    return visible(text).strip()


def _decode_encoded_words(text: str) -> str:
    """RFC 2047: decode =?charset?enc?text?= words; whitespace between adjacent words is dropped."""
    try:
        parts = decode_header(text)
    except Exception:  # a broken base64 word: keep the text as sent rather than lose it
        return text
    out: list[str] = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(decode_bytes(chunk, charset))
    # decode_header returns bytes pieces that lost their separating spaces only between encoded
    # words (correct per RFC 2047 section 6.2); join pieces without inventing new ones.
    return _WS_RE.sub(" ", "".join(out))


# A dot-atom local part (RFC 5322 3.2.3; RFC 6532 lets it be UTF-8): quoting it changes nothing.
_DOT_ATOM = re.compile(r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*")


def bare_address(addr: str) -> str | None:
    """`local@domain` lowercased, or None if this is not an address.

    One mailbox, one spelling: `"alice"@desk.example` and `alice@desk.example.` are delivered to
    alice@desk.example (a quoted local part that needs no quotes is the same local part, RFC 5321
    4.1.2; a trailing dot is the root of the DNS), so they are read as it. Else such a spelling
    of an agent's address would not count as a claim to be that agent, and one of the desk's own
    would not be known as ours (an acknowledgement mailed to the desk itself)."""
    addr = unsurrogate(addr).strip().strip("<>").strip()
    if not addr or "@" not in addr or any(c.isspace() for c in addr):
        return None
    local, _, domain = addr.rpartition("@")
    if len(local) > 2 and local[0] == local[-1] == '"' and _DOT_ATOM.fullmatch(local[1:-1]):
        local = local[1:-1]
    if domain.endswith(".") and not domain.endswith(".."):
        domain = domain[:-1]
    if not local or not domain:
        return None
    return f"{local}@{domain}".lower()


# The null reverse path (RFC 5321 4.5.5: MAIL FROM:<>, the envelope sender of a delivery report
# or any notification that must not be answered), as the inbox stores it whatever brought it.
NULL_REVERSE_PATH = "<>"
# What Postfix's pipe(8) puts in ${sender} for the null reverse path unless `null_sender=` says
# otherwise: no address has no domain, so on an envelope it means "<>".
_NULL_STAND_INS = frozenset({"<>", "< >", "mailer-daemon", "<mailer-daemon>"})


def reverse_path(value: str | None) -> str:
    """The envelope sender as stored: lowercased, without angle brackets, and the null reverse
    path as `NULL_REVERSE_PATH` however the intake got it (aiosmtpd hands "<>", a pipe "" or
    "MAILER-DAEMON"), so a delivery report is one thing whether it came by SMTP, LMTP or a pipe.
    "" (or None) is an envelope nobody gave (IMAP, a file): unknown, not null. A caller that
    was handed an explicit empty sender (a pipe's `--sender ""`) passes NULL_REVERSE_PATH."""
    text = (value or "").strip().lower()
    if text in _NULL_STAND_INS:
        return NULL_REVERSE_PATH
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text


def plus_parts(addr: str) -> tuple[str, str | None]:
    """(`local@domain` lowercased without its `+tag`, the tag as written or None).

    `support+t1a2@localhost` reaches the mailbox `support@localhost` and carries `t1a2`: one
    reading for every decision made on it (whose desk, our own address or not, which reply
    token), so that a loop guard and the threading never disagree on what an address is. The
    domain is after the last `@`; the tag starts at the first `+` of the local part."""
    local, at, domain = addr.strip().rpartition("@")
    if not at:
        return addr.strip().lower(), None
    base, plus, tag = local.partition("+")
    return f"{base}@{domain}".lower(), (tag if plus else None)


def _encoded_mailbox(token: str) -> list[tuple[str, str]]:
    """A whole mailbox inside one encoded word, `=?utf-8?Q?Hans_M=C3=BCller_=3Chans=40x=2Ede=3E?=`:
    RFC 2047 section 5 forbids it (an encoded word may only stand for a display name), but mass
    mailers and web forms that encode the entire From value send it, and every client shows it.
    Decoded, it is parsed as the address it stands for."""
    try:
        pairs = getaddresses([decode_header_value(token)])
    except Exception:
        return []
    return [(name, bare) for name, addr in pairs if (bare := bare_address(addr))]


def parse_addresses(values: list[str], fallback: str | None = None) -> list[tuple[str, str]]:
    """(display name, bare lowercase address) pairs from raw header values, in order, deduplicated.

    Parses the raw value first and decodes names after, so an encoded comma or quote in a display
    name cannot split an address. Values `getaddresses` cannot make sense of fall back to any
    `x@y` found in the text.
    """
    result: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in values:
        raw = raw if isinstance(raw, str) else str(raw)
        raw = _FOLD_RE.sub(" ", raw)
        found: list[tuple[str, str]] = []
        try:
            pairs = getaddresses([raw])
        except Exception:
            pairs = []
        for name, addr in pairs:
            bare = bare_address(addr)
            if bare:
                found.append((decode_header_value(name, fallback), bare))
            elif "=?" in addr:
                found.extend(_encoded_mailbox(addr))
        if not found and "@" in raw:
            for match in _ADDR_FALLBACK_RE.findall(unsurrogate(raw)):
                bare = bare_address(match)
                if bare:
                    found.append(("", bare))
        for name, bare in found:
            if bare not in seen:
                seen.add(bare)
                result.append((name.strip().strip('"').strip(), bare))
    return result


def unflow(text: str, delsp: bool = False) -> str:
    """RFC 3676 `format=flowed` text as the writer typed it: soft line breaks joined.

    Apple Mail, Thunderbird and mobile clients wrap every paragraph at 72-78 columns and mark each
    wrap with a trailing space; with `delsp=yes` (Apple Mail, iOS) that space is not part of the
    text and a long word or URL is cut at any character. Read as fixed lines, the agent sees a URL
    or a word cut in two and every paragraph broken, and a wrapped "On … wrote:" line in two.
    Quote depth is kept (a flowed line joins only a next line of the same depth, section 4.5), the
    space a client stuffed before a line starting with a space, ">" or "From " is removed (4.4),
    and the signature separator "-- " stays a line of its own (4.3).
    """
    out: list[str] = []
    open_depth: int | None = None  # quote depth of a paragraph still open in out[-1]
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        body = line[depth:]
        if body.startswith(" "):
            body = body[1:]
        flowed = body.endswith(" ") and body != "-- "
        if flowed and delsp:
            body = body[:-1]
        if open_depth is not None and open_depth == depth:
            out[-1] += body
        else:
            out.append(f"{'>' * depth} {body}" if depth else body)
        open_depth = depth if flowed else None
    return "\n".join(out)


_CLEARSIGN_START = "-----BEGIN PGP SIGNED MESSAGE-----"


def unarmor_clearsigned(text: str) -> str:
    """The text of an inline OpenPGP clear-signed message (RFC 4880 section 7), as the writer
    typed it: without the armor header and its "Hash:" lines, with dash-escaping ("- --")
    undone, and without the signature block. Enigmail, Mutt and Kmail send this in text/plain;
    read as is, the agent sees armor, and commands at the top of an agent's reply are not at
    the top. Text that is not clear-signed is returned unchanged."""
    if not text.lstrip().startswith(_CLEARSIGN_START):
        return text
    lines = text.lstrip().split("\n")
    i = 1
    while i < len(lines) and lines[i].strip():  # armor headers ("Hash: SHA256") up to a blank line
        i += 1
    body: list[str] = []
    for line in lines[i + 1 :]:
        if line.rstrip() == "-----BEGIN PGP SIGNATURE-----":
            break
        body.append(line[2:] if line.startswith("- ") else line)
    return "\n".join(body)
