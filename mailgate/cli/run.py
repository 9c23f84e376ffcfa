"""`mailgate run`: the daemon, and `mailgate db upgrade`."""

from __future__ import annotations

import argparse
import sys
from os import EX_DATAERR, EX_OSERR

from mailgate.cli.common import config_of


def _run(args: argparse.Namespace) -> int:
    from mailgate.daemon import Daemon
    from mailgate.domain.rulesfile import RulesInvalid
    from mailgate.ruleset import load

    config = config_of(args)
    try:  # here, before any listener or worker process starts: one clear refusal, file and line
        load(config.rules_dir, config.templates_dir, config.desks)
    except RulesInvalid as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print("mailgate: the rules do not load, so the daemon does not start", file=sys.stderr)
        return EX_DATAERR
    if args.port is not None:
        from dataclasses import replace

        config = replace(config, smtp=replace(config.smtp, port=args.port))
    try:
        Daemon(config).run_forever()
    except OSError as exc:  # e.g. the SMTP port is taken, or the state directory not writable
        print(f"mailgate: cannot run: {exc}", file=sys.stderr)
        return EX_OSERR
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    from mailgate.cli.progress import progress
    from mailgate.store.db import Database
    from mailgate.store.migrate import current_revision, head_revision, pending_revisions

    config = config_of(args)
    db = Database(config.database_url, upgrade=False)
    try:
        before = current_revision(db.engine)
        steps = pending_revisions(db.engine)
        with progress(args, total=len(steps) or None, desc="db upgrade", unit="migration") as bar:

            def step(revision: str) -> None:
                bar.set_description_str(f"db upgrade: {revision}")
                bar.update(1)

            db.upgrade(on_step=step)
    finally:
        db.dispose()
    print(f"database at revision {head_revision()} (was {before or 'empty'})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the daemon: intakes, pipeline worker, sender, scheduler")
    p.add_argument("--port", type=int, help="SMTP port (overrides config)")
    p.set_defaults(func=_run)
    db = sub.add_parser("db", help="database maintenance")
    dbsub = db.add_subparsers(dest="db_command", required=True)
    up = dbsub.add_parser("upgrade", help="apply schema migrations (Alembic) up to the latest")
    up.set_defaults(func=_upgrade)
