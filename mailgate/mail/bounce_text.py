"""Non-standard bounces: the plain-text notices MTAs, providers and gateways send instead of (or
beside) an RFC 3464 report, recognised by what each of them really writes.

Each wording below is the text of one MTA's notice (qmail's qmail-send.c, Exim's default
bounce_message_file, Postfix's bounce templates, Sendmail's savemail.c, OpenSMTPD's bounce.c,
DMA's net.c, Exchange/Office 365 and Gmail's notices, and the gateways and providers that
Mailman's and sisimai's corpora show), each a separate regex so that the plain text every match
needs is looked for first with `in` (`required_literals`). A wording is *strong* when no person
writes it; a *weak* one ("could not be delivered") counts only with a machine sender or a bounce
subject. This module reads text; it must not decide what happens to the ticket or the address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailgate.literals import required_literals
from mailgate.mail.decode import bare_address
from mailgate.mail.model import ParsedMail

_I = re.IGNORECASE
STATUS_RE = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_SMTP_CODE_RE = re.compile(r"(?<![\w.#:/-])([45])[0-5]\d(?:[ -:]|$)", re.MULTILINE)
ADDR_RE = re.compile(r"[A-Za-z0-9._%+'=/!#$&*?^`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


@dataclass(frozen=True)
class _Wording:
    name: str
    pattern: re.Pattern[str]
    needs: tuple[str, ...]
    strong: bool
    key: str  # the longest of `needs`: one `in` to rule most wordings out


def _w(name: str, wording: str, strong: bool = True) -> _Wording:
    rx = re.compile(wording, _I | re.DOTALL)
    needs = required_literals(rx)
    if not needs and not re.search(r"[\\.^$*+?{}\[\]|()]", wording):
        needs = (wording.lower(),)  # plain text outside ASCII, which required_literals leaves out
    return _Wording(name, rx, needs, strong, max(needs, key=len) if needs else "")


# (detector name, wording, strong). Line breaks in a notice may fall anywhere: `\s+` between words.
WORDINGS: tuple[_Wording, ...] = (
    _w("qmail", r"(?:Hi\. )?This is the qmail-send program"),
    _w("exim", r"This message was created automatically by mail\s+delivery software"),
    _w("exim", r"A message that you sent could not be delivered to one or more of\s+its recipients"),
    _w("exim", r"A message that you sent has not yet been delivered to one or more of\s+its"),
    _w("postfix", r"This is the mail system at host"),
    _w("postfix", r"I'm sorry to have to inform you that (?:your|the) message"),
    _w("postfix", r"THIS IS A WARNING ONLY\.\s+YOU DO NOT NEED TO RESEND YOUR MESSAGE"),
    _w("sendmail", r"The following addresses had (?:permanent fatal|transient non-fatal) errors"),
    _w("sendmail", r"-{3,}\s*Transcript of session follows\s*-{3,}"),
    _w("sendmail", r"THIS IS A WARNING MESSAGE ONLY"),
    _w("sendmail", r"The original message was received at .{1,120}\bfrom\b", strong=False),
    _w("exchange", r"Delivery has failed to these recipients or groups"),
    _w("exchange", r"Delivery is delayed to these recipients or groups"),
    _w("exchange", r"Diagnostic information for administrators"),
    _w("exchange", r"Your message did not reach some or all of the intended\s+recipients"),
    _w("exchange", r"The following recipient\(s\) (?:cannot|could not) be reached"),
    _w("exchange", r"Delivery to the following recipients (?:failed|has been delayed)"),
    _w("exchange", r"Your message to .{1,200}? couldn't be delivered"),
    # Exchange's notice in the languages it localises it into.
    _w("exchange", r"Fehler bei der Zustellung an folgende Empfänger oder Gruppen"),
    _w("exchange", r"Diagnoseinformationen für Administratoren"),
    _w("exchange", r"La remise à ces destinataires ou groupes a échoué"),
    _w("exchange", r"Informations de diagnostic pour les administrateurs"),
    _w("exchange", r"Error en la entrega a estos destinatarios o grupos"),
    _w("exchange", r"Información de diagnóstico para administradores"),
    _w("exchange", r"Recapito non riuscito per i seguenti destinatari o gruppi"),
    _w("exchange", r"Informazioni di diagnostica per gli amministratori"),
    _w("exchange", r"Falha na entrega a estes destinatários ou grupos"),
    _w("exchange", r"Bezorging is mislukt voor deze ontvangers of groepen"),
    _w("exchange", r"Leveransen misslyckades till följande mottagare eller grupper"),
    _w("exchange", r"This is an automatically generated Delivery Status Notification"),
    _w("exchange", r"This message hasn't been delivered yet", strong=False),
    _w("gmail", r"Delivery to the following recipients? (?:failed permanently|has been delayed)"),
    _w("gmail", r"Your message wasn't delivered to .{1,200}? because"),
    _w("gmail", r"There was a temporary problem delivering your message"),
    _w("gmail", r"The response from the remote server was"),
    _w("gmail", r"The recipient server did not accept our requests? to connect"),
    _w("gmail", r"There was a problem delivering your message to"),
    _w("gmail", r"\bAddress not found\b", strong=False),
    _w("gmail", r"\bMessage (?:not delivered|blocked)\b", strong=False),
    _w("gmail", r"\bDelivery incomplete\b", strong=False),
    _w("google groups", r"the group you tried to contact \(.{1,200}?\) may not exist"),
    _w("google groups", r"We're writing to let you know that the group you tried to contact"),
    _w("yahoo", r"Sorry, we were unable to deliver your message to the following\s+address"),
    _w("yahoo", r"Unable to deliver message to the following address"),
    _w("aol", r"Your mail to the following recipients could not be delivered"),
    _w("aol/mcafee", r"The following addresses had delivery problems"),
    _w("groupwise", r"The message that you sent was undeliverable to the following"),
    _w("lotus notes", r"Your message\s+Subject:.{0,400}?\s+was not delivered to"),
    _w("lotus notes", r"Your document\s*:.{0,400}?\s+was not delivered to"),
    _w("lotus notes", r"not listed in (?:the )?(?:public )?(?:Domino Directory|Name and Address Book)"),
    _w("dma", r"This is the DragonFly Mail Agent"),
    _w("dma", r"There was an error delivering your mail to"),
    _w("opensmtpd", r"This is the MAILER-DAEMON, please DO NOT REPLY"),
    _w("opensmtpd", r"An error has occurred while attempting to deliver a message for\s+the"),
    _w("opensmtpd", r"A message is delayed for more than .{1,40}? for the following"),
    _w("amazon ses", r"An error occurred while trying to deliver the mail to the following\s+recipients"),
    _w("kddi", r"Your mail (?:sent on|attempted to be delivered on)\s*:"),
    _w("kddi", r"Could not be delivered to\s*:\s*<"),
    _w("interscan mss", r"Unable to deliver message to\s+<"),
    _w("interscan mss", r"Sent <<< RCPT TO\s*:"),
    _w("x.400", r"This report relates to (?:a|your) message"),
    _w("x.400", r"Delivery Report \(failure\)", strong=False),
    _w("x.400", r"Your message was not delivered to\s*:?\s", strong=False),
    _w("netscape", r"This Message was undeliverable due to the following reason"),
    _w("courier", r"running the Courier mail server"),
    _w("courier", r"This is a delivery status notification from"),
    _w("amavis", r"This nondelivery report was generated by"),
    _w("imail", r"Body of message generated response"),
    _w("surfcontrol", r"A transcript of the attempts to send the message follows"),
    _w("mailmarshal", r"Could not be delivered because of"),
    _w("mailmarshal", r"The following recipients were affected"),
    _w("sendgrid", r"This is an automatically generated message from SendGrid"),
    _w("facebook", r"This message was created automatically by Facebook"),
    _w("m-filter", r"このメールは「m-FILTER」が自動的に生成して送信しています"),
    _w("mailru", r"Это письмо создано автоматически"),
    _w("qmail", r"This is the machine generated message from mail service"),
    _w("x4", r"This is the mail delivery agent at"),
    _w("mailfoundry", r"Delivery failed for the following reason", strong=False),
    _w("james", r"Error message below\s*:", strong=False),
    _w("iplanet", r"The following recipients did not receive this message", strong=False),
    # RFC 3464 fields pasted as text by gateways that lose the report's MIME structure.
    _w("rfc3464 text", r"^\s*Final-Recipient\s*:\s*rfc822\s*;"),
    _w("rfc3464 text", r"^\s*Action\s*:\s*(?:failed|delayed)\s*$"),
    _w("mdaemon", r"The following message (?:could not be|was not) delivered", strong=False),
    _w("james", r"Failed recipient\(s\)\s*:"),
    _w("imail", r"The following mail could not be delivered", strong=False),
    _w("mirapoint", r"Permanent Failure\s*:", strong=False),
    _w(
        "messagelabs", r"Delivery (?:to the following recipients? )?failed for these recipients", strong=False
    ),
    _w("generic", r"\b(?:message|mail|e-?mail)\b.{0,80}?\bcould not be (?:delivered|sent)\b", strong=False),
    _w("generic", r"\bundeliver(?:able|ed)\b", strong=False),
    _w("generic", r"\bdelivery (?:has )?failed\b", strong=False),
    _w("generic", r"\bpermanent(?:ly)? (?:fatal )?(?:error|failure)\b", strong=False),
    _w("generic", r"\b(?:user|recipient|mailbox|address) (?:unknown|not found|unavailable)\b", strong=False),
    _w("generic", r"\bno such (?:user|recipient|mailbox|address)\b", strong=False),
    _w("generic", r"\bmailbox (?:is )?full\b", strong=False),
    _w("generic", r"\bnot delivered\b|\bnon-?delivery\b|\bwas not delivered\b", strong=False),
    _w("generic", r"メッセージを配信できません|配信できませんでした|送信できませんでした", strong=False),
    _w("generic", r"nicht zugestellt werden|konnte nicht zugestellt|unzustellbar", strong=False),
    _w("generic", r"n'a pas pu être (?:remis|délivré)|non remis", strong=False),
    _w("generic", r"no (?:se )?pudo (?:ser )?entregar|no se puede entregar", strong=False),
)

# Senders that are machines reporting on delivery (RFC 3464 section 2: the DSN's From is the
# reporting MTA's postmaster or mailer-daemon) and their usual display names.
_ROBOT_LOCAL_RE = re.compile(
    r"^(?:mailer[-_]?daemon|mail[-_]?daemon|postmaster|mdaemon|mail[-_.]?delivery(?:[-_.]?system)?|"
    r"mail[-_.]?administrator|bounces?|bounce[-_+].*|mail[-_.]?router|smtp[-_.]?gateway|"
    r"mmdf|maildelivery|deliverystatus|mta[-_.]?(?:daemon|notifications?)|notifications?[-_.]mta|"
    # Exchange's own sender (a person's admin account is not a machine: an IT admin writes to
    # the desk about delivery problems too)
    r"microsoftexchange[0-9a-f]{20,})$",
    _I,
)
_ROBOT_NAME_RE = re.compile(
    r"^\s*(?:mail delivery (?:system|subsystem|service|agent)|mailer[- ]daemon|postmaster|"
    r"mail administrator|mail delivery|delivery status notification|internet mail delivery|"
    r"microsoft outlook|mail system|mta|interscan mss|mail undeliverable|"
    r"internet mail service|mail router|notes mail router|post office|mail gateway|"
    r"symantec mail security|messagelabs|mimecast|barracuda|proofpoint|mail security)\b",
    _I,
)
# Subjects of failure and delay notices as MTAs and providers write them, in the languages
# Exchange localises its "Undeliverable:" prefix into. Plain lowercase pieces, looked for with
# `in`: a regex alternation of a hundred branches cost 36 µs on every subject.
_SUBJECT_PIECES = (
    "undeliver", "returned mail", "returned to sender", "delivery status notification",
    "mail delivery", "failure notice", "delivery fail", "failed delivery", "delivery report",
    "delivery notification", "delivery problem", "delivery error", "could not be delivered",
    "not delivered", "nondeliverable", "non-delivery", "delivery delayed", "delayed mail",
    "(delay)", "warning: message", "mail system error", "delivery has failed", "failed mail", "message could not",
    "bounced mail", "bounce mail", "non remis", "non distribuable", "unzustellbar",
    "nicht zustellbar", "no se puede entregar", "no entregado", "non recapitabile",
    "não entregue", "não é possível entregar", "onbestelbaar", "kunde inte levereras",
    "olevererbart", "kan ikke leveres", "ikke leveret", "ei voitu toimittaa",
    "nie można dostarczyć", "niedostarczalne", "nedoručitelné", "nelze doručit", "недоставл",
    "не доставлен", "не удалось доставить", "teslim edilemedi", "kézbesíthetetlen",
    "δεν ήταν δυνατή η παράδοση", "μη παραδοτέο", "배달되지", "전송 실패", "לא ניתן למסור",
    "لا يمكن التسليم", "تعذر التسليم", "配信不能", "配信エラー", "未配信", "メール配信に失敗",
    "メッセージを配信できません", "退信", "无法投递", "無法傳遞",
)  # fmt: skip


def bounce_subject(subject: str) -> bool:
    """Does the subject say a delivery failed or is delayed?"""
    low = subject.lower()
    return any(piece in low for piece in _SUBJECT_PIECES)


# Success and relay notices (RFC 3464 "delivered"/"relayed", OpenSMTPD's success notice) are
# reports, not failures.
_SUCCESS_RE = re.compile(
    r"\((?:relay|success|delivered)\)|successfully delivered|delivery status notification \(success\)|"
    r"was relayed to these recipients|relayed to non-DSN-aware mailer|delivered to mailbox|"
    r"return receipt|read receipt|zugestellt:|delivered:",
    _I,
)
# A warning that delivery is still being tried: a delay, not a failure. These wordings decide alone.
_WARNING_RE = re.compile(
    r"THIS IS A WARNING (?:MESSAGE )?ONLY|YOU DO NOT NEED TO RE-?SEND|do not need to re-?send|"
    r"has not yet been delivered|hasn't been delivered yet|not been delivered yet|"
    r"only a temporary failure|Delivery Status Notification \(Delay\)|still being retried|"
    r"delivery is delayed to these|delivery to the following recipients? has been delayed|"
    r"a message is delayed for more than|delivery attempts will continue|will retry for|"
    r"^\s*Action\s*:\s*delayed\s*$|"
    r"Warning: message .{0,80} delayed",
    _I | re.MULTILINE,
)
# Weaker signs of a delay, weighed against signs of a failure.
_TEMPORARY_RE = re.compile(
    r"(?:will|shall) (?:continue to |keep )?(?:try|trying|retry|retrying|attempt)|will be retried|"
    r"(?:is|has been|was) delayed|delivery (?:is )?delayed|delays have|"
    r"temporary (?:problem|failure)|transient non-fatal|Delayed Mail",
    _I,
)
_PERMANENT_RE = re.compile(
    r"permanent(?:ly)?\b|fatal error|gave up|giving up|retry timeout exceeded|will not (?:be )?retr|"
    r"could not be delivered|couldn't be delivered|wasn't delivered|was not delivered|undeliverable|"
    r"delivery (?:has )?failed|failed to deliver",
    _I,
)
# Where a notice starts quoting the original: addresses below are not failed recipients, and the
# first Message-ID below is the original's.
_COPY_MARKERS = re.compile(
    r"^\s*(?:-+ ?below this line is a copy of the message\.?|"  # qmail
    r"-+ this is a copy of the message.{0,60}-+|"  # exim
    r"-+ ?(?:the )?original message (?:follows|headers?|text)?.{0,20}-*|"
    r"original message headers:|"  # Exchange / Office 365
    r"-+ ?original message ?-+|"
    r"-+ ?unsent message follows ?-+|"  # sendmail
    r"-+ ?(?:message|returned) (?:text|headers?|message) (?:follows|below).{0,10}-*|"
    r"below is a copy of the original message:?|"  # OpenSMTPD
    r"message headers follow\.?|"  # DMA
    r"the original message was:|"
    r"(?:possibly truncated )?original message follows\.?:?|"
    r"-+ ?original message -+ ?(?:follows)?|"
    r"-+ ?forwarded message ?-+|"  # our own rendering of an attached message/rfc822
    r"-+ ?the header of the original message is following\.? ?-+|"
    r"-+ ?(?:received|original) headers? ?-+|"
    r"-+ ?session transcript ?-+)\s*$",
    _I | re.MULTILINE,
)
# Lines that name the failed recipient in a known shape: "<user@host>:" (qmail, Postfix),
# "RCPT TO:<user@host>" (transcripts, InterScan), "Could not be delivered to: <user@host>" (KDDI),
# "Original-/Final-Recipient: rfc822; user@host" (DSN fields pasted into text by gateways).
_SHAPED_RECIPIENT_RES = (
    re.compile(r"^\s*<([^<>\s]+@[^<>\s]+)>\s*[:.]?\s*(?:$|\S)", re.MULTILINE),
    re.compile(r"RCPT TO\s*:\s*<([^<>\s]+@[^<>\s]+)>", _I),
    re.compile(
        r"(?:could not be delivered to|error delivering your mail to|undeliverable to)\s*:?\s*<?([^<>\s]+@[^<>\s]+?)>?[\s.,:]",
        _I,
    ),
    re.compile(
        r"^(?:final|original)-recipient\s*:\s*(?:rfc822\s*;)?\s*<?([^<>\s;]+@[^<>\s;]+?)>?\s*$",
        _I | re.MULTILINE,
    ),
)
_MSGID_LINE_RE = re.compile(r"^\s*message-id\s*:\s*(<[^>\s]+>|\S+@\S+)", re.IGNORECASE | re.MULTILINE)
_DIAG_RE = re.compile(
    r"^.*(?:\b[45]\d\d[ -]\d?|said:|smtp error|remote server returned|user unknown|unknown user|"
    r"does not exist|doesn't exist|mailbox|not found|rejected|denied|quota|diagnostic).*$",
    _I | re.MULTILINE,
)


STRONG_WORDINGS = tuple(w for w in WORDINGS if w.strong)


def wording_of(text: str, *, strong_only: bool = False) -> _Wording | None:
    """The first known notice wording in `text` (strong ones first), or None. `strong_only` for
    mail with no sign of a machine, where a weak wording would decide nothing (and most mail is
    such mail: this keeps the scan off the parse time of ordinary messages)."""
    lowered = text.lower()
    weak: _Wording | None = None
    for wording in STRONG_WORDINGS if strong_only else WORDINGS:
        if wording.key not in lowered:
            continue
        if all(n in lowered for n in wording.needs) and wording.pattern.search(text):
            if wording.strong:
                return wording
            weak = weak or wording
    return weak


REPLY_PREFIX_RE = re.compile(
    r"^\s*(?:re|fwd?|aw|wg|sv|vs|tr|rv|enc|r|i|odp|pd|vl|antw|doorst)\s*(?:\[\d+\])?\s*:", _I
)


def opens_a_line(text: str, wording: _Wording) -> bool:
    """Does the wording start a line (after blanks or a frame of #, *, -), as notices print it?"""
    match = wording.pattern.search(text)
    if match is None:
        return False
    line_start = text.rfind("\n", 0, match.start()) + 1
    return not text[line_start : match.start()].strip(" \t#*-=>")


def first_lines(text: str, count: int) -> str:
    """The first `count` non-blank lines of `text` (of its first 3000 characters)."""
    lines = [line for line in text[:3000].split("\n") if line.strip()]
    return "\n".join(lines[:count])


def robot_sender(mail: ParsedMail) -> bool:
    """Does the From say this is a mail system reporting on delivery?"""
    local = (mail.from_addr or "").rpartition("@")[0]
    return bool(
        (local and _ROBOT_LOCAL_RE.match(local))
        or (mail.from_name and _ROBOT_NAME_RE.match(mail.from_name))
        or (not mail.from_addr and mail.from_name and "daemon" in mail.from_name.lower())
    )


def is_success_notice(mail: ParsedMail, notice: str) -> bool:
    """A "delivered" or "relayed" report with no word of failure in it."""
    return bool(
        _SUCCESS_RE.search(mail.subject or "")
        and not _PERMANENT_RE.search(notice)
        and not _TEMPORARY_RE.search(notice)
    )


def split_notice(body: str) -> tuple[str, str]:
    """(the notice, the quoted copy of the original below it)."""
    marker = _COPY_MARKERS.search(body)
    if marker is None:
        return body, ""
    return body[: marker.start()], body[marker.end() :]


def is_temporary(notice: str, subject: str, status: str | None) -> bool:
    """A delay warning (the MTA is still trying), not a failure. Explicit warning wording wins;
    without it, only a 4.x.x status or 4xx reply with no 5xx one says "temporary"."""
    if _WARNING_RE.search(subject) or _WARNING_RE.search(notice):
        return True
    if _TEMPORARY_RE.search(subject) and not _PERMANENT_RE.search(subject):
        return True
    if status is not None and status.startswith("5"):
        return False
    temp = _TEMPORARY_RE.search(notice)
    perm = _PERMANENT_RE.search(notice)
    if temp and not perm:
        return True
    if temp and perm:
        return temp.start() < perm.start()
    if status is not None:
        return status.startswith("4")
    codes = {m.group(1) for m in _SMTP_CODE_RE.finditer(notice)}
    return codes == {"4"}


def shaped_recipients(notice: str) -> list[str]:
    found: list[str] = []
    for rx in _SHAPED_RECIPIENT_RES:
        for match in rx.finditer(notice):
            addr = bare_address(match.group(1).strip(".,;:'\""))
            if addr and ADDR_RE.fullmatch(addr) and addr not in found:
                found.append(addr)
    return found


def recipients_in(notice: str, exclude: set[str]) -> list[str]:
    """Failed recipients named in a notice: the known shapes first, any address otherwise."""
    shaped = [a for a in shaped_recipients(notice) if a not in exclude and not is_robot_address(a)]
    if shaped:
        return shaped
    found: list[str] = []
    for line in notice.splitlines():
        if _MSGID_LINE_RE.match(line) or line.lstrip().lower().startswith(
            ("from:", "reporting-mta", "received:")
        ):
            continue
        for match in ADDR_RE.finditer(line):
            addr = bare_address(match.group(0).strip(".'"))
            if addr and addr not in exclude and addr not in found and not is_robot_address(addr):
                found.append(addr)
                if len(found) >= 50:
                    return found
    return found


def is_robot_address(addr: str) -> bool:
    return bool(_ROBOT_LOCAL_RE.match(addr.rpartition("@")[0]))


def message_id_in(text: str) -> str | None:
    match = _MSGID_LINE_RE.search(text)
    return match.group(1) if match else None


def status_in(notice: str) -> str | None:
    """The RFC 3463 status code in a notice; from a bare SMTP reply ("554 delivery error") its
    class alone, as RFC 3463 section 3.1 allows ("5.0.0": other or undefined)."""
    match = STATUS_RE.search(notice)
    if match:
        return match.group(1)
    reply = _SMTP_CODE_RE.search(notice)
    return f"{reply.group(1)}.0.0" if reply else None


def diagnostic_in(notice: str) -> str | None:
    match = _DIAG_RE.search(notice)
    return match.group(0).strip()[:300] if match else None
