"""The `mailgate` command. Each group of subcommands lives in its own module here, with a
`register(subparsers)` function; this file only wires them together and maps errors to sysexits.

Only the CLI may end the process with an exit code (STYLE.md: no sys.exit elsewhere).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from os import EX_CONFIG, EX_NOINPUT
from typing import Any

from mailgate.config import ConfigError

# Each command and the module that registers it; the order is the order in `mailgate --help`.
# Only the named command's module is imported: an MTA piping each message to `mailgate ingest`
# pays for what ingest needs, not for every command (tests/test_ops_cli.py keeps this in step).
COMMANDS = {
    "run": "mailgate.cli.run",
    "db": "mailgate.cli.run",
    "ingest": "mailgate.cli.ingest",
    "tickets": "mailgate.cli.tickets",
    "report": "mailgate.cli.report",
    "inbox": "mailgate.cli.queues",
    "outbox": "mailgate.cli.queues",
    "attachments": "mailgate.cli.attachments",
    "parse": "mailgate.cli.parse",
    "rules": "mailgate.cli.rules",
    "imap": "mailgate.cli.imap",
    "init": "mailgate.cli.ops",
    "status": "mailgate.cli.ops",
    "config": "mailgate.cli.ops",
}
_GLOBAL_WITH_VALUE = ("--config", "-c", "--log-level")
# What a shell reports for a process its reader went away from (128 + SIGPIPE): `set -o pipefail`
# tells `mailgate tickets list | head` apart from a command that failed, as it does for `yes | head`.
EXIT_BROKEN_PIPE = 128 + 13
EXIT_INTERRUPTED = 128 + 2  # Ctrl-C (SIGINT), as a shell reports it


def _command_in(argv: list[str]) -> str | None:
    """The command named on the command line, past the global options before it."""
    args = iter(argv)
    for arg in args:
        if arg in _GLOBAL_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


class _CommandParser(argparse.ArgumentParser):
    """A command's parser (and its subcommands', which argparse makes of the same class): it also
    takes the global options after the command, as `./bin/run --config config.toml` passes them
    to `mailgate run`. Their defaults are suppressed, so one given before the command stands."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--config", "-c", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.add_argument("--log-level", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.add_argument(
            "--log-json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: with a known command, only that command's module is loaded."""
    parser = argparse.ArgumentParser(prog="mailgate", description="Inbound email-to-ticket gateway.")
    parser.add_argument(
        "--config",
        "-c",
        help="config.toml (default: $MAILGATE_CONFIG, else ./config.toml, else the embedded default)",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    sub.required = True
    command = _command_in(argv) if argv is not None else None
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from mailgate.logs import setup_logging

    setup_logging(args.log_level, json_lines=args.log_json)
    from mailgate.cli.common import NoDatabase

    try:
        return int(args.func(args) or 0)
    except NoDatabase as exc:  # a command that reads state, pointed where there is none
        print(f"mailgate: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except ConfigError as exc:
        from mailgate.checks import config_error_text

        print(f"mailgate: configuration error: {config_error_text(exc)}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        print(file=sys.stderr)  # past the ^C the terminal echoed; no traceback
        return EXIT_INTERRUPTED


def entry() -> None:
    """The `mailgate` command (and `python -m mailgate`): `main`, then the process ends.

    It ends quietly when its reader goes away (`mailgate tickets list | head`) and on Ctrl-C: no
    traceback, the exit codes a shell gives for SIGPIPE and SIGINT. On a broken pipe, standard
    output is pointed at /dev/null, so the flush at interpreter exit has nowhere to fail (the
    recipe of the Python docs, "Note on SIGPIPE"). Here, not in `main`, which tests call with
    their own standard output.

    It ends without the garbage collector's passes over the whole heap that interpreter shutdown
    makes: with the database layer and the pipeline loaded they are a noticeable part of an
    `ingest --mbox` (and a piped `ingest --direct` pays them per message).
    `gc.freeze()` only exempts the objects alive now from collection; atexit handlers still run
    and everything is still closed."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_BROKEN_PIPE
    except KeyboardInterrupt:  # before or after a command's own handling (imports, parsing)
        print(file=sys.stderr)
        code = EXIT_INTERRUPTED
    gc.freeze()
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
