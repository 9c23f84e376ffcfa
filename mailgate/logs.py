"""Logging set-up: plain text by default, one JSON object per line with --log-json.

Secrets never reach a log line: config objects hide passwords in their repr, and nothing here
prints settings.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            data.update(extra)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """Writes to `sys.stderr` as it is when a record is written, not as it was at set-up.

    A command run in-process with standard error redirected (tests, `contextlib.redirect_stderr`)
    would otherwise leave the root logger on that stream; once it is closed, a record from a
    thread still running (APScheduler's, at the end of a test run) prints "--- Logging error ---
    I/O operation on closed file" instead of itself. The stdlib's own last-resort handler does
    the same."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """Set by StreamHandler's constructor and `setStream`: the stream is always stderr's."""


def setup_logging(level: str = "INFO", *, json_lines: bool = False) -> None:
    handler = StderrHandler()
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's chatty per-session log
    # Alembic announces its plugins and migrations at INFO on every start: in a pipe transport
    # that text would land in the MTA's delivery status. `mailgate db upgrade` prints its own line.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    # APScheduler logs two INFO lines per run of every job ("Running job …", "… executed
    # successfully"): several a minute in the daemon's log, saying nothing. Its warnings (a
    # missed run) and errors stay; the scheduler logs what its jobs did (mailgate/scheduler.py).
    logging.getLogger("apscheduler").setLevel(max(root.level, logging.WARNING))


def current_settings() -> tuple[str, bool]:
    """The level and format in force, for a child process to log the same way."""
    root = logging.getLogger()
    json_lines = any(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    return logging.getLevelName(root.level), json_lines
