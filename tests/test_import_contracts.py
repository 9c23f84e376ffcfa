"""Imports point one way: the import-linter contracts in pyproject.toml hold (STYLE.md habit 10).

`lint-imports` runs as the installed console script on the real package; a control copies the
package, adds the import this contract exists to keep out (mail reading the domain, the cycle
there once was) and checks that the same command then fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_import_contracts_hold() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_import_against_the_layers_breaks_the_contract(tmp_path: Path) -> None:
    copy = tmp_path / "mailgate"
    shutil.copytree(REPO / "mailgate", copy, ignore=shutil.ignore_patterns("__pycache__"))
    decode = copy / "mail" / "decode.py"
    decode.write_text(decode.read_text() + "\nfrom mailgate.domain import threading  # noqa\n")
    done = lint_imports(tmp_path, pythonpath=tmp_path)
    assert done.returncode != 0, done.stdout
    assert "mailgate.mail.decode -> mailgate.domain.threading" in done.stdout
