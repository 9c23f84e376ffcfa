"""The parsed form of one inbound message: the contract between `mail.parse` and the pipeline.

It must stay a plain value: no database handles, no file paths built from mail content.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime


@dataclass(frozen=True)
class Attachment:
    """One attachment or inline part. `filename` is the decoded original name, only ever shown, never a path."""

    filename: str
    content_type: str
    content: bytes
    content_id: str | None = None
    inline: bool = False
    # Set when the content is already in the blob store (the parse helper put it there): then
    # `content` is empty, and the bytes are read from the store by this digest.
    sha256: str | None = None
    stored_size: int | None = None

    @property
    def size(self) -> int:
        return self.stored_size if self.stored_size is not None else len(self.content)

    def stored(self, digest: str) -> Attachment:
        """This attachment once its content is in the blob store under `digest`: the same
        description without the bytes, which then need not travel between processes."""
        return replace(self, content=b"", sha256=digest, stored_size=self.size)


@dataclass(frozen=True)
class Bounce:
    """What a delivery status notification (RFC 3464), a non-standard bounce or a feedback report
    (RFC 5965 complaint) tells us."""

    failed_recipients: tuple[str, ...]
    original_message_id: str | None
    status: str | None = None  # e.g. "5.1.1"
    diagnostic: str | None = None
    permanent: bool = True
    original_envelope_id: str | None = None  # RFC 3461 ENVID we gave the relay, echoed by the DSN
    # "failed", "delayed" (a warning: the MTA is still trying) or "complaint" (an RFC 5965 feedback
    # report: the recipient marked our mail as spam and must get no more of it).
    kind: str = "failed"
    detector: str | None = None  # which reader recognised it ("rfc3464", "arf", "exim", "flufl.bounce", ...)
    # The envelope sender of the reported mail, where the report names it: an RFC 5965 complaint's
    # Original-Mail-From. A complaint goes to the address the desk gave the mailbox provider, not
    # to that envelope sender, so this is where its bounce token (VERP) is found.
    original_mail_from: str | None = None

    @property
    def complaint(self) -> bool:
        return self.kind == "complaint"


@dataclass
class ParsedMail:
    """Everything the pipeline needs to know about one message.

    Addresses are bare lowercase `local@domain`. Message-IDs are stored without angle brackets.
    `body_text` is the whole text (HTML converted); `reply_text` is only what the writer added.
    """

    subject: str = ""
    from_addr: str = ""
    from_name: str = ""
    to_addrs: list[str] = field(default_factory=list)
    cc_addrs: list[str] = field(default_factory=list)
    reply_to: list[str] = field(default_factory=list)
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    date: datetime | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # decoded, in order, names as sent
    body_text: str = ""
    body_html: str | None = None
    reply_text: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    is_auto_reply: bool = False
    auto_reply_reason: str | None = None
    is_bounce: bool = False
    bounce: Bounce | None = None
    errors: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        """First value of a header, case-insensitive, or None."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        low = name.lower()
        return [value for key, value in self.headers if key.lower() == low]
