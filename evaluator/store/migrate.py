"""Bring a store's schema to this pricer's, on every start (Alembic; SQLite and PostgreSQL alike).

The migrations live in `migrations/versions/`; the first one also brings a store made before
migrations existed to the baseline. Processes starting together on one database migrate one
at a time (a PostgreSQL advisory lock, a file lock beside a SQLite file); a store already at
the head is only read.
"""

from __future__ import annotations

import contextlib
import functools

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from filelock import FileLock
from sqlalchemy import Engine, text

MIGRATIONS = "pricer.evaluator.store:migrations"
ADVISORY_LOCK = 0x70726963  # "pric": the key of the lock migrating processes take on PostgreSQL


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


@functools.cache
def head() -> str:
    """The revision this pricer's schema is at."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def revision(engine: Engine) -> str | None:
    """The revision a database is at (None: no migration has run on it)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Upgrade the database to `head()`; a no-op (one read) when it is there already."""
    if revision(engine) == head():
        return
    with one_at_a_time(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
        config = _config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def one_at_a_time(engine: Engine) -> contextlib.AbstractContextManager:
    """Held while one process changes a SQLite file's schema or journal mode (PostgreSQL: an advisory lock instead)."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
        return FileLock(f"{database}.migrating")
    return contextlib.nullcontext()
