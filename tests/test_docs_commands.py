"""Drift between the docs and the tests: every `mailgate` command that README.md or docs/*.md
show exists (its `--help` works) and is run somewhere in the tests as the installed console
script in a new process (tests that use support/console.py or support/cli.py's `mailgate`, or
the MAILGATE path), as a user runs it. A command added to the docs without such a test, or
renamed in the code but not in the docs, fails here with its name and the files that show it."""

from __future__ import annotations

import contextlib
import io
import re
from collections import defaultdict

import pytest
from conftest import REPO

from mailgate.cli import COMMANDS, main

# Commands whose second word is a subcommand (`tickets show`), as opposed to an argument.
GROUPS = ("tickets", "inbox", "outbox", "rules", "imap", "db", "config", "attachments")
# `mailgate` and its global options, then the command and maybe its subcommand.
SHOWN = re.compile(r"\bmailgate((?:\s+--?[\w-]+(?:[ =](?!-)[^\s`|]+)?)*)\s+([a-z]+)(?:\s+([a-z]+))?")
# A test file that runs the console script in a child process.
CONSOLE = re.compile(
    r"support\.console|from support\.cli import[^\n]*\bmailgate\b|\bMAILGATE\b|with_name\(\"mailgate\"\)"
)


def shown_in_docs() -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for m in SHOWN.finditer(path.read_text()):
            command, sub = m.group(2), m.group(3)
            if command not in COMMANDS:
                continue  # prose: "mailgate sends", "mailgate itself"
            found[f"{command} {sub}" if command in GROUPS and sub else command].add(path.name)
    return found


def run_as_console_script() -> str:
    """The text of every test module that runs the console script."""
    texts = (p.read_text() for p in sorted((REPO / "tests").glob("test_*.py")))
    return "\n".join(t for t in texts if CONSOLE.search(t))


DOCS = shown_in_docs()


def test_the_docs_show_the_commands_the_readme_table_lists() -> None:
    """The extraction finds what it must (else the checks below would pass on nothing)."""
    assert {"run", "ingest", "tickets show", "report", "status", "rules test"} <= set(DOCS), sorted(DOCS)


@pytest.mark.parametrize("command", sorted(DOCS))
def test_every_command_the_docs_show_exists_and_is_run_as_the_console_script(command: str) -> None:
    where = ", ".join(sorted(DOCS[command]))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as done:
        main([*command.split(), "--help"])
    assert done.value.code == 0, f"`mailgate {command}` (shown in {where}) is no command: {err.getvalue()}"
    words = command.split()
    literal = r",\s*".join(f'"{w}"' for w in words)
    assert re.search(literal, run_as_console_script()), (
        f"`mailgate {command}` is shown in {where} but no test runs it as the console script"
        " (tests/support/console.py: mailgate(cwd, ...))"
    )
