"""`mailgate imap check [--account NAME]`: can we reach, log in to and read each IMAP account?

Prints, per account, the folder, its message and unseen counts, the server's capabilities (IDLE,
MOVE, UIDPLUS decide how the poller works), and where the poller stands in the database. Any
failure is one plain line naming the cause — bad password, unknown host, refused port, untrusted
certificate — and a non-zero exit (sysexits). It never changes the mailbox (STATUS, not SELECT).
"""

from __future__ import annotations

import argparse
import sys
from os import EX_CONFIG, EX_NOHOST, EX_NOPERM, EX_TEMPFAIL, EX_UNAVAILABLE

from mailgate.cli.common import config_of
from mailgate.config import Config

# sysexits.h codes for the failures an admin fixes in different places.
EXIT_FOR_KIND = {
    "host": EX_NOHOST,
    "refused": EX_UNAVAILABLE,
    "certificate": EX_UNAVAILABLE,
    "tls": EX_UNAVAILABLE,
    "folder": EX_UNAVAILABLE,
    "auth": EX_NOPERM,
    "token": EX_NOPERM,
    "timeout": EX_TEMPFAIL,
    "network": EX_TEMPFAIL,
}


def _check(args: argparse.Namespace) -> int:
    from mailgate.intake.imap import probe
    from mailgate.intake.imap_auth import ImapError

    config = config_of(args)
    accounts = [a for a in config.imap if args.account in (None, a.name)]
    if not accounts:
        if args.account and config.imap:
            names = ", ".join(a.name for a in config.imap)
            print(f"mailgate: no [[imap]] account {args.account} (accounts: {names})", file=sys.stderr)
        else:
            where = f"config {config.source}" if config.source else "the embedded default (no config file)"
            print(
                f"mailgate: no [[imap]] account in {where}: add an [[imap]] table to"
                " config.toml to poll a mailbox (docs/imap.md, config.example.toml)",
                file=sys.stderr,
            )
        return EX_CONFIG
    worst = 0
    for acct in accounts:
        head = f"{acct.name}: {acct.user} at {acct.host}:{acct.port} ({acct.security}, {acct.auth})"
        try:
            p = probe(acct, timeout=args.timeout)
        except ImapError as exc:
            print(f"{head}\n  FAILED ({exc.kind}): {exc}", file=sys.stderr)
            worst = worst or EXIT_FOR_KIND.get(exc.kind, EX_TEMPFAIL)
            continue
        print(head)
        print(f"  folder:       {p.folder}  ({p.messages} messages, {p.unseen} unseen)")
        print(f"  uidvalidity:  {p.uidvalidity}  uidnext: {p.uidnext}")
        print(f"  capabilities: {' '.join(p.capabilities)}")
        wait = "IDLE" if acct.idle and "IDLE" in p.capabilities else f"poll every {acct.poll_seconds:g}s"
        after = acct.after if acct.after != "move" else f"move to {acct.move_to}"
        if acct.after == "move":
            how = "MOVE" if "MOVE" in p.capabilities else "COPY + EXPUNGE"
            after += f" ({how}; folder {'exists' if p.move_to_exists else 'will be created'})"
        print(f"  waits by:     {wait};  after storing: {after};  first run: {acct.first_run}")
        print(f"  poller:       {_position(config, acct.name, acct.folder, p.uidvalidity)}")
    return worst


def _position(config: Config, account: str, folder: str, uidvalidity: int) -> str:
    from mailgate.cli.common import open_db
    from mailgate.store import imap_state

    with open_db(config, create=True) as db, db.session() as s:
        state = imap_state.get_state(s, account, folder)
        stuck = [f for f in imap_state.failures(s, account) if f.given_up and f.folder == folder]
    if state is None:
        return "not started yet (the first run selects what to take)"
    text = f"last UID {state.last_uid}"
    if state.uidvalidity != uidvalidity:
        text += f" under old UIDVALIDITY {state.uidvalidity}: will resynchronise"
    if stuck:
        text += f"; given up on UID(s) {', '.join(str(f.uid) for f in stuck)} (see the log)"
    return text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("imap", help="IMAP intake: check accounts")
    isub = p.add_subparsers(dest="imap_command", required=True)
    chk = isub.add_parser("check", help="connect, log in and show folder, counts and capabilities")
    chk.add_argument("--account", help="only this [[imap]] account (by name)")
    chk.add_argument("--timeout", type=float, default=15.0, help="seconds per network step")
    chk.set_defaults(func=_check)
