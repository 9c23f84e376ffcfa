"""`mailgate run`: constructs every part once, starts them, and stops them in order.

Two halves. The intake — the SMTP/LMTP listener (aiosmtpd's own event loop), the accept writer
(group commit) and the IMAP pollers — answers senders and commits what they send. The worker —
the pipeline, the sender and the scheduler (APScheduler) — works off what the intake committed.

By default (`[pipeline] worker = "process"`) the worker runs in a child process of its own, as
Postfix's master keeps smtpd apart from cleanup and qmgr: the pipeline is CPU-bound Python, and
sharing one interpreter lock with the listener made every SMTP command wait for it (tens of ms
to the 250) and left the pipeline a fraction of one core. The two meet only in the database and
a wake-up pipe. The child dies with the parent (a SIGKILL of the daemon leaves no orphan), and
the parent starts a new child if the worker dies on its own. `worker = "thread"` keeps everything
in one process (the tests that look inside the running worker use it).

On SIGTERM or SIGINT: stop accepting (new SMTP sessions get 421), let the writer finish what it
holds, then let the worker finish its message and the sender its mail, then close the database.
"""

from __future__ import annotations

import contextlib
import faulthandler
import gc
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from mailgate.config import Config
from mailgate.intake.accept import Acceptor, GroupCommitter
from mailgate.proc import die_with_parent, return_large_blocks
from mailgate.store.db import Database

log = logging.getLogger(__name__)
SWITCH_INTERVAL = 0.0005  # seconds; see Worker.start and Daemon.start


class Worker:
    """The pipeline worker, the sender and the scheduler, over one database."""

    def __init__(self, config: Config, db: Database, *, transport: Any = None) -> None:
        from mailgate.outbox.sender import Sender
        from mailgate.pipeline.runner import Runner

        self.config = config
        self.runner = Runner(db, config)
        self.sender = Sender(db, config, transport)
        self.runner.after_commit.append(self.sender.wake.set)
        self.threads: list[threading.Thread] = []
        self.stops: list[Callable[[], None]] = []

    def start(self) -> None:
        # The pipeline thread is CPU-bound; whatever else runs in this interpreter (the listener
        # in thread mode, the sender) needs the GIL for moments. CPython's default 5 ms switch
        # interval makes each of those moments wait up to 5 ms; 0.5 ms keeps them short at a
        # small cost in pipeline throughput (bench/smtp_load.py).
        sys.setswitchinterval(SWITCH_INTERVAL)
        for target, name in ((self.runner.serve, "pipeline"), (self.sender.serve, "sender")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        # --- scheduler: SLA checks, reminders, auto-close, reviews, digests (mailgate/scheduler.py) ---
        from mailgate.scheduler import Scheduler

        scheduler = Scheduler(self.runner)
        if scheduler.settings.enabled:
            self.stops.append(scheduler.start().stop)  # waits for a running job's commit

    def stop(self) -> None:
        for fn in self.stops:
            fn()
        self.runner.stop()
        self.sender.stop()
        for t in self.threads:
            t.join(timeout=30)


class WakePipe:
    """The intake's "there is new mail" to the worker process: one byte down a pipe. Unlike a
    shared-memory event, nothing here can be left locked by a worker that was killed, and the
    intake never blocks: a full pipe already holds a wake-up. The worker sees end-of-file when
    the daemon is gone."""

    def __init__(self, context: Any) -> None:
        self.reader, self.writer = context.Pipe(duplex=False)
        os.set_blocking(self.writer.fileno(), False)

    def set(self) -> None:
        with contextlib.suppress(OSError):  # full: a wake-up is pending anyway
            os.write(self.writer.fileno(), b"w")


def _pump(reader: Any, wake: threading.Event, stop: threading.Event) -> None:
    """Worker side of the WakePipe: each read wakes the pipeline; end-of-file means the daemon
    died (its pipe closed with it), so the worker stops."""
    fd = reader.fileno()
    while not stop.is_set():
        try:
            data = os.read(fd, 4096)
        except InterruptedError:
            continue
        except OSError:
            data = b""
        if not data:
            log.error("the daemon is gone: worker stopping")
            stop.set()
            return
        wake.set()


def _worker_main(config: Config, log_settings: tuple[str, bool], reader: Any, parent: int) -> None:
    """The worker process: runs until SIGTERM (from the daemon's stop, or from systemd or a
    terminal's Ctrl-C, which reach the whole process group) or until the daemon is gone."""
    die_with_parent()
    if os.getppid() != parent:  # the daemon died before prctl took effect
        return
    return_large_blocks()  # messages up to max_message_size pass through here too
    from mailgate.logs import setup_logging

    setup_logging(log_settings[0], json_lines=log_settings[1])
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it hangs, if it ever does
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    db = Database(config.database_url)
    worker = Worker(config, db)
    threading.Thread(target=_pump, args=(reader, worker.runner.wake, stop), name="wake", daemon=True).start()
    worker.runner.wake.set()  # whatever the intake committed while no worker ran
    worker.start()
    gc.freeze()  # as `Daemon.run_forever` does after its start
    log.info("worker process %d started", os.getpid())
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.error("the daemon (pid %d) is gone: worker stopping", parent)
            break
    worker.stop()
    db.dispose()
    log.info("worker process %d stopped", os.getpid())


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        transport: Any = None,
        db: Database | None = None,
        worker: str | None = None,
    ) -> None:
        # --- web: the port is bound first, so `port = 0` gives the links in mail their URL ---
        self._web_sock: Any = None
        self.web: Any = None
        if config.web.enabled:
            from mailgate.web.server import bind

            config, self._web_sock = bind(config)
        self.config = config
        self.mode = worker or ("thread" if transport is not None else config.pipeline.worker)
        self.db = db or Database(config.database_url)
        self.worker: Worker | None = None
        self.runner: Any = None
        self.sender: Any = None
        self._process: Any = None
        self._watch: threading.Thread | None = None
        if self.mode == "thread":
            self.worker = Worker(config, self.db, transport=transport)
            self.runner, self.sender = self.worker.runner, self.worker.sender
            self.wake: Callable[[], None] = self.runner.wake.set
        else:
            self._mp = multiprocessing.get_context("spawn")
            self._pipe = WakePipe(self._mp)
            self.wake = self._pipe.set
        self.committer = GroupCommitter(Acceptor(self.db, config), on_commit=self.wake)
        self.controller: Any = None
        self.handler: Any = None
        self.stopped = threading.Event()
        self._stopping = threading.Event()
        self.extra_stops: list[Callable[[], None]] = []
        self.pollers: list[Any] = []  # the IMAP pollers (mailgate/intake/imap.ImapPoller)

    @property
    def smtp_port(self) -> int | None:
        return self.controller.port if self.controller is not None else None

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            # e.g. the SMTP port is taken, the web listener fails: stop what did start (the worker
            # process above all: multiprocessing would otherwise wait for it at exit, for ever).
            self.stop()
            raise

    def _start(self) -> None:
        # The listener's event loop shares the interpreter lock with the accept writer (and, in
        # thread mode, the pipeline): a short switch interval lets it answer without waiting.
        sys.setswitchinterval(SWITCH_INTERVAL)
        if self.worker is not None:
            self.worker.start()
        else:
            self._start_process()
            self._watch = threading.Thread(target=self._supervise, name="worker-watch", daemon=True)
            self._watch.start()
        if self.config.smtp.enabled:
            from mailgate.intake.smtp import start_listener

            self.controller, self.handler = start_listener(self.config, self.committer)
        # --- IMAP intake: one poller thread per [[imap]] account (mailgate/intake/imap.py) ---
        if self.config.imap:
            from mailgate.intake.imap import pollers_for

            acceptor = Acceptor(self.db, self.config)
            for poller in pollers_for(self.config, self.db, acceptor, wake=self.wake):
                self.pollers.append(poller)  # kept for alive(): a dead or stuck poller fails /healthz
                self.extra_stops.append(poller.start().stop)  # stopped before the db closes
        # --- heartbeat: what `mailgate status` reports of this daemon (mailgate/store/heartbeat.py) ---
        from mailgate.status import listeners
        from mailgate.store.heartbeat import Heartbeat

        self.extra_stops.append(Heartbeat(self.db, listeners(self.config, self.smtp_port)).start().stop)
        # --- web: request pages, one-click links, agent pages, /healthz, /metrics (mailgate/web) ---
        if self._web_sock is not None:
            from mailgate.web.app import WebApp
            from mailgate.web.server import WebServer

            web = WebServer(WebApp(self.config, self.db, self.alive).asgi(), self._web_sock)
            self.extra_stops.insert(0, web.stop)  # closes the socket even if it never starts
            self.web = web.start()

    def alive(self) -> list[str]:
        """What of the daemon is not running (for /healthz): empty when all is."""
        problems = []
        if self.config.smtp.enabled and (self.controller is None or not self.controller.loop.is_running()):
            problems.append("SMTP listener not running")
        if self.worker is not None:
            if not all(t.is_alive() for t in self.worker.threads):
                problems.append("worker thread stopped")
        elif self._process is None or not self._process.is_alive():
            problems.append("worker process not running")
        problems += [p for p in (poller.health().problem for poller in self.pollers) if p]
        if self._stopping.is_set():
            problems.append("stopping")
        return problems

    # -- the worker process -----------------------------------------------------------------------
    def _start_process(self) -> None:
        from mailgate.logs import current_settings

        self._process = self._mp.Process(
            target=_worker_main,
            args=(self.config, current_settings(), self._pipe.reader, os.getpid()),
            name="mailgate-worker",
            daemon=False,
        )
        self._process.start()
        self._started_at = time.monotonic()

    def _supervise(self) -> None:
        """Start a new worker when the one running dies on its own (a bug, the OOM killer): mail
        the intake keeps accepting must not wait for an operator. At most one restart every few
        seconds, so a worker that dies at start does not spin."""
        delay = 1.0
        while not self._stopping.is_set():
            proc = self._process
            proc.join(timeout=1.0)
            if proc.is_alive():
                continue
            if self._stopping.wait(0.5):  # SIGTERM to the process group reached the worker first
                return
            if time.monotonic() - self._started_at > 60:
                delay = 1.0
            log.error(
                "worker process %s exited with code %s: starting a new one in %.0fs",
                proc.pid,
                proc.exitcode,
                delay,
            )
            if self._stopping.wait(delay):
                return
            self._start_process()
            delay = min(delay * 2, 30.0)

    def _stop_process(self) -> None:
        proc = self._process
        if proc is None:
            return
        if self._watch is not None:
            self._watch.join()  # one waiter only: two threads reaping one child race in waitpid
        proc = self._process  # the watch may have started a new one
        proc.terminate()  # SIGTERM: the worker finishes its message and its mail, then exits
        proc.join(timeout=60)
        if proc.is_alive():
            log.error("worker process %s did not stop in 60s: its threads, then SIGKILL", proc.pid)
            with contextlib.suppress(OSError):
                os.kill(proc.pid, signal.SIGUSR1)  # faulthandler in the worker prints every stack
            time.sleep(1)
            proc.kill()
            proc.join(timeout=10)

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self._stopping.set()
        log.info("stopping: no new mail accepted, finishing what is in hand")
        if self.handler is not None:
            self.handler.accepting = False
        if self.controller is not None:
            self.controller.stop()
        for fn in self.extra_stops:
            fn()
        self.committer.close()
        if self.worker is not None:
            self.worker.stop()
        else:
            self._stop_process()
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
        # Here, not in `start`, which tests call in their own process: the whole process's malloc.
        return_large_blocks()
        self.start()  # stops what did start if it fails
        # What is loaded by now lives as long as the daemon: a full collection need not walk it
        # again (a pass over the database layer is long, and may fall in the middle of an SMTP
        # reply). Here, not in `start`, which tests call in their own process.
        gc.freeze()
        done.wait()
        self.stop()
