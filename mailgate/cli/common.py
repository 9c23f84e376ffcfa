"""What every subcommand needs: the loaded config and an open database."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mailgate.config import Config, load_config

if TYPE_CHECKING:  # the import costs half a second; `mailgate ingest` may hand over without it
    from mailgate.store.db import Database


def config_of(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def open_db(config: Config) -> Database:
    from mailgate.store.db import Database

    return Database(config.database_url)
