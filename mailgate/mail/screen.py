"""Is this message machine-generated? Auto-replies, bulk mail and our own mail must never be answered.

RFC 3834 (Auto-Submitted), the de-facto headers mail systems use (Precedence, X-Autoreply,
X-Auto-Response-Suppress, List-Id), the null reverse path, well-known robot senders and
out-of-office subjects in the languages we serve. Returns the reason as text so the pipeline's
disposition says why ("Auto-Submitted: auto-replied"). Bounce detection lives in bounce.py and is
re-exported here. This module decides only; it must not send anything or touch the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mailgate.mail.bounce import detect_bounce
from mailgate.mail.decode import plus_parts
from mailgate.mail.model import ParsedMail

__all__ = [
    "auto_reply_reason",
    "automatic_answer",
    "detect_bounce",
    "is_own_address",
    "is_robot_address",
    "own_list",
]

# Senders that are machines by convention (RFC 5321 section 4.5.1 postmaster; RFC 3834 section 2
# lists mailer-daemon-like senders as ones never to answer).
_ROBOT_LOCAL_RE = re.compile(
    r"^(?:mailer-daemon|mailer_daemon|maildaemon|postmaster|"
    r"no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|no[-_.]?respond|"
    r"(?:no[-_.]?reply|noreply)[-_.+].*|.*[-_.](?:no[-_.]?reply|noreply|donotreply))$",
    re.IGNORECASE,
)

# Out-of-office subject prefixes as Exchange/Outlook, Gmail, Apple and Zimbra write them, per
# language. They sit at the start of the subject and are followed by ":" or the end.
_OOF_PHRASES = (
    r"(?:"
    r"out of (?:the )?office(?: reply| autoreply)?|automatic reply|auto(?:matic)?[- ]?reply|auto[- ]?response|"
    r"autoreply|vacation (?:reply|response|message)|away from (?:the )?office|"
    r"abwesenheitsnotiz|automatische antwort|abwesend|nicht im büro|"
    r"réponse automatique|absence(?: du bureau)?|absent(?:e)? du bureau|"
    r"respuesta automática|respuesta automatica|fuera de la oficina|ausente|"
    r"fuori sede|risposta automatica|fuori ufficio|"
    r"resposta automática|resposta automatica|ausência temporária|fora do escritório|"
    r"automatisch antwoord|afwezig|afwezigheid(?:smelding)?|niet aanwezig|"
    r"frånvaro|automatiskt svar|autosvar|automatisk svar|fraværende|fravær|"
    r"automaattinen vastaus|poissa|automatyczna odpowiedź|nieobecność|"
    r"automatická odpověď|nepřítomnost|otomatik yanıt|ofis dışında|"
    r"автоответ|автоматический ответ|нет на месте|"
    # vacation(1), procmail and webmail vacation programs: "away from my mail", "On vacation"
    r"away from my (?:e-?mail|mail)|on vacation|on holiday|on leave|vacation|holiday notice|"
    r"自动回复|自動回覆|自動回复|自动答复|不在办公室|"
    r"自動応答|自動返信|不在通知|不在"
    r")"
)
# "[Out of Office] Re: …" in brackets, or "Automatic reply: …" followed by a colon, a dash or nothing.
_OOF_SUBJECT_RE = re.compile(
    rf"^\s*(?:[\[(]\s*{_OOF_PHRASES}\s*[\])]|{_OOF_PHRASES}\s*(?:[:：]|$|-\s))",
    re.IGNORECASE,
)
# Lotus Notes / Domino and some webmail: "Jane Doe is out of the office." as the whole subject,
# and "I am out of the office until …" / "Out of office until 3 May".
_OOF_SENTENCE_RE = re.compile(
    r"^\s*(?:[^:]{1,80}\s+is|i am|i'm|i’m|currently)\s+(?:out of (?:the )?office|away from (?:the )?office|on (?:vacation|holiday|leave))\b"
    r"|^\s*out of (?:the )?office (?:until|till|from|through|returning|back)\b",
    re.IGNORECASE,
)
# "All" suppresses every auto-response; OOF and AutoReply are what auto-responders set on their
# own mail (MS-OXCMAIL 2.2.3.2.14). DR/RN/NRN only concern receipts and say nothing of the sender.
_SUPPRESS_VALUES = {"all", "oof", "autoreply"}
_BULK_PRECEDENCE = {"bulk", "junk", "list", "auto_reply"}
# What a list calls itself: the mailto of List-Post (RFC 2369), the address of Google Groups'
# "Mailing-list: list X; contact Y", Mailman's X-BeenThere, and the list-id of List-Id (RFC 2919),
# which Google Groups and Mailman write as the list's address with "@" made ".".
_MAILTO_RE = re.compile(r"<\s*mailto:([^>?\s]+)", re.IGNORECASE)
_MAILING_LIST_RE = re.compile(r"^\s*list\s+([^\s;]+)", re.IGNORECASE)
_LIST_ID_RE = re.compile(r"<\s*([^<>\s]+)\s*>\s*$")


def _autoreply_header(mail: ParsedMail) -> str | None:
    """The autoresponder headers that predate RFC 3834 (and are still sent): what was said."""
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder", "X-Auto-Reply"):
        value = mail.header(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return f"{name}: {value.strip() or '(present)'}"
    return None


# RFC 6522: multipart/report carries a mail system's report (RFC 8098 read receipts, RFC 3464
# delivery reports, RFC 5965 feedback): always machine-made, always about another message.
_REPORT_RE = re.compile(r"^\s*multipart/report\b", re.IGNORECASE)
_REPORT_TYPE_RE = re.compile(r"\breport-type\s*=\s*\"?([\w.-]+)", re.IGNORECASE)


def _report(mail: ParsedMail) -> str | None:
    """A mail system's report that is no bounce (bounces are read before): an Outlook or
    Thunderbird read receipt ("Read: …", RFC 8098), a DSN of a delivery that succeeded. Outlook
    sends its receipts with none of RFC 3834's headers, so the content type is the evidence."""
    ctype = mail.header("Content-Type") or ""
    if not _REPORT_RE.match(ctype):
        return None
    kind = _REPORT_TYPE_RE.search(ctype)
    return f"a mail system report (multipart/report; report-type={kind[1] if kind else '?'})"


def is_robot_address(addr: str) -> bool:
    """A machine's address by convention: mailer-daemon, postmaster, no-reply and its spellings."""
    return bool(addr) and bool(_ROBOT_LOCAL_RE.match(addr.rpartition("@")[0]))


def is_own_address(addr: str, own_addresses: Iterable[str]) -> bool:
    """Is `addr` one of ours, plus-addressed forms included?"""
    if not addr:
        return False
    base, _ = plus_parts(addr)
    return any(base == plus_parts(own)[0] for own in own_addresses if own)


def own_list(mail: ParsedMail, desk_addresses: Iterable[str]) -> str | None:
    """Which list header shows that the list or group that relayed this mail is the desk's own
    address (a Google Group or Mailman list made the support address), or None.

    Such mail was sent to the desk as surely as mail sent to it straight, and is answered like
    it. Every name the mail gives its list must be one of the desk's addresses: a list that names
    itself once as the desk and once as something else is another list (or a forgery) and stays
    list mail. Delivered-To and X-Original-To are no evidence: the desk's own MTA writes the
    desk's address there on every mail it delivers, a newsletter's included."""
    desk = {plus_parts(a)[0] for a in desk_addresses if a}
    dotted = {a.replace("@", ".", 1) for a in desk}
    named: list[tuple[str, bool]] = []  # (what the header says, whether it is the desk)
    for value in mail.header_all("List-Post"):
        named.extend((f"List-Post {a}", plus_parts(a)[0] in desk) for a in _MAILTO_RE.findall(value))
    for value in mail.header_all("Mailing-list"):
        if found := _MAILING_LIST_RE.match(value):
            named.append((f"Mailing-list {found[1]}", plus_parts(found[1])[0] in desk))
    for value in mail.header_all("X-BeenThere"):
        named.append((f"X-BeenThere {value.strip()}", plus_parts(value.strip())[0] in desk))
    for value in mail.header_all("List-Id"):
        found = _LIST_ID_RE.search(value)
        list_id = found[1].lower() if found else value.strip().lower()
        named.append((f"List-Id <{list_id}>", list_id in dotted))
    if not named or not all(ours for _, ours in named):
        return None
    return f"relayed by the desk's own list ({'; '.join(n for n, _ in named)[:200]})"


def auto_reply_reason(
    mail: ParsedMail, own_addresses: Iterable[str], *, desk_list: bool = False
) -> str | None:
    """Why this message must not be answered automatically, or None if a person wrote it.
    `desk_list`: the list that relayed it is the desk itself (see `own_list`): its list headers
    (Precedence: list, List-Id, List-Unsubscribe) say nothing of the author, every other sign
    of a machine still counts."""
    # A bounce first: a real DSN may also carry Precedence: bulk or list headers (a list's MTA
    # reporting on our mail), and it is handled as the bounce it is, not as bulk mail.
    if mail.is_bounce:
        return "delivery status notification (bounce)"
    # RFC 3834 section 5: any value other than "no" means the message was generated automatically.
    auto = mail.header("Auto-Submitted")
    if auto is not None and auto.strip().split(";", 1)[0].strip().lower() not in ("", "no"):
        return f"Auto-Submitted: {auto.strip()}"
    if said := _autoreply_header(mail) or _report(mail):
        return said
    precedence = mail.header("Precedence")
    if precedence and precedence.strip().lower() in _BULK_PRECEDENCE - ({"list"} if desk_list else set()):
        return f"Precedence: {precedence.strip()}"
    suppress = mail.header("X-Auto-Response-Suppress")
    if suppress:
        values = {v.strip().lower() for v in re.split(r"[,;\s]+", suppress) if v.strip()}
        if values & _SUPPRESS_VALUES:
            return f"X-Auto-Response-Suppress: {suppress.strip()}"
    list_id = mail.header("List-Id")
    if list_id and not desk_list:
        return f"mailing list mail (List-Id: {list_id.strip()[:100]})"
    if mail.header("List-Unsubscribe") and not desk_list:
        return "bulk mail (List-Unsubscribe present)"
    # RFC 5321 section 4.5.5: a null reverse path marks notifications that must not be answered.
    return_path = mail.header("Return-Path")
    if return_path is not None and return_path.strip() in ("<>", "", "< >"):
        return "empty Return-Path (<>)"
    if mail.from_addr:
        local = mail.from_addr.rpartition("@")[0]
        if _ROBOT_LOCAL_RE.match(local):
            return f"sender {mail.from_addr} is a robot address"
        if is_own_address(mail.from_addr, own_addresses):
            return f"sender {mail.from_addr} is one of our own addresses"
    if mail.subject and (_OOF_SUBJECT_RE.match(mail.subject) or _OOF_SENTENCE_RE.match(mail.subject)):
        return f"out-of-office subject {mail.subject[:100]!r}"
    return None


def automatic_answer(mail: ParsedMail) -> str | None:
    """Why this mail is an automatic answer to another mail (an out-of-office, a vacation notice),
    or None. Only a sender's own headers count: RFC 3834's `auto-replied` and the autoresponder
    headers. A system's notification (`Auto-Submitted: auto-generated`: a monitoring alert, a form)
    is no answer and may be a real request; an out-of-office subject alone is not evidence enough
    to keep a person's mail from the desk ("Vacation: request for the week of 3 May")."""
    auto = mail.header("Auto-Submitted")
    if auto is not None and auto.strip().split(";", 1)[0].strip().lower() == "auto-replied":
        return f"Auto-Submitted: {auto.strip()}"
    if said := _autoreply_header(mail) or _report(mail):
        return said  # a read receipt answers a mail as surely as an out-of-office does
    precedence = mail.header("Precedence")
    if precedence and precedence.strip().lower() == "auto_reply":
        return f"Precedence: {precedence.strip()}"
    # Exchange and Outlook's out-of-office assistant mark their answer `auto-generated`, not
    # `auto-replied` (with `X-Auto-Response-Suppress: All`), and word it "Automatic reply: …",
    # "Automatische Antwort: …" in the mailbox's language. Machine-made, plus worded as an
    # out-of-office: that is an answer, not a system's request.
    machine = (auto is not None and auto.strip().split(";", 1)[0].strip().lower() not in ("", "no")) or (
        mail.header("X-Auto-Response-Suppress") is not None
    )
    if (
        machine
        and mail.subject
        and (_OOF_SUBJECT_RE.match(mail.subject) or _OOF_SENTENCE_RE.match(mail.subject))
    ):
        return f"out-of-office subject {mail.subject[:100]!r} on machine-made mail"
    return None
