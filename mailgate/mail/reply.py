"""What the writer of a reply actually wrote: quoted history, quote headers and signatures removed.

Handles top-posting (Gmail, Outlook, mobile), bottom-posting (Thunderbird, mailing-list style) and
inline answers: text written between quoted (">") lines is kept. Quote headers are recognised in
English, German, French, Spanish, Italian, Portuguese, Dutch, Swedish, Chinese and Japanese.
Works on text only (HTML is converted before); it must not decide anything about the ticket.
"""

from __future__ import annotations

import re

_FLAGS = re.IGNORECASE

# "On Mon, 15 Jan 2024 at 10:23, Alice <a@x> wrote:" and its translations, as Gmail, Apple Mail,
# Thunderbird and mobile clients write them. Anchored on both the opening word and the verb so
# a sentence of the reply ("On Monday I wrote: ...") is not taken for a header unless quoted
# lines follow (the generic rule below).
_ATTRIBUTION_RE = re.compile(
    r"^\s*(?:"
    r"on\b.{3,300}\bwrote\s*:"  # en
    r"|am\b.{3,300}\bschrieb\b.{0,200}:"  # de: "Am 15.01.2024 um 10:23 schrieb Alice <a@x>:"
    r"|.{1,200}\bschrieb am\b.{3,200}:"  # de (Outlook for Mac): "Alice <a@x> schrieb am 15.01.2024:"
    r"|le\b.{3,300}\ba\s+[ée]crit\s*:"  # fr: "Le lun. 15 janv. 2024 à 10:23, Alice <a@x> a écrit :"
    r"|el\b.{3,300}\bescribi[óo]\s*:"  # es
    r"|il\b.{3,300}\bha\s+scritto\s*:"  # it: "Il giorno lun 15 gen 2024 alle ore 10:23 Alice <a@x> ha scritto:"
    r"|em\b.{3,300}\bescreveu\s*:"  # pt: "Em seg., 15 de jan. de 2024 às 10:23, Alice <a@x> escreveu:"
    r"|(?:à|às)\b.{3,300}\bescreveu\s*:"  # pt (Apple): "Às 10:23 de 15/01/2024, Alice escreveu:"
    r"|op\b.{3,300}\bschreef\b.{0,200}:"  # nl: "Op ma 15 jan. 2024 om 10:23 schreef Alice <a@x>:"
    r"|den\b.{3,300}\bskrev\b.{0,200}:"  # sv: "Den mån 15 jan. 2024 kl 10:23 skrev Alice <a@x>:"
    r"|.{1,200}\bskrev\s+.{0,200}:"  # sv (Thunderbird): "Alice skrev 2024-01-15 10:23:"
    r"|.{0,300}写道\s*[:：]"  # zh: "在 2024年1月15日 10:23，Alice <a@x> 写道："
    r"|.{0,300}寫道\s*[:：]"  # zh-TW
    r"|\d{4}年\d{1,2}月\d{1,2}日.{0,300}[:：]"  # ja (Gmail): "2024年1月15日(月) 10:23 山田太郎 <t@x>:"
    r"|.{0,300}(?:のメール|書きました|が書きました)\s*[:：]"  # ja (Apple Mail, Thunderbird)
    r")\s*$",
    _FLAGS,
)
# Any line ending in a "wrote:" verb counts as a quote header when quoted lines follow it.
_WROTE_END_RE = re.compile(
    r"(?:wrote|schrieb|[ée]crit|escribi[óo]|scritto|escreveu|schreef|skrev|写道|寫道|書きました|のメール|>)\s*[:：]\s*$",
    _FLAGS,
)
# Gmail wraps a long attribution: "On Mon, Jan 15, 2024 at 10:23 AM Alice <a@x>\nwrote:".
_ATTRIBUTION_START_RE = re.compile(r"^\s*(?:on|am|le|el|il|em|op|den|在)\s", _FLAGS)

# Outlook's separators: "-----Original Message-----" in each language, and the 32 underscores
# Outlook on the web and new Outlook put above their header block.
_ORIGINAL_RE = re.compile(
    r"^\s*-{2,}\s*(?:original message|ursprüngliche nachricht|originalnachricht|message d'origine|"
    r"mensaje original|messaggio originale|mensagem original|oorspronkelijk bericht|"
    r"ursprungligt meddelande|原始邮件|原始郵件|元のメッセージ|reply message|original)\s*-{2,}\s*$",
    _FLAGS,
)
_UNDERSCORES_RE = re.compile(r"^\s*_{20,}\s*$")
# Outlook header block fields ("From:/Sent:/To:/Subject:") in each language; colons may be
# full-width (zh, ja) or preceded by a space (fr).
_FROM_RE = re.compile(
    r"^\s*\**(?:from|von|de|da|van|från|fra|发件人|寄件者|差出人|送信者)\s*\**\s*[:：]", _FLAGS
)
_BLOCK_FIELD_RE = re.compile(
    r"^\s*\**(?:sent|date|to|cc|subject|"
    r"gesendet|datum|an|betreff|"
    r"envoyé|date|à|objet|"
    r"enviado|fecha|para|asunto|"
    r"inviato|data|a|oggetto|"
    r"enviada|assunto|"
    r"verzonden|aan|onderwerp|"
    r"skickat|till|ämne|"
    r"发送时间|日期|收件人|抄送|主题|寄件日期|收件者|主旨|"
    r"送信日時|日付|宛先|件名)\s*\**\s*[:：]",
    _FLAGS,
)
# A forward is content the writer chose to send: keep it whole.
_FORWARD_RE = re.compile(
    r"^\s*(?:-{2,}\s*(?:forwarded message|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado|messaggio inoltrato|mensagem encaminhada|doorgestuurd bericht|"
    r"vidarebefordrat meddelande|转发的邮件|転送メッセージ)\s*-{2,}|begin forwarded message:|"
    r"anfang der weitergeleiteten nachricht:|début du message réexpédié :?)\s*$",
    _FLAGS,
)
# RFC 3676 section 4.3: "-- " starts a signature; many clients lose the trailing space.
_SIG_RE = re.compile(r"^--\s?$")
# Lines mobile clients append below the reply.
_MOBILE_RE = re.compile(
    r"^\s*(?:sent from my \S.{0,40}|sent from (?:mail|outlook) for .{1,30}|sent from outlook|"
    r"sent from yahoo mail.{0,40}|sent from samsung .{0,40}|sent via .{1,40}|sent from proton mail.{0,30}|"
    r"get outlook for (?:ios|android).{0,80}|"
    r"von meinem \S.{0,40} gesendet|gesendet von meinem .{1,40}|"
    r"envoyé de mon .{1,40}|envoyé depuis mon .{1,40}|"
    r"enviado desde mi .{1,40}|enviado do meu .{1,40}|enviado de meu .{1,40}|"
    r"inviato da(?:l mio)? .{1,40}|"
    r"verzonden (?:vanaf|met) mijn .{1,40}|verstuurd vanaf mijn .{1,40}|"
    r"skickat från min .{1,40}|"
    r"发自我的.{1,40}|從我的.{1,40}傳送|iphoneから送信|.{1,20}から送信)\s*$",
    _FLAGS,
)
_QUOTED_RE = re.compile(r"^\s*>")
_COLONS = (":", "：")  # the ASCII colon and the full-width one (zh, ja)
_BLANKS_RE = re.compile(r"\n{3,}")
_INVISIBLE = "\ufeff\u200b\u200e\u200f"
# Every line test of `extract_reply` in one alternation, on the cleaned line: a line it does not
# match, and that does not end in a colon, is the writer's text, without eight separate tests
# (most lines of a mail are plain text). Each test below implies a match here: a quoted line and a
# signature mark start with ">" and "--" once cleaned; the others are tested on the cleaned line.
_ANY_MARK_RE = re.compile(
    "|".join(
        f"(?:{rx.pattern})"
        for rx in (
            re.compile(r"^>"),
            re.compile(r"^--"),
            _FORWARD_RE,
            _MOBILE_RE,
            _ORIGINAL_RE,
            _FROM_RE,
            _UNDERSCORES_RE,
            _ATTRIBUTION_START_RE,
        )
    ),
    _FLAGS,
)


def _clean(line: str) -> str:
    return line.strip(_INVISIBLE).strip()


def _is_outlook_block(lines: list[str], i: int) -> bool:
    """A "From:" line followed by at least two of Sent/Date/To/Subject within a few lines."""
    if not _FROM_RE.match(_clean(lines[i])):
        return False
    fields = 0
    for line in lines[i + 1 : i + 8]:
        if _BLOCK_FIELD_RE.match(_clean(line)):
            fields += 1
            if fields >= 2:
                return True
    return False


def _quoted_follows(lines: list[str], i: int) -> bool:
    """The next non-blank line after `i` is quoted."""
    for line in lines[i + 1 : i + 4]:
        if _clean(line):
            return bool(_QUOTED_RE.match(line))
    return False


def _attribution_len(lines: list[str], i: int) -> int:
    """How many lines (0, 1 or 2) starting at `i` form a quote header like "On … wrote:"."""
    line = _clean(lines[i])
    if not line or len(line) > 400:
        return 0
    # Every header form ends in a colon: the regexes below, with their long backtracking
    # alternatives, only run on lines that could match (most lines of a mail cannot).
    if line.endswith(_COLONS):
        if _ATTRIBUTION_RE.match(line):
            return 1
        if _WROTE_END_RE.search(line) and _quoted_follows(lines, i):
            return 1
    if i + 1 < len(lines) and _ATTRIBUTION_START_RE.match(line):
        nxt = _clean(lines[i + 1])
        if nxt.endswith(_COLONS) and len(nxt) < 120 and _ATTRIBUTION_RE.match(line + " " + nxt):
            return 2
    return 0


def extract_reply(text: str) -> str:
    """The part of `text` the writer added. "" when the message is only quoted history."""
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    kept: list[str] = []
    i = 0
    n = len(lines)
    while i < n:
        line = lines[i]
        clean = _clean(line)
        # Plain text: none of the tests below can take it (a new test below goes into
        # _ANY_MARK_RE too).
        if not clean.endswith(_COLONS) and not _ANY_MARK_RE.match(clean):
            kept.append(line.rstrip())
            i += 1
            continue
        if _QUOTED_RE.match(line):
            i += 1
            continue
        if _FORWARD_RE.match(clean):
            kept.extend(lines[i:])
            break
        if _SIG_RE.match(line.strip(_INVISIBLE)) or _MOBILE_RE.match(clean):
            break
        if _ORIGINAL_RE.match(clean) or _is_outlook_block(lines, i):
            break
        if _UNDERSCORES_RE.match(clean):
            nxt = next((j for j in range(i + 1, min(i + 4, n)) if _clean(lines[j])), None)
            if nxt is not None and _is_outlook_block(lines, nxt):
                break
        skip = _attribution_len(lines, i)
        if skip:
            if _quoted_follows(lines, i + skip - 1):
                # Quoted history follows: drop the header, keep reading (bottom-post, inline answers).
                i += skip
                continue
            # Outlook-style history is not quoted: everything below the header is the old mail.
            break
        kept.append(line.rstrip())
        i += 1
    result = "\n".join(kept).strip("\n")
    result = _BLANKS_RE.sub("\n\n", result)
    return result.strip(_INVISIBLE + " \n")
