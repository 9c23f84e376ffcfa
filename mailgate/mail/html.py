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
    text = _TRAILING_WS_RE.sub("\n", text)
    text = text.replace("\xa0", " ")
    return _MANY_BLANKS_RE.sub("\n\n", text).strip() + "\n"
