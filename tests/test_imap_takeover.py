"""Several processes on one PostgreSQL: each IMAP mailbox is polled by exactly one of them
(a session advisory lock), and another takes over within seconds when that one dies."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, make_mail, wait_until, write_config
from dovecot import Dovecot
from pg import fresh_database
from support.imap import ENV, append, count, imap_table, poller

from mailgate.config import load_config
from mailgate.store.db import Database
from mailgate.store.models import InboxItem

CHILD = """
import sys, time
from mailgate.config import load_config
from mailgate.intake.accept import Acceptor
from mailgate.intake.imap import ImapPoller
from mailgate.store.db import Database
config = load_config(sys.argv[1])
db = Database(config.database_url)
p = ImapPoller(config.imap[0], db, Acceptor(db, config), desk_address="support@localhost")
p.start()
while not p.lock.held:
    time.sleep(0.05)
print("holding", flush=True)
time.sleep(600)
"""


def test_one_poller_per_mailbox_and_takeover_when_it_dies(
    tmp_path: Path,
    dovecot: Dovecot,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mailgate.intake.imap")
    with fresh_database() as url:
        path = write_config(tmp_path / "desk", extra=imap_table(dovecot))
        env = {**os.environ, **ENV, "MAILGATE_DATABASE_URL": url, "PYTHONPATH": str(REPO)}
        holder = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        standby = None
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
            config = load_config(path, env={**ENV, "MAILGATE_DATABASE_URL": url})
            db = Database(config.database_url)
            standby = poller(config, db).start()
            append(dovecot, make_mail("while A polls", message_id="<a1@acme.com>"))
            wait_until(lambda: count(db, InboxItem) == 1, what="the holder to store the first mail")
            # The second process tried the lock, found it held and stands by: one poller per mailbox.
            wait_until(lambda: "standing by" in caplog.text, what="the standby to find the lock held")
            assert not standby.lock.held

            holder.send_signal(signal.SIGKILL)
            holder.wait(10)
            died = time.monotonic()
            append(dovecot, make_mail("after A died", message_id="<a2@acme.com>"))
            wait_until(lambda: count(db, InboxItem) == 2, timeout=20, what="the standby to take over")
            took = time.monotonic() - died
            assert standby.lock.held
            assert took < 10, f"takeover took {took:.1f}s"
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(10)
            if holder.stdout is not None:
                holder.stdout.close()
            if standby is not None:
                standby.stop()
                standby.db.dispose()
