"""The HTTP listener of `mailgate run`: uvicorn's Server on a thread of its own, with its own event
loop, beside the SMTP listener's. Pages do their database work in a thread pool, so neither the
SMTP loop nor the accept writer ever waits for a page; they share the interpreter and the
Database (and so the SQLite write gate), nothing else.

The socket is bound before the worker starts, so `port = 0` (any free port) gives a base URL the
mail links can use. Must not: start before `bind`, or outlive `stop`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from mailgate.config import Config

log = logging.getLogger(__name__)


def bind(config: Config) -> tuple[Config, socket.socket | None]:
    """Bind the web port now; the config with the port actually bound (for `port = 0`)."""
    web = config.web
    if not web.enabled:
        return config, None
    family = socket.AF_INET6 if ":" in web.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if web.port:
        # A restart may bind its own port again at once, with the last run's connections still
        # in TIME_WAIT. Not for port 0: with SO_REUSEADDR Linux may hand out a port that an
        # outgoing connection holds, and then listen() fails with "Address already in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((web.host, web.port))
        sock.listen(128)  # a port that cannot be listened on fails here, with its address
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"web listener: cannot bind {web.host}:{web.port}: {exc.strerror}") from exc
    port = sock.getsockname()[1]
    return replace(config, web=replace(web, port=port)), sock


class WebServer:
    def __init__(self, app: Any, sock: socket.socket) -> None:
        import uvicorn

        self.sock = sock
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,  # mailgate's logging setup stays in force
                access_log=False,
                proxy_headers=False,
                server_header=False,
                lifespan="off",
                timeout_graceful_shutdown=5,
            )
        )
        self.thread = threading.Thread(target=self._run, name="web", daemon=True)
        self.error: BaseException | None = None  # what stopped the thread, for `start` to say

    def _run(self) -> None:
        # Not the main thread: uvicorn installs no signal handlers here; the daemon stops it.
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:
            self.error = exc
            raise

    def start(self, wait: float = 10.0) -> WebServer:
        self.thread.start()
        ready = threading.Event()

        def started() -> bool:
            return bool(self.server.started) or not self.thread.is_alive()

        _wait(started, ready, wait)
        if not self.server.started:
            why = f"{type(self.error).__name__}: {self.error}" if self.error else f"not up after {wait:.0f} s"
            raise RuntimeError(f"web listener did not start ({why})")
        log.info("web listener on %s:%d", *self.sock.getsockname()[:2])
        return self

    def alive(self) -> bool:
        return self.thread.is_alive() and bool(self.server.started)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def _wait(cond: Callable[[], bool], event: threading.Event, timeout: float) -> None:
    """Poll `cond` until true or `timeout` seconds have passed: uvicorn offers no start callback."""
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        event.wait(0.01)
