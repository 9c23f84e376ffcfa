"""HTML mail to readable text with html2text: links kept as `[text](url)`, quotes as `> ` lines.

Only used when a message has no text/plain alternative (converting is slow, a few ms per message).
It must not fetch anything (remote images, styles): html2text only reads the string it is given.
"""

from __future__ import annotations

import re

import html2text

# html2text escapes Markdown-looking characters ("\-", "1\.", "\*"); mail is read as plain text,
# and an escaped "\-- " or "\-----Original Message-----" would hide signature and quote markers.
_UNESCAPE_RE = re.compile(r"\\([-.+\\`*_{}\[\]()#!])")
_TRAILING_WS_RE = re.compile(r"[ \t]+\n")
_TABLE_RULE_RE = re.compile(
    r"^[ \t]*\|?(?:[ \t]*:?-{3,}:?[ \t]*\|)+[ \t]*(?::?-{3,}:?)?[ \t]*\n", re.MULTILINE
)
_MANY_BLANKS_RE = re.compile(r"\n{3,}")
# Outlook and Word emit <o:p> and conditional comments that leave stray markers behind.
_MSO_RE = re.compile(r"<!--\[if[^\]]*\]>.*?<!\[endif\]-->", re.DOTALL | re.IGNORECASE)


def html_to_text(html: str) -> str:
    """Plain text of an HTML body. Never raises: on a converter failure, tags are stripped instead."""
    html = _MSO_RE.sub("", html)
    conv = html2text.HTML2Text()
    conv.body_width = 0  # no re-wrapping: keep the writer's lines so quote detection sees them
    conv.ignore_emphasis = True  # "**From:**" would hide Outlook's header block
    conv.ignore_images = True  # inline images are attachments; "![](cid:...)" is noise
    conv.unicode_snob = True  # keep non-ASCII characters as they are
    conv.single_line_break = False
    try:
        text = conv.handle(html)
    except Exception:
        text = re.sub(r"<[^>]*>", " ", html)
    text = _UNESCAPE_RE.sub(r"\1", text)
    if "---" in text:
        # html2text draws a Markdown rule under a table's first row ("---|---"): a web form's
        # field table or an Outlook signature laid out in a table shows it as junk in plain text.
        text = _TABLE_RULE_RE.sub("", text)
    text = _TRAILING_WS_RE.sub("\n", text)
    text = text.replace("\xa0", " ")
    return _MANY_BLANKS_RE.sub("\n\n", text).strip() + "\n"


# Where HTML mail clients start the quoted history (or the signature above it), by their own markup: Outlook (desktop, web,
# Hotmail/Outlook.com) `divRplyFwdMsg` and its bordered header div, Gmail `gmail_quote`, Yahoo
# `yahoo_quoted`, Proton `protonmail_quote`, Thunderbird `moz-cite-prefix`, Apple and Thunderbird
# `<blockquote type="cite">`, Outlook for Mac `OLK_SRC_BODY_SECTION`, and the `<hr>` that Hotmail
# (`stopSpelling`), Zimbra (`zwchr`), Windows Mail and Outlook on the web put above it.
_QUOTE_START_RE = re.compile(
    r"<div[^>]*\b(?:id|class)\s*=\s*[\"']?(?:x_)?(?:divRplyFwdMsg|gmail_quote|yahoo_quoted|"
    r"protonmail_quote|moz-cite-prefix|OLK_SRC_BODY_SECTION|mail-editor-reference-message-container|"
    r"zmail_extra|replyQuote|"
    # signatures sit right above the history: cutting there drops both (Gmail, Thunderbird, Outlook)
    r"gmail_signature|moz-signature|Signature)\b"
    r"|<blockquote[^>]*\btype\s*=\s*[\"']?cite"
    r"|<(?:div|p)[^>]*style\s*=\s*[\"'][^\"'>]*border-top\s*:\s*solid[^\"'>]*[\"']"
    r"|<(?:div|p)[^>]*style\s*=\s*[\"'][^\"'>]*border-top-style\s*:\s*solid[^\"'>]*[\"']"
    r"|<hr\b[^>]*>",
    re.IGNORECASE,
)
_TAG_RE = re.compile(r"<[^>]*>")
_FORWARD_RE = re.compile(
    r"forwarded message|begin forwarded message|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado|messaggio inoltrato|mensagem encaminhada|doorgestuurd bericht",
    re.IGNORECASE,
)
# What follows a separator that really opens quoted history: a header field line or an address.
_HISTORY_HINT_RE = re.compile(r"@|^\s*\S{1,20}\s*[:：]\s*\S", re.MULTILINE)


def cut_quote(html: str) -> str | None:
    """The HTML above the quoted history its client marked up, or None when there is none (or
    the history is a forward, which is content, or nothing would be left above it)."""
    if len(html) > 2_000_000:
        return None
    for match in _QUOTE_START_RE.finditer(html):
        before = html[: match.start()]
        if not _TAG_RE.sub("", before).replace("&nbsp;", " ").strip():
            continue  # nothing of the writer above this one: look further down
        after = _TAG_RE.sub(" ", html[match.start() : match.start() + 3000])
        if _FORWARD_RE.search(after[:600]):
            return None
        tag = match.group(0).lower()
        if (tag.startswith("<hr") or "border-top" in tag) and not _HISTORY_HINT_RE.search(after[:600]):
            continue  # a rule drawn for looks, not a quote separator
        return before
    return None
