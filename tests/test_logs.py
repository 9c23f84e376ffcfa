"""Logging after a command ran in this process: records go to standard error as it is when they
are written. A command run with standard error redirected (a test's capture, contextlib) used to
leave the root handler on that stream; once it was closed, every later record — APScheduler's
'Job "timers" executed successfully' from a daemon's scheduler thread at the end of a test run —
printed "--- Logging error --- ValueError: I/O operation on closed file" instead."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import pytest

from mailgate.cli import main


def test_a_record_after_the_commands_stderr_closed_goes_to_the_stderr_of_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        redirected = io.StringIO()
        with contextlib.redirect_stderr(redirected):
            main(["config", "check"])  # sets logging up, as every command does
        redirected.close()  # as pytest closes a test's capture
        logging.getLogger("mailgate.scheduler").warning("job %s failed, will retry", "timers")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "Logging error" not in err and "closed file" not in err, err
    assert "job timers failed, will retry" in err, err
