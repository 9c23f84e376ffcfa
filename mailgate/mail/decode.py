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
# mail), GB2312 as GB18030 (its superset, which Chinese clients actually emit).
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
}

_FOLD_RE = re.compile(r"\r?\n[ \t]*")
_WS_RE = re.compile(r"[ \t]+")
_ADDR_FALLBACK_RE = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")
_CTRL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


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

    Order: the declared charset strictly; then UTF-8 strictly (the usual truth behind a wrong or
    unknown label); then the declared charset (or windows-1252) with replacement characters.
    """
    codec = normalize_charset(charset)
    if codec is None and charset and errors is not None:
        errors.append(f"unknown charset {charset!r}{where}, read as UTF-8 / windows-1252")
    if codec:
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    if codec != "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    if codec and errors is not None:
        errors.append(f"text not valid {charset}{where}, undecodable bytes replaced")
    # UTF-8 labelled text with a few bad bytes keeps its valid characters; anything else that is
    # not UTF-8 is most likely a Windows single-byte encoding.
    return data.decode(codec or "cp1252", errors="replace")


def _unsurrogate(value: str) -> str:
    """Header text as read by the stdlib parser keeps raw 8-bit bytes as surrogates; decode them.

    RFC 6532 allows UTF-8 in headers; older clients send their local charset raw, so try UTF-8
    first and fall back to windows-1252.
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
        return raw.decode("cp1252", errors="replace")


def decode_header_value(value: object) -> str:
    """A header value as a person reads it: unfolded, RFC 2047 encoded words decoded, raw 8-bit fixed."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = _unsurrogate(text)
    if "\n" in text:
        text = _FOLD_RE.sub(" ", text)
    text = text.replace("\r", " ")
    if "=?" in text:
        # An encoded word may smuggle CR/LF; a decoded header value is always one line.
        text = _decode_encoded_words(text).replace("\r", " ").replace("\n", " ")
    return _CTRL_RE.sub("", text).strip()


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


def bare_address(addr: str) -> str | None:
    """`local@domain` lowercased, or None if this is not an address."""
    addr = _unsurrogate(addr).strip().strip("<>").strip()
    if not addr or "@" not in addr or any(c.isspace() for c in addr):
        return None
    local, _, domain = addr.rpartition("@")
    if not local or not domain:
        return None
    return addr.lower()


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


def parse_addresses(values: list[str]) -> list[tuple[str, str]]:
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
                found.append((decode_header_value(name), bare))
        if not found and "@" in raw:
            for match in _ADDR_FALLBACK_RE.findall(_unsurrogate(raw)):
                bare = bare_address(match)
                if bare:
                    found.append(("", bare))
        for name, bare in found:
            if bare not in seen:
                seen.add(bare)
                result.append((name.strip().strip('"').strip(), bare))
    return result
