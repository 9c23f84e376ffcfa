"""`mailgate parse FILE [--json]`: show what mailgate understands of one message.

Exit 0 for any message that could be read from disk, however broken (problems are listed under
`errors`); 66 (EX_NOINPUT) only when the file cannot be read. It only reads: no database, no mail.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from os import EX_NOINPUT, EX_OK
from pathlib import Path
from typing import Any

from mailgate.domain.threading import subject_tags
from mailgate.mail.decode import visible
from mailgate.mail.model import ParsedMail
from mailgate.mail.parse import parse_message


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("parse", help="show what mailgate understands of one message (.eml file, - for stdin)")
    p.add_argument("file", metavar="FILE", help="a raw RFC 5322 message; - reads stdin")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(func=run)


def ticket_ref(subject: str, desk_keys: Iterable[str]) -> str | None:
    """The first subject tag naming one of our desks, e.g. "SUP-20" (DESIGN.md threading rule 3)."""
    keys = {k.upper() for k in desk_keys}
    for key, number in subject_tags(subject):
        if key in keys:
            return f"{key}-{number}"
    return None


def result_dict(mail: ParsedMail, desk_keys: Iterable[str]) -> dict[str, Any]:
    """The JSON object printed by `mailgate parse --json`. Every value is JSON-serialisable."""
    bounce = None
    if mail.bounce is not None:
        bounce = {
            "failed_recipients": list(mail.bounce.failed_recipients),
            "original_message_id": mail.bounce.original_message_id,
            "status": mail.bounce.status,
            "diagnostic": mail.bounce.diagnostic,
            "permanent": mail.bounce.permanent,
            "original_envelope_id": mail.bounce.original_envelope_id,
            "kind": mail.bounce.kind,
            "complaint": mail.bounce.complaint,
            "detector": mail.bounce.detector,
            "original_mail_from": mail.bounce.original_mail_from,
        }
    return _clean(
        {
            "subject": mail.subject,
            "from_addr": mail.from_addr,
            "from_name": mail.from_name,
            "to_addrs": list(mail.to_addrs),
            "cc_addrs": list(mail.cc_addrs),
            "reply_to": list(mail.reply_to),
            "message_id": mail.message_id,
            "in_reply_to": mail.in_reply_to,
            "references": list(mail.references),
            "date": mail.date.isoformat() if mail.date else None,
            "body_text": mail.body_text,
            "reply_text": mail.reply_text,
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": a.size, "inline": a.inline}
                for a in mail.attachments
            ],
            "is_auto_reply": mail.is_auto_reply,
            "auto_reply_reason": mail.auto_reply_reason,
            "is_bounce": mail.is_bounce,
            "bounce": bounce,
            "ticket_ref": ticket_ref(mail.subject, desk_keys),
            "errors": list(mail.errors),
        }
    )


def _clean(value: Any) -> Any:
    """Lone surrogates (raw bytes the stdlib kept in a header it could not decode) become U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8") if not value.isascii() else value
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def parse_to_dict(
    raw: bytes, own_addresses: Iterable[str] = (), desk_keys: Iterable[str] = ("SUP",)
) -> dict[str, Any]:
    """Parse raw bytes and build the JSON object; never raises for any bytes."""
    return result_dict(parse_message(raw, own_addresses=own_addresses), desk_keys)


def _summary(data: dict[str, Any]) -> str:
    lines = [
        f"From:        {data['from_addr'] or '(none)'}",
        f"To:          {', '.join(data['to_addrs']) or '(none)'}",
        f"Subject:     {visible(data['subject'])}",
        f"Message-ID:  {data['message_id'] or '(none)'}",
        f"Ticket:      {data['ticket_ref'] or '(no tag of ours)'}",
    ]
    if data["is_bounce"]:
        b = data["bounce"]
        lines.append(
            f"Bounce:      {', '.join(b['failed_recipients'])} {b['status'] or ''} (original {b['original_message_id']})"
        )
    if data["is_auto_reply"]:
        lines.append(f"Automatic:   {data['auto_reply_reason']}")
    for att in data["attachments"]:
        lines.append(f"Attachment:  {att['filename']} ({att['content_type']}, {att['size']} bytes)")
    for err in data["errors"]:
        lines.append(f"Problem:     {err}")
    lines.append("Reply text:")
    lines.extend("  " + line for line in (data["reply_text"] or "(empty)").splitlines())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"mailgate parse: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EX_NOINPUT
    from mailgate.config import load_config

    # It only reads: no state directory, no secret key made where the admin runs it.
    cfg = load_config(getattr(args, "config", None), create_state=False)
    data = parse_to_dict(raw, cfg.own_addresses, [d.key for d in cfg.desks])
    text = json.dumps(data, ensure_ascii=False, indent=2) if args.json else _summary(data)
    # Bytes, not print(): the JSON is UTF-8 whatever the locale of the shell running us.
    sys.stdout.buffer.write(text.encode("utf-8") + b"\n")
    sys.stdout.flush()
    return EX_OK
