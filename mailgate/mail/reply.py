"""What the writer of a reply actually wrote: quoted history, quote headers and signatures removed.

Handles top-posting (Gmail, Outlook, mobile), bottom-posting (Thunderbird, mailing-list style) and
inline answers: text written between quoted (">") lines is kept. Quote headers are recognised in
English, German, French, Spanish, Italian, Portuguese, Dutch, Swedish, Danish, Norwegian, Finnish,
Polish, Czech, Russian, Ukrainian, Turkish, Greek, Hungarian, Korean, Hebrew, Arabic, Chinese and
Japanese. Signatures go with or without the RFC 3676 `-- ` line (sign-offs, "-Name", name/title/
phone/URL blocks, mobile taglines), and so do mailing-list footers (Mailman, Google Groups).
Forwarded blocks are kept: they are content the writer chose to send.

What was taken from which library (each is good at one thing): email-reply-parser's bottom-up
view of a mail as fragments, where a signature is a short block at the end, not only a `-- `
line; talon's list of quote-header shapes per language and its signature heuristics (a sign-off
phrase, then a few short lines: name, title, phone, URL); mail-parser-reply's per-language header
field names for the Outlook block. None is used as a library: each misses what another catches,
and all three are slower than one pass over the lines.
Works on text only (HTML is converted before, see html.cut_quote); it must not decide anything
about the ticket.
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
    r"|w dniu\b.{3,300}\b(?:napisał|napisała|napisał\(a\)|pisze)\s*:"  # pl
    r"|dne\b.{3,300}\b(?:napsal|napsala|napsal\(a\))\s*:"  # cs
    r"|.{3,300}\d.{0,300}\b(?:kirjoitti|skrev|napisał|napisała|napsal|napsala|написал|написала|"
    r"написал\(а\)|написав|написала|пише|пишет|yazdı|έγραψε|írta|wrote|schrieb|escribió|ha scritto|"
    r"a écrit|escreveu|schreef)\s*[:：]"  # any language: a date or an address, then the verb
    r"|.{1,300}\bezt írta\b.{0,120}:"  # hu (Gmail): "Alice <a@x> ezt írta (időpont: 2024. jan. 15., H, 10:23):"
    r"|.{3,300}(?:님이 작성|작성)\s*[:：]"  # ko (Gmail): "2024년 1월 15일 (월) 오전 10:23, Alice <a@x>님이 작성:"
    r"|.{3,300}\u05db\u05ea\u05d1(?:\u05d4|/\u05d4|\(\u05d4\))?\s*[:：]"  # he: "... כתב:"
    r"|.{3,300}\u0643\u062a\u0628\s*[:：]"  # ar: "... كتب:"
    r")\s*$",
    _FLAGS,
)
# Any line ending in a "wrote:" verb counts as a quote header when quoted lines follow it.
_WROTE_END_RE = re.compile(
    r"(?:wrote|schrieb|[ée]crit|escribi[óo]|scritto|escreveu|schreef|skrev|写道|寫道|書きました|のメール|"
    r"kirjoitti|napisał|napisała|napisał\(a\)|pisze|napsal|napsala|napsal\(a\)|написал|написала|"
    r"написал\(а\)|написав|пише|пишет|yazdı|έγραψε|írta|작성|\u05db\u05ea\u05d1|\u05db\u05ea\u05d1\u05d4|"
    r"\u0643\u062a\u0628|>)\s*[:：]\s*$",
    _FLAGS,
)
# Gmail wraps a long attribution: "On Mon, Jan 15, 2024 at 10:23 AM Alice <a@x>\nwrote:".
_ATTRIBUTION_START_RE = re.compile(r"^\s*(?:on|am|le|el|il|em|op|den|在|w dniu|dne|στις|в|у)\s", _FLAGS)

# Outlook's separators: "-----Original Message-----" in each language, and the 32 underscores
# Outlook on the web and new Outlook put above their header block.
_ORIGINAL_RE = re.compile(
    r"^\s*-{2,}\s*(?:original message|ursprüngliche nachricht|originalnachricht|message d'origine|"
    r"ursprüngliche mail|mail original|"  # Zimbra (de, fr)
    r"mensaje original|messaggio originale|mensagem original|oorspronkelijk bericht|"
    r"ursprungligt meddelande|原始邮件|原始郵件|元のメッセージ|reply message|original|"
    r"oprindelig meddelelse|opprinnelig melding|alkuperäinen viesti|oryginalna wiadomość|"
    r"wiadomość oryginalna|původní zpráva|původní e-mail|исходное сообщение|оригинальное сообщение|"
    r"оригінальне повідомлення|вихідне повідомлення|özgün ileti|orijinal mesaj|asıl ileti|"
    r"αρχικό μήνυμα|eredeti üzenet|원본 메시지|원래 메시지|הודעה מקורית|الرسالة الأصلية)\s*-{2,}\s*$",
    _FLAGS,
)
_UNDERSCORES_RE = re.compile(r"^\s*_{20,}\s*$")
# GroupWise opens the unquoted history with the sender and date between ">>>" marks:
# '>>> "Support" <support@example.com> 23.11.2026 10:31 >>>'. It starts with ">" like a quoted
# line, but what follows it is the old mail, not quoted.
_GROUPWISE_RE = re.compile(r"^>>>\s*(?=.*(?:\S@\S|\d[./:-]\d)).{3,300}?\s>>>$")
# GMX, WEB.DE and mail.com open their header block with the date: "Gesendet: …" / "Sent: …",
# then "Von:/From:", "An:/To:", "Betreff:/Subject:".
_SENT_FIRST_RE = re.compile(
    r"^\s*\**(?:gesendet|sent|envoyé|enviado|inviato|verzonden)\s*\**\s*[:：]", _FLAGS
)
# Outlook header block fields ("From:/Sent:/To:/Subject:") in each language; colons may be
# full-width (zh, ja) or preceded by a space (fr).
_FROM_RE = re.compile(
    r"^\s*\**(?:from|von|de|da|van|från|fra|发件人|寄件者|差出人|送信者|"
    r"lähettäjä|od|от|від|kimden|από|feladó|보낸 사람|מאת|من)\s*\**\s*[:：]",
    _FLAGS,
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
    r"送信日時|日付|宛先|件名|"
    r"sendt|til|emne|dato|"  # da, no
    r"lähetetty|vastaanottaja|aihe|päivämäärä|"  # fi
    r"wysłano|wysłane|do|temat|"  # pl
    r"odesláno|komu|předmět|datum|"  # cs
    r"отправлено|кому|тема|дата|копия|"  # ru
    r"надіслано|відправлено|кому|тема|"  # uk
    r"gönderildi|gönderilme tarihi|kime|konu|tarih|"  # tr
    r"στάλθηκε|ημερομηνία|προς|θέμα|κοιν|"  # el
    r"küldve|elküldve|dátum|címzett|tárgy|másolat|"  # hu
    r"보낸 날짜|받는 사람|제목|날짜|참조|"  # ko
    r"נשלח|תאריך|אל|נושא|עותק|"  # he
    r"مرسل|التاريخ|إلى|الموضوع|نسخة)\s*\**\s*[:：]",
    _FLAGS,
)
# A forward is content the writer chose to send: keep it whole.
_FORWARD_RE = re.compile(
    r"^\s*(?:-{2,}\s*(?:forwarded message|weitergeleitete nachricht|message transféré|"
    r"mensaje reenviado|messaggio inoltrato|mensagem encaminhada|doorgestuurd bericht|"
    r"vidarebefordrat meddelande|转发的邮件|転送メッセージ|videresendt meddelelse|videresendt melding|"
    r"välitetty viesti|wiadomość przekazana dalej|přeposlaná zpráva|пересылаемое сообщение|"
    r"пересланное сообщение|переслане повідомлення|iletilen ileti|προωθημένο μήνυμα|"
    r"továbbított üzenet|전달된 메시지|הודעה שהועברה|رسالة معاد توجيهها)\s*-{2,}|begin forwarded message:|"
    r"anfang der weitergeleiteten nachricht:|début du message réexpédié :?)\s*$",
    _FLAGS,
)
# Subjects of forwards as clients prefix them (Outlook localises "FW:": WG, TR, RV, VS, Doorst, …).
FORWARD_SUBJECT_RE = re.compile(
    r"^\s*(?:\[[^\]]{1,40}\]\s*)?(?:fwd?|wg|tr|rv|enc|vs|vb|doorst|pd|i|tov|įt|πρθ|пересл|転送|转发|"
    r"fw\s*:\s*fwd?)\s*:",
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
    r"发自我的.{1,40}|從我的.{1,40}傳送|iphoneから送信|"
    # any language: "<sent> from/with/via my <device or app>"
    r"(?:sent|sendt|sänt|skickat|lähetetty|wysłane|odesláno|отправлено|надіслано|gesendet|envoyé|"
    r"enviado|inviato|verzonden|εστάλη|elküldve|küldve)\b.{0,40}"
    r"\b(?:iphone|ipad|android|mobile|phone|galaxy|blackberry|outlook|mail|samsung|huawei|xiaomi|"
    r"pixel|smartphone|tablet|app|puhelimesta|telefonu|telefonem|телефона|iphonesta|iphone'a)\b.{0,40}|"
    r"sent (?:via|from|with) (?:the )?(?:mobile|my mobile|spark|blue mail|bluemail|superhuman|hey|"
    r"airmail|newton|edison|mymail|mail\.ru|aquamail|k-9 mail|fairemail|nine).{0,40}|"
    r"\u05e0\u05e9\u05dc\u05d7 \u05de.{1,40}|\u0623\u0631\u0633\u0644\u062a \u0645\u0646.{1,40}|"
    r"\u0645\u0631\u0633\u0644 \u0645\u0646.{1,40})\s*$",
    _FLAGS,
)
# Mailing-list footers: Google Groups' (often without its "-- " line) and Mailman's, which opens
# with a line of underscores followed by "<list> mailing list" / listinfo / unsubscribe lines.
_LIST_FOOTER_RE = re.compile(
    r"^\s*(?:you received this (?:message|e-?mail) because you are subscribed to (?:the )?google groups|"
    r"to unsubscribe from this group and stop receiving e-?mails from it|"
    r"you received this (?:message|e-?mail) because you are subscribed to)",
    _FLAGS,
)
_MAILMAN_LINE_RE = re.compile(
    r"mailing list|listinfo|to unsubscribe|unsubscribe\s*:|-leave@|-request@|list archives?|mail\.python\.org",
    _FLAGS,
)
# Taglines known by how they end ("… から送信", "… 에서 보냄", "iPhone'umdan gönderildi"): tested
# with `endswith` on short lines, not with a regex that would scan every line from its start.
_MOBILE_ENDINGS = ("から送信", "에서 보냄", "gönderildi")
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
            _SENT_FIRST_RE,
            _UNDERSCORES_RE,
            _ATTRIBUTION_START_RE,
            _LIST_FOOTER_RE,
        )
    ),
    _FLAGS,
)


def _clean(line: str) -> str:
    return line.strip(_INVISIBLE).strip()


def _is_outlook_block(lines: list[str], i: int) -> bool:
    """A "From:" line followed by at least two of Sent/Date/To/Subject within a few lines, or a
    "Sent:" line directly above such a block (GMX, WEB.DE, mail.com)."""
    if _SENT_FIRST_RE.match(_clean(lines[i])):
        return (
            i + 1 < len(lines)
            and _FROM_RE.match(_clean(lines[i + 1])) is not None
            and _is_outlook_block(lines, i + 1)
        )
    if not _FROM_RE.match(_clean(lines[i])):
        return False
    fields = 0
    for line in lines[i + 1 : i + 8]:
        if _BLOCK_FIELD_RE.match(_clean(line)):
            fields += 1
            if fields >= 2:
                return True
    return False


def header_block_sender(text: str) -> str | None:
    """The From value of the first Outlook-style header block ("From:" then Sent/Date/To/Subject
    in any of the languages above, "Von:/Gesendet:/An:/Betreff:"), or None.

    Outlook (desktop since 2013, on the web, for Mac) forwards with no "Forwarded message" line:
    the forwarded mail starts at that block, under a rule in HTML only."""
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if _QUOTED_RE.match(line):
            continue
        if _is_outlook_block(lines, i):
            if not _FROM_RE.match(_clean(line)):  # the "Sent:" line GMX puts above From
                line = lines[i + 1]
            value = _FROM_RE.sub("", _clean(line), count=1)
            return value.strip(" *\t") or None
    return None


# Any language's Outlook header block: short "Label: value" lines one under another. Outlook
# localises every label (Romanian "De la:/Trimis:/Către:/Subiect:", Vietnamese "Từ:/Đã gửi:",
# Thai, Indonesian, Slovak, ...), so the labels are not listed: the block is known by its shape
# and by what it always holds, the subject of the mail answered (this mail's subject without
# its reply prefixes) and a time.
_FIELD_LINE_RE = re.compile(r"^\s*\**\s*[^\W\d_][^:：\d]{0,24}?\s*\**\s*[:：]\s*\**\s*(.*?)\s*$")
_PREFIXES_RE = re.compile(r"^(?:\s*[^\W\d_]{1,12}\.?\s*(?:\[\d+\])?\s*[:：])+")
_TIME_RE = re.compile(r"\b\d{1,2}[:.]\d{2}\b")


def _subject_words(subject: str) -> str:
    """A subject as a header block repeats it: reply/forward prefixes of any language gone,
    spaces collapsed, case folded."""
    return " ".join(_PREFIXES_RE.sub("", subject).split()).casefold()


def _is_any_header_block(lines: list[str], i: int, subject: str) -> bool:
    """Three to eight "Label: value" lines from `i`, one of them this mail's subject (`subject`
    as `_subject_words` made it) and one a time: an Outlook block in a language not listed.
    Outlook starts its block at the margin; lines indented under text (a read receipt's "  To:
    … Subject: … Sent: …", a writer citing a mail) are the writer's."""
    if lines[i][:1] in (" ", "\t"):
        return False
    values: list[str] = []
    for line in lines[i : i + 8]:
        m = _FIELD_LINE_RE.match(_clean(line))
        if not m:
            break
        values.append(m.group(1))
    return (
        len(values) >= 3
        and any(_subject_words(v) == subject for v in values)
        and any(_TIME_RE.search(v) for v in values)
    )


def _quoted_follows(lines: list[str], i: int) -> bool:
    """The next non-blank line after `i` is quoted."""
    for line in lines[i + 1 : i + 4]:
        if _clean(line):
            return bool(_QUOTED_RE.match(line))
    return False


_DATE_OR_ADDRESS_RE = re.compile(r"\S@\S|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\b\d{1,2}[:.]\d{2}\b|\d{4}年")


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
        if (_WROTE_END_RE.search(line) or _DATE_OR_ADDRESS_RE.search(line)) and _quoted_follows(lines, i):
            # A header in a wording we do not know ("Alice wrote on 15.01.2024 10:23:") still
            # names a date or an address, and quoted lines follow it.
            return 1
    if line.startswith("--") and line.endswith("--") and len(line) > 20:
        # Zoho Mail: "---- On Mon, 23 Nov 2026 10:31:00 +0100 Alice <a@x> wrote ----"
        inner = line.strip("- ")
        if _ATTRIBUTION_RE.match(inner + ":"):
            return 1
    if i + 1 < len(lines) and _ATTRIBUTION_START_RE.match(line):
        nxt = _clean(lines[i + 1])
        if nxt.endswith(_COLONS) and len(nxt) < 120 and _ATTRIBUTION_RE.match(line + " " + nxt):
            return 2
    return 0


def extract_reply(text: str, sender: str = "", *, forward: bool = False, subject: str = "") -> str:
    """The part of `text` the writer added. "" when the message is only quoted history.

    `sender` (the From display name and address, if known) lets a bare name on the last line go
    as a signature only when it is the sender's name (talon's use of the sender): "Berlin" below
    an answer stays, "Jane" from Jane Roe goes. `forward`: the mail is a forward (its subject
    says so), so an Outlook header block or "Original Message" line opens the forwarded mail,
    which is content, not history. `subject` (this mail's) lets an Outlook header block in a
    language with no labels listed here be known by the subject it repeats."""
    if not text:
        return ""
    answered = _subject_words(subject) if subject else ""
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
            if clean.endswith(_MOBILE_ENDINGS) and len(clean) <= 50:
                break
            if answered and (":" in clean or "：" in clean) and _is_any_header_block(lines, i, answered):
                if forward:
                    kept.extend(lines[i:])
                break
            kept.append(line.rstrip())
            i += 1
            continue
        if _GROUPWISE_RE.match(clean):
            if forward:
                kept.extend(lines[i:])
            break
        if _QUOTED_RE.match(line):
            i += 1
            continue
        if _FORWARD_RE.match(clean):
            kept.extend(lines[i:])
            break
        if _SIG_RE.match(line.strip(_INVISIBLE)) or _MOBILE_RE.match(clean):
            break
        if _ORIGINAL_RE.match(clean) or _is_outlook_block(lines, i):
            if forward:
                kept.extend(lines[i:])
            break
        if _LIST_FOOTER_RE.match(clean):
            break
        if _UNDERSCORES_RE.match(clean):
            nxt = next((j for j in range(i + 1, min(i + 4, n)) if _clean(lines[j])), None)
            if nxt is not None and _is_outlook_block(lines, nxt):
                if forward:
                    kept.extend(lines[i:])
                break
            if any(_MAILMAN_LINE_RE.search(lines[j]) for j in range(i + 1, min(i + 5, n))):
                break  # Mailman's footer
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
    kept = _without_signature(kept, sender)
    result = "\n".join(kept).strip("\n")
    result = _BLANKS_RE.sub("\n\n", result)
    return result.strip(_INVISIBLE + " \n")


# --- signatures without a "-- " line ------------------------------------------------------------

# Sign-offs that open a signature block when a name (or a few short lines) follows them.
_SIGNOFF_RE = re.compile(
    r"^\s*(?:thanks|thank you|many thanks|thanks a lot|thanks again|thx|ty|cheers|best|best regards|"
    r"best wishes|kind regards|kindest regards|warm regards|warmly|regards|sincerely|yours|"
    r"yours sincerely|yours truly|all the best|br|rgds|take care|talk soon|with thanks|greetings|"
    r"mit freundlichen gr[üu](?:ß|ss)en|freundliche gr[üu](?:ß|ss)e|viele gr[üu](?:ß|ss)e|"
    r"beste gr[üu](?:ß|ss)e|liebe gr[üu](?:ß|ss)e|gru(?:ß|ss)|gr[üu](?:ß|ss)e|lg|vg|mfg|danke|"
    r"cordialement|bien cordialement|bien à vous|merci|salutations|amicalement|"
    r"saludos|un saludo|saludos cordiales|atentamente|gracias|"
    r"cordiali saluti|saluti|distinti saluti|grazie|"
    r"atenciosamente|abraços|obrigad[oa]|cumprimentos|"
    r"met vriendelijke groet(?:en)?|vriendelijke groet(?:en)?|groeten|groet|bedankt|"
    r"med vänlig hälsning|vänliga hälsningar|hälsningar|mvh|tack|"
    r"med venlig hilsen|venlig hilsen|hilsen|tak|med vennlig hilsen|vennlig hilsen|"
    r"ystävällisin terveisin|terveisin|kiitos|"
    r"pozdrawiam|z poważaniem|dziękuję|pozdrowienia|"
    r"s pozdravem|děkuji|"
    r"с уважением|спасибо|с наилучшими пожеланиями|всего доброго|"
    r"з повагою|дякую|"
    r"saygılarımla|saygılar|teşekkürler|iyi çalışmalar|"
    r"με εκτίμηση|φιλικά|ευχαριστώ|"
    r"üdvözlettel|tisztelettel|köszönöm|"
    r"감사합니다|고맙습니다|"
    r"בברכה|תודה|"
    r"مع التحية|تحياتي|شكرا|مع خالص التحية|"
    r"よろしくお願いします|よろしくお願いいたします|此致|谢谢|祝好|此致敬礼)"
    r"\s*[,.!:;،]?\s*$",
    _FLAGS,
)
# "-Bob", "— Alice", "~ Jo": a dash and a name on the last line.
_DASH_NAME_RE = re.compile(r"^\s*(?:-{1,2}|–|—|~)\s*[^\s\d\-–—~>][^\d@:]{0,40}$")
_PHONE_RE = re.compile(r"(?:\+|\b)(?:\d[\s().\-/]?){7,}\d\b")
_CONTACT_RE = re.compile(
    r"https?://|www\.|\S+@\S+\.\w|\b(?:tel|phone|mobile|mob|cell|fax|direct|office|m|t|p|f)\b\.?\s*[:.]",
    _FLAGS,
)
_SIG_LINE_MAX = 60


def _is_short(line: str) -> bool:
    clean = _clean(line)
    return len(clean) <= _SIG_LINE_MAX and not clean.endswith("?")


def _without_signature(kept: list[str], sender: str = "") -> list[str]:
    """`kept` with a trailing signature block removed, when text of the writer stays above it.

    A block is a sign-off followed by up to six short lines (name, title, phone, URL), a "-Name"
    last line, or a last paragraph of up to six short lines that carries a phone number, URL or
    address and starts with a name. A reply that is only a sign-off ("Thanks,\nBob") keeps it:
    it is the whole message.
    """
    end = len(kept)
    while end and not _clean(kept[end - 1]):
        end -= 1
    if end < 2 or not _is_short(kept[end - 1]):
        return kept  # every shape below ends in a short line: a sentence is the writer's
    tail: list[int] = []
    i = end - 1
    while i >= 0 and len(tail) < 7:
        if _clean(kept[i]):
            tail.append(i)
        i -= 1
    tail.reverse()
    cut: int | None = None
    for pos, i in enumerate(tail):
        if (
            1 <= len(tail) - pos - 1 <= 6
            and len(_clean(kept[i])) <= 40
            and _SIGNOFF_RE.match(_clean(kept[i]))
            and all(_is_short(kept[j]) for j in tail[pos + 1 :])
        ):
            cut = i
            break
    if cut is None and _DASH_NAME_RE.match(_clean(kept[end - 1])) and len(_clean(kept[end - 1]).split()) <= 4:
        prev = next((j for j in range(end - 2, -1, -1) if _clean(kept[j])), None)
        if (
            prev is not None
            and not _DASH_NAME_RE.match(_clean(kept[prev]))
            and not kept[prev].rstrip().endswith(":")
        ):
            cut = end - 1
    if cut is None:
        start = end
        while start and _clean(kept[start - 1]):
            start -= 1
        block = kept[start:end]
        if (
            start
            and 2 <= len(block) <= 6
            and all(_is_short(b) for b in block)
            and any(_CONTACT_RE.search(b) or _PHONE_RE.search(b) for b in block[1:])
            and _looks_like_name(block[0])
        ):
            cut = start
        if cut is None and start and len(block) == 1 and _is_bare_name(block[0], sender):
            cut = start  # a name alone below the text: "Jane"
    if cut is None or not any(_clean(line) for line in kept[:cut]):
        return kept
    return kept[:cut]


def _looks_like_name(line: str) -> bool:
    """One to four words with no sentence punctuation: "Bob Smith", "Jürgen Müller", "山田太郎"."""
    words = _clean(line).split()
    return 1 <= len(words) <= 4 and not re.search(r"[.!?:;]$", _clean(line)) and not _CONTACT_RE.search(line)


_NOT_NAMES = frozenset(
    [
        "yes",
        "no",
        "ok",
        "okay",
        "sure",
        "done",
        "thanks",
        "thank",
        "hi",
        "hello",
        "hey",
        "great",
        "perfect",
        "fine",
        "good",
        "agreed",
        "cheers",
        "regards",
        "best",
        "bye",
        "ciao",
        "danke",
        "merci",
        "gracias",
        "grazie",
        "obrigado",
        "tack",
        "tak",
        "kiitos",
    ]
)


def _is_bare_name(line: str, sender: str) -> bool:
    """One to three capitalised words and nothing else ("Jane", "Jürgen Müller"), one of which is
    in the sender's name or address."""
    words = _clean(line).split()
    if not sender or not 1 <= len(words) <= 3:
        return False
    known = {w for w in re.split(r"[^\w]+", sender.lower()) if len(w) > 1}
    return all(
        w.isalpha() and w[0].isupper() and (len(w) == 1 or w[1:].islower()) and w.lower() not in _NOT_NAMES
        for w in words
    ) and any(w.lower() in known for w in words)
