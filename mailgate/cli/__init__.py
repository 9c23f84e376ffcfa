"""The `mailgate` command. Each group of subcommands lives in its own module here, with a
`register(subparsers)` function; this file only wires them together and maps errors to sysexits.

Only the CLI may end the process with an exit code (STYLE.md: no sys.exit elsewhere).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from os import EX_CONFIG

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
    "parse": "mailgate.cli.parse",
    "rules": "mailgate.cli.rules",
    "imap": "mailgate.cli.imap",
    "init": "mailgate.cli.ops",
    "status": "mailgate.cli.ops",
    "config": "mailgate.cli.ops",
}
_GLOBAL_WITH_VALUE = ("--config", "-c", "--log-level")


def _command_in(argv: list[str]) -> str | None:
    """The command named on the command line, past the global options before it."""
    args = iter(argv)
    for arg in args:
        if arg in _GLOBAL_WITH_VALUE:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: with a known command, only that command's module is loaded."""
    parser = argparse.ArgumentParser(prog="mailgate", description="Inbound email-to-ticket gateway.")
    parser.add_argument(
        "--config", "-c", help="config.toml (default: $MAILGATE_CONFIG, else the embedded default)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"mailgate: configuration error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    """The `mailgate` command (and `python -m mailgate`): `main`, then the process ends.

    It ends without the garbage collector's passes over the whole heap that interpreter shutdown
    makes: with the database layer and the pipeline loaded they are a visible part of an
    `ingest --mbox` (and a piped `ingest --direct` pays them per message; bench/README.md).
    `gc.freeze()` only exempts the objects alive now from collection; atexit handlers still run
    and everything is still closed. Not in `main`, which tests call in-process."""
    code = main()
    gc.freeze()
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
