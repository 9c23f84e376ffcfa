"""`mailgate run`: constructs every part once, starts them, and stops them in order.

Threads: the SMTP/LMTP listener (aiosmtpd's own event loop), the accept writer (group commit),
the pipeline worker, the sender, and the scheduler (APScheduler) for periodic jobs. On SIGTERM or
SIGINT: stop accepting (new SMTP sessions get 421), let the writer finish what it holds, let the
worker finish its batch and the sender its message, then close the database.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from mailgate.config import Config
from mailgate.intake.accept import Acceptor, GroupCommitter
from mailgate.outbox.sender import Sender
from mailgate.outbox.transports import Transport, make_transport
from mailgate.pipeline.runner import Runner
from mailgate.store.db import Database

log = logging.getLogger(__name__)


class Daemon:
    def __init__(
        self, config: Config, *, transport: Transport | None = None, db: Database | None = None
    ) -> None:
        self.config = config
        self.db = db or Database(config.database_url)
        pipeline = config.raw.get("pipeline", {})
        self.runner = Runner(self.db, config, parse_processes=int(pipeline.get("parse_processes", 1)))
        self.sender = Sender(self.db, config, transport or make_transport(config.relay))
        self.runner.after_commit.append(self.sender.wake.set)
        self.committer = GroupCommitter(Acceptor(self.db, config), on_commit=self.runner.wake.set)
        self.controller: Any = None
        self.handler: Any = None
        self.threads: list[threading.Thread] = []
        self.stopped = threading.Event()
        self.extra_stops: list[Callable[[], None]] = []

    @property
    def smtp_port(self) -> int | None:
        return self.controller.port if self.controller is not None else None

    def start(self) -> None:
        self._thread(self.runner.serve, "pipeline")
        self._thread(self.sender.serve, "sender")
        if self.config.smtp.enabled:
            from mailgate.intake.smtp import start_listener

            self.controller, self.handler = start_listener(self.config, self.committer)
        # --- IMAP intake: one poller thread per [[imap]] account (mailgate/intake/imap.py) ---
        if self.config.imap:
            from mailgate.intake.imap import pollers_for

            acceptor = Acceptor(self.db, self.config)
            for poller in pollers_for(self.config, self.db, acceptor, wake=self.runner.wake.set):
                self.extra_stops.append(poller.start().stop)  # stopped before the db closes
        # --- scheduler: SLA checks, reminders, auto-close, reviews, digests (mailgate/scheduler.py) ---
        from mailgate.scheduler import Scheduler

        scheduler = Scheduler(self.runner)
        if scheduler.settings.enabled:
            self.extra_stops.append(scheduler.start().stop)  # waits for a running job's commit

    def _thread(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        log.info("stopping: no new mail accepted, finishing what is in hand")
        if self.handler is not None:
            self.handler.accepting = False
        if self.controller is not None:
            self.controller.stop()
        for fn in self.extra_stops:
            fn()
        self.committer.close()
        self.runner.stop()
        self.sender.stop()
        for t in self.threads:
            t.join(timeout=30)
        self.runner.close()
        self.db.dispose()
        self.stopped.set()
        log.info("stopped")

    def run_forever(self) -> None:
        done = threading.Event()

        def _signal(signum: int, _frame: object) -> None:
            log.info("received %s", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        self.start()
        done.wait()
        self.stop()
