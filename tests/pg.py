"""PostgreSQL for tests: a fresh, uniquely named database per test on the local server, dropped after.

The server is MAILGATE_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test, trust auth,
what `.ci/run` sets up). Each test gets `CREATE DATABASE mg_<random>` made over an autocommit
psycopg connection, so tests never see each other's rows and can run in any order. Without a
server a test skips on a developer's machine and FAILS under CI=true (`need()` in conftest).
This module must not touch any database other than the ones it creates.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningDaemon, need

from mailgate.store.db import Database

SERVER = os.environ.get("MAILGATE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SECRET = "test-secret"  # one secret for every process on one database: tokens must verify anywhere


def _server_error() -> str | None:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        return f"psycopg missing: {exc}"
    try:
        with psycopg.connect(SERVER, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure means "no server here"
        return f"PostgreSQL at {SERVER} not reachable: {exc}"
    return None


_available: str | None | bool = False  # False: not checked yet


def require_postgres() -> None:
    """Skip (locally) or fail (CI=true) when the server is not there. Checked once per session."""
    global _available
    if _available is False:
        _available = _server_error()
    need(_available is None, str(_available))


def _url_for(name: str) -> str:
    base, _, _ = SERVER.rpartition("/")
    return f"{base}/{name}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create `mg_<random>`, yield its URL, drop it (WITH (FORCE): a killed daemon's sessions go too)."""
    import psycopg

    require_postgres()
    name = f"mg_{secrets.token_hex(6)}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _url_for(name)
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn, suppress(Exception):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_on(backend: str, tmp_path: Path) -> Iterator[Database]:
    """A mailgate `Database` on "sqlite" (a file under `tmp_path`) or "postgres" (a fresh
    database on the server), disposed of after: for tests that run the same store code on both."""
    with ExitStack() as stack:
        url = (
            f"sqlite:///{tmp_path / 'state' / 'mailgate.db'}"
            if backend == "sqlite"
            else stack.enter_context(fresh_database())
        )
        database = Database(url)
        stack.callback(database.dispose)
        yield database


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The env that points a daemon at one backend: {} (SQLite under state/) or a fresh PostgreSQL."""
    if request.param == "sqlite":
        yield {}
        return
    with fresh_database() as url:
        yield {"MAILGATE_DATABASE_URL": url}


def config_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"MAILGATE_SECRET": SECRET, **(extra or {})}


class EnvDaemon(RunningDaemon):
    """`RunningDaemon` whose config is loaded with a given env (e.g. MAILGATE_DATABASE_URL).

    The database URL goes through the env, not config.toml: `write_config`'s `extra` lands at top
    level before `[[desks]]`, where a `[database]` table would swallow the keys after it."""

    def __init__(
        self, config_path: Path, env: dict[str, str] | None = None, *, worker: str = "thread"
    ) -> None:
        from mailgate.config import load_config
        from mailgate.daemon import Daemon

        self.config_path = config_path
        self.config = load_config(config_path, env=config_env(env))
        self.daemon = Daemon(self.config, worker=worker)
        self.daemon.start()


def count(db: Any, model: type, *where: Any) -> int:
    from sqlalchemy import func, select

    with db.session() as s:
        return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())
