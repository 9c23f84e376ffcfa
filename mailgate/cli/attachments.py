"""`mailgate attachments sweep`: remove attachment files no stored message names, once they are
older than a grace period (store/sweep.py; the daemon's scheduler runs the same sweep daily).

Attachments are written before the transaction that records their message, so mail that ends
up held, bounced or rolled back, and a crash, leave files behind. Only the files are touched:
a file some message names is kept however old it is.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from mailgate.cli.common import config_of, open_db


def _sweep(args: argparse.Namespace) -> int:
    from mailgate.config import MAX_ATTACHMENT_GRACE_HOURS
    from mailgate.store.blobs import BlobStore
    from mailgate.store.sweep import sweep_attachments

    config = config_of(args)
    hours = args.older_than if args.older_than is not None else config.scheduler.attachment_grace_hours
    if not 1 <= hours <= MAX_ATTACHMENT_GRACE_HOURS:  # nan fails both; argparse takes inf and nan
        print(
            f"mailgate attachments sweep: --older-than {hours:g}: at least 1 hour (a younger file may"
            f" belong to a message being processed now), at most {MAX_ATTACHMENT_GRACE_HOURS}",
            file=sys.stderr,
        )
        return 64
    grace = timedelta(hours=hours)
    root = config.state_dir / "attachments"
    with open_db(config) as db:
        swept = sweep_attachments(db, BlobStore(root), grace=grace, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {swept.removed} file(s), {swept.removed_bytes} bytes, older than {hours:g} h that no"
        f" message names; kept {swept.kept} older file(s) messages name ({root})"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attachments", help="attachment files: sweep the ones no message names")
    asub = p.add_subparsers(dest="attachments_command", required=True)
    sw = asub.add_parser("sweep", help="remove attachment files no message names, older than a grace period")
    sw.add_argument(
        "--older-than",
        type=float,
        metavar="HOURS",
        help="only files older than this (default: [scheduler] attachment_grace_hours, 24; at least 1)",
    )
    sw.add_argument("--dry-run", action="store_true", help="count what would go, remove nothing")
    sw.set_defaults(func=_sweep)
