"""The type checker passes: mypy with the configuration in pyproject.toml (strict on the pure
core, mailgate/domain and mailgate/mail; the default checks elsewhere). A type error fails the
tests like any other defect, so annotations stay true as the code changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_type_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
