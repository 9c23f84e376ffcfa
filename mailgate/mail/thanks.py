"""Does a reply only say thanks? Then it is recorded on the ticket without reopening it.

The reply (quotes and signature already removed) is cut into segments at line ends and
punctuation; every segment must be a greeting, a thank-you (with "so much", "for your help" and
the like), a short approval ("Perfect", "that worked"), a sign-off or a name at the end. Anything
else — a question, "but", a new problem — makes it a real reply. Errs towards "not thanks-only":
reopening wrongly costs an agent a click, swallowing a real problem loses a requester.
It must not look at the ticket or decide what happens to it.
"""

from __future__ import annotations

import re
import unicodedata

MAX_CHARS = 300

# "It works (again)" in the desk's other languages: approval, as "works now" is in English.
_WORKS = (
    r"funktioniert(?: jetzt| wieder)?|klappt(?: jetzt| wieder)?|geht wieder|läuft wieder|alles gut|erledigt|"
    r"ça marche(?: maintenant)?|ça fonctionne(?: maintenant)?|c'est bon|"
    r"(?:ya |ahora )?funciona|todo bien|resuelto|"
    r"(?:ora )?funziona|tutto ok|risolto|"
    r"(?:já )?funciona|funcionou|resolvido|"
    r"(?:het )?werkt(?: weer| nu)?|opgelost|"
    r"det fungerar|fungerar nu|löst"
)
_THANKS = (
    # en
    r"thanks?|thank you|thank u|thx|tnx|ty|tyvm|many thanks|much appreciated|appreciated|cheers|"
    r"thanks a (?:lot|ton|bunch|million)|thank you (?:very|so) much|thanks (?:very|so) much|"
    r"(?:great|perfect|awesome|super|excellent|wonderful|brilliant|fantastic|ok|okay|nice|cool|"
    r"that worked|that helped|that did it|that fixed it|it works now|works now|works|solved|"
    r"got it|all good|prima|toll|klasse|perfekt|super|parfait|génial|genial|perfecto|perfetto|"
    r"perfeito|ótimo|otimo|top|bra|perfekt|jättebra|fijn|prima|完美|好的|了解しました|了解|"
    rf"{_WORKS})|"
    # de
    r"danke|danke schön|dankeschön|danke sehr|vielen dank|vielen lieben dank|herzlichen dank|"
    r"besten dank|tausend dank|recht herzlichen dank|ganz herzlichen dank|lieben dank|"
    # fr
    r"merci|merci beaucoup|merci bien|merci infiniment|mille mercis|un grand merci|merci mille fois|"
    # es
    r"gracias|muchas gracias|muchísimas gracias|mil gracias|gracias mil|te lo agradezco|se lo agradezco|"
    # it
    r"grazie|grazie mille|grazie tante|molte grazie|mille grazie|ti ringrazio|vi ringrazio|la ringrazio|"
    # pt
    r"obrigad[oa]|muito obrigad[oa]|muitíssimo obrigad[oa]|valeu|obg|"
    # nl
    r"bedankt|dank je|dank je wel|dank u|dank u wel|dankjewel|dankuwel|hartelijk dank|"
    r"heel erg bedankt|reuze bedankt|"
    # sv
    r"tack|tack så mycket|tusen tack|stort tack|tackar|tack ska du ha|"
    # zh
    r"谢谢|谢谢你|谢谢您|多谢|非常感谢|十分感谢|感谢|谢啦|谢了|謝謝|謝謝你|感謝|"
    # ja
    r"ありがとう|ありがとうございます|ありがとうございました|どうもありがとう|"
    r"どうもありがとうございます|本当にありがとうございます|感謝します|感謝いたします"
)
# What may follow the thank-you word: intensifiers, "again", "to you all", and a short "for …"
# whose object is one of a closed list, so "thanks for the update, the printer is still broken"
# (cut at the comma) leaves a segment that is not allowed.
_TAIL = (
    r"(?:\s+(?:so much|very much|a lot|a ton|again|once again|everyone|everybody|all|guys|team|mate|folks|"
    r"again for (?:\S+\s){0,3}?\S+|for (?:\S+\s){0,3}?(?:help|helping|reply|response|answer|info|"
    r"information|support|fix|fixing|update|assistance|solution|everything|it|this|that|time|"
    r"patience|effort|out|quickly|work)|"
    r"beaucoup|bien|encore|"
    r"mille|tante|ancora|"
    r"noch ?mal|nochmals|sehr|vielmals|für (?:\S+\s){0,3}?(?:hilfe|antwort|info|unterstützung|lösung|alles)|"
    r"por todo|por (?:\S+\s){0,2}?(?:ayuda|respuesta|información|soporte)|"
    r"pela ajuda|pelo suporte|"
    r"voor (?:\S+\s){0,2}?(?:hulp|antwoord|info|alles)|"
    r"så mycket|för hjälpen|för allt))*"
)
_THANKS_RE = re.compile(rf"^(?:{_THANKS})(?:\s+(?:{_THANKS}))*{_TAIL}$")
_GREETING_RE = re.compile(
    r"^(?:hi|hello|hey|hiya|dear|good (?:morning|afternoon|evening)|hallo|hi there|liebe[rs]?|"
    r"sehr geehrte[rs]?|guten (?:tag|morgen|abend)|moin|servus|bonjour|bonsoir|salut|cher|chère|"
    r"hola|buenos días|buenas tardes|estimad[oa]|ciao|salve|buongiorno|gentile|caro|cara|olá|ola|oi|"
    r"bom dia|boa tarde|prezad[oa]|hoi|beste|goedemorgen|goedemiddag|hej|hejsan|god morgon|"
    r"您好|你好|こんにちは|お疲れ様です|お世話になっております)(?:\s+\S+){0,3}$"
)
_SIGNOFF_RE = re.compile(
    r"^(?:best|best regards|kind regards|regards|warm regards|many regards|br|kr|cheers|all the best|"
    r"best wishes|have a (?:nice|great|good) (?:day|weekend)|sincerely|yours|thanks again|"
    r"viele grüße|viele grüsse|beste grüße|liebe grüße|mit freundlichen grüßen|mfg|lg|vg|gruß|grüße|"
    r"cordialement|bien cordialement|bonne journée|amitiés|"
    r"saludos|un saludo|atentamente|saluti|cordiali saluti|un saluto|distinti saluti|"
    r"abraços|abraço|atenciosamente|cumprimentos|"
    r"groeten|met vriendelijke groet|vriendelijke groeten|mvg|groetjes|"
    r"hälsningar|mvh|med vänliga hälsningar|vänliga hälsningar|"
    r"祝好|此致|敬礼|よろしくお願いします|よろしくお願いいたします|宜しくお願いします)$"
)
# Segment boundaries: line ends and sentence punctuation (including CJK full-width forms).
_SPLIT_RE = re.compile(r"[\n,.;:!¡！。、，；：~…]+")
_NAME_WORD_RE = re.compile(r"^[^\W\d_][\w'’-]*$")
_NOT_NAMES = {"it", "but", "still", "not", "the", "is", "and", "i", "we", "you", "aber", "mais", "pero", "ma"}


def _strip_symbols(text: str) -> str:
    """Drop emoji and other symbols (🙏, 👍, :-)) that do not change the meaning."""
    return "".join(" " if unicodedata.category(c) in ("So", "Sk", "Cs", "Co") else c for c in text)


def _is_name(segment: str) -> bool:
    """A signature name: one to three capitalised words ("Anna", "Jean-Luc Picard") or a short CJK name."""
    words = segment.split()
    if not 1 <= len(words) <= 3:
        return False
    if all(unicodedata.category(c) == "Lo" for c in segment.replace(" ", "")) and len(segment) <= 6:
        return True
    return all(_NAME_WORD_RE.match(w) and w[0].isupper() and w.lower() not in _NOT_NAMES for w in words)


def is_greeting(line: str) -> bool:
    """A salutation line alone: "Hi team,", "Hello John!", "Dear all", "Bonjour," (what people
    write above an agent command or a thank-you)."""
    low = re.sub(r"\s+", " ", unicodedata.normalize("NFKC", line).strip().rstrip(",!:;.").strip().lower())
    return bool(low) and len(low) <= 60 and bool(_GREETING_RE.match(low))


def is_thanks_only(text: str) -> bool:
    """True if the reply does nothing but thank (optionally with a greeting and a signed name)."""
    if not text:
        return False
    text = unicodedata.normalize("NFKC", text).strip()
    if not text or len(text) > MAX_CHARS or "?" in text or "？" in text:
        return False
    text = _strip_symbols(text).replace("(", " ").replace(")", " ")
    segments = [s.strip(" \t-–—*\"'") for s in _SPLIT_RE.split(text)]
    segments = [re.sub(r"\s+", " ", s) for s in segments if s.strip(" \t-–—*\"'")]
    thanked = False
    for index, segment in enumerate(segments):
        low = segment.lower()
        if _THANKS_RE.match(low):
            thanked = thanked or not _is_filler_only(low)
            continue
        if _SIGNOFF_RE.match(low):
            continue
        if index == 0 and _GREETING_RE.match(low):
            continue
        if index >= len(segments) - 2 and index > 0 and _is_name(segment):
            continue
        return False
    return thanked


_FILLER_RE = re.compile(
    r"^(?:great|perfect|awesome|super|excellent|wonderful|brilliant|fantastic|ok|okay|nice|cool|"
    r"that worked|that helped|that did it|that fixed it|it works now|works now|works|solved|got it|"
    r"all good|prima|toll|klasse|perfekt|parfait|génial|genial|perfecto|perfetto|perfeito|ótimo|otimo|"
    rf"top|bra|jättebra|fijn|完美|好的|了解しました|了解|{_WORKS})$"
)


def _is_filler_only(segment: str) -> bool:
    """ "Perfect" or "ok" alone is approval, not thanks: a thank-you word must appear somewhere."""
    return bool(_FILLER_RE.match(segment))
