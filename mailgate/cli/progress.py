"""Progress bars for the long commands (`ingest --mbox/--maildir`, `db upgrade`, `report`): a bar with
rate and ETA on a terminal (tqdm), nothing at all in a pipe, under cron or under `--log-json`,
where a bar's carriage returns would only garble what a program reads.

The bar goes to standard error, like the logs; while it runs, log lines are written above it
(tqdm's logging redirect) instead of through it. tqdm is imported only when a bar is shown.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol


class Bar(Protocol):
    """What the commands use of a bar: tqdm's own names."""

    def update(self, n: float = 1) -> Any: ...
    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None: ...
    def close(self) -> None: ...


class _Quiet:
    """The bar in a pipe: counts nothing, prints nothing."""

    def update(self, n: float = 1) -> None:
        return None

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        return None

    def close(self) -> None:
        return None


def wanted(args: argparse.Namespace) -> bool:
    """A bar only for a person watching: standard error is a terminal and logs are not JSON."""
    return sys.stderr.isatty() and not getattr(args, "log_json", False) and not getattr(args, "quiet", False)


@contextmanager
def progress(
    args: argparse.Namespace,
    *,
    total: float | None,
    desc: str,
    unit: str = "it",
    unit_scale: bool = False,
) -> Iterator[Bar]:
    """A bar for `total` units of work (None: unknown, then it counts with a rate), or a quiet
    stand-in when nobody watches."""
    if not wanted(args):
        yield _Quiet()
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    # The terminal's size as shutil reads it ($COLUMNS/$LINES, then the terminal, then 80x24): a
    # terminal that reports no size (a bare pty) would give tqdm no room to draw in.
    size = shutil.get_terminal_size()
    with (
        logging_redirect_tqdm(),
        tqdm(
            total=total,
            desc=desc,
            unit=unit,
            unit_scale=unit_scale,
            file=sys.stderr,
            ncols=size.columns,
            nrows=size.lines,
        ) as bar,
    ):
        yield bar
