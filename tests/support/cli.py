"""The `mailgate` command, as an admin runs it (a child process) or in this process (faster)."""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys

PY = sys.executable


def mailgate(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in a child process (for stdin, as a pipe transport runs it)."""
    return subprocess.run(
        [PY, "-m", "mailgate", *args],
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (`mailgate.cli.main`): exit code and output, faster."""
    from mailgate.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    finally:
        root.handlers[:] = handlers  # main() pointed logging at the redirected stderr
        root.setLevel(level)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())
