"""The `mailgate` command. Each group of subcommands lives in its own module here, with a
`register(subparsers)` function; this file only wires them together and maps errors to sysexits.

Only the CLI may end the process with an exit code (STYLE.md: no sys.exit elsewhere).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mailgate.config import ConfigError

# Order is the order in `mailgate --help`. Add a module name to register its subcommands.
COMMAND_MODULES = [
    "mailgate.cli.run",
    "mailgate.cli.ingest",
    "mailgate.cli.tickets",
    "mailgate.cli.queues",
    "mailgate.cli.parse",
    "mailgate.cli.rules",
    "mailgate.cli.imap",
    "mailgate.cli.ops",
]

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description="Inbound email-to-ticket gateway.")
    parser.add_argument(
        "--config", "-c", help="config.toml (default: $MAILGATE_CONFIG, else the embedded default)"
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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


if __name__ == "__main__":
    raise SystemExit(main())
